"""The depthwise conv's tap sum for one output pixel, 16 channels a vector, as vector IR.

A depthwise ternary conv (MobileNet's 3x3 per-channel filters) has no reduction over input
channels: per output pixel and channel it sums ntaps products u8 x trit. In Numba the
products of int8 by uint8 are typed int64 (its integer promotion), so the loop ran in
4-lane int64 vectors. Here the sum is kept in i16 lanes (|sum| <= ntaps * 255 < 2**15 for
ntaps <= MAX_TAPS) with `vpmullw`, then widened once to the int32 accumulators the epilogue
reads: 16 channels (32 with AVX-512BW) take one load of each tap's row, one multiply and one
add, and each tap's weights are loaded once for PIXELS pixels.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from tdsl.runtime import isa

LANES = 16
"""Channels a vector holds."""
PIXELS = 4
"""Output pixels `tap_sums` takes a call: each tap's weights are loaded once for all of them."""
MAX_TAPS = 128
"""Taps whose u8 x trit sum fits i16: 128 * 255 = 32640."""
WIDE_LANES = isa.has("avx512bw")
"""Whether 32 channels go a step (one zmm of i16 lanes): with AVX-512BW the same IR on 32 lanes
is half the instructions; without it LLVM would split it into the 16-lane step anyway."""


@intrinsic
def tap_sums(typingctx, x, offs, obase, ntaps, w, C, acc, n16, npix):  # noqa: ANN001, ANN201
    """acc[m * C + c] = sum_t x[offs[obase + m * ntaps + t] + c] * w[t * C + c] (u8 x s8 -> int32)
    for pixels m < PIXELS and channels c < 16 * n16. Pixels from npix on (1 <= npix <= PIXELS)
    repeat pixel npix - 1: the caller reads only the first npix rows of acc."""
    if not (x.dtype == types.uint8 and w.dtype == types.int8 and acc.dtype == types.int32
            and offs.dtype == types.int64):
        return None
    sig = types.none(x, offs, obase, ntaps, w, C, acc, n16, npix)

    def codegen(context, builder, signature, args):
        xv, offsv, obasev, ntv, wv, cv, accv, nv, npv = args
        at = signature.args
        ity = obasev.type
        xbase = isa.data_ptr(context, builder, at[0], xv)
        obase = builder.gep(isa.data_ptr(context, builder, at[1], offsv, isa.I64), [obasev])
        wbase = isa.data_ptr(context, builder, at[4], wv)
        abase = isa.data_ptr(context, builder, at[6], accv, isa.I32)
        last = builder.sub(npv, ir.Constant(ity, 1))
        pix = [builder.gep(obase, [builder.mul(builder.select(builder.icmp_signed("<", ir.Constant(ity, m), npv),
                                                              ir.Constant(ity, m), last), ntv)])
               for m in range(PIXELS)]

        def chunk(c0, lanes):
            """The sums of channels c0 .. c0 + lanes."""
            vi8, vi16, vi32 = (ir.VectorType(t, lanes) for t in (isa.I8, isa.I16, isa.I32))
            sums = [cgutils.alloca_once_value(builder, ir.Constant(vi16, None)) for _ in range(PIXELS)]
            with cgutils.for_range(builder, ntv) as tap:
                wp = builder.bitcast(builder.gep(wbase, [builder.add(builder.mul(tap.index, cv), c0)]),
                                     vi8.as_pointer())
                ws = builder.sext(builder.load(wp, align=1), vi16)
                for m in range(PIXELS):
                    row = builder.load(builder.gep(pix[m], [tap.index]))
                    xp = builder.bitcast(builder.gep(xbase, [builder.add(row, c0)]), vi8.as_pointer())
                    xs = builder.zext(builder.load(xp, align=1), vi16)
                    builder.store(builder.add(builder.load(sums[m]), builder.mul(xs, ws)), sums[m])
            for m in range(PIXELS):
                dst = builder.gep(abase, [builder.add(builder.mul(cv, ir.Constant(ity, m)), c0)])
                builder.store(builder.sext(builder.load(sums[m]), vi32), builder.bitcast(dst, vi32.as_pointer()),
                              align=4)

        wide = builder.udiv(nv, ir.Constant(ity, 2)) if WIDE_LANES else ir.Constant(ity, 0)
        with cgutils.for_range(builder, wide) as pair:  # 32 channels a zmm where AVX-512BW has them
            chunk(builder.mul(pair.index, ir.Constant(ity, 2 * LANES)), 2 * LANES)
        with cgutils.for_range(builder, builder.sub(nv, builder.mul(wide, ir.Constant(ity, 2)))) as rest:
            chunk(builder.mul(builder.add(builder.mul(wide, ir.Constant(ity, 2)), rest.index), ir.Constant(ity, LANES)),
                  LANES)
        return context.get_dummy_value()

    return sig, codegen
