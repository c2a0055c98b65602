"""The depthwise conv's tap sum for one output pixel, 16 channels a vector, as vector IR.

A depthwise ternary conv (MobileNet's 3x3 per-channel filters) has no reduction over input
channels: per output pixel and channel it sums ntaps products u8 x trit. In Numba the
products of int8 by uint8 are typed int64 (its integer promotion), so the loop ran in
4-lane int64 vectors. Here the sum is kept in i16 lanes (|sum| <= ntaps * 255 < 2**15 for
ntaps <= MAX_TAPS) with `vpmullw`, then widened once to the int32 accumulators the epilogue
reads: 16 channels take one load of each tap's row, one multiply and one add, and each tap's
weights are loaded once for PIXELS pixels.
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
V16I8 = ir.VectorType(isa.I8, 16)
V16I32 = ir.VectorType(isa.I32, 16)


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
        sums = [cgutils.alloca_once(builder, isa.V16I16) for _ in range(PIXELS)]
        with cgutils.for_range(builder, nv) as chunk:
            c0 = builder.mul(chunk.index, ir.Constant(ity, LANES))
            for m in range(PIXELS):
                builder.store(ir.Constant(isa.V16I16, None), sums[m])
            with cgutils.for_range(builder, ntv) as tap:
                wp = builder.bitcast(builder.gep(wbase, [builder.add(builder.mul(tap.index, cv), c0)]),
                                     V16I8.as_pointer())
                ws = builder.sext(builder.load(wp, align=1), isa.V16I16)
                for m in range(PIXELS):
                    row = builder.load(builder.gep(pix[m], [tap.index]))
                    xp = builder.bitcast(builder.gep(xbase, [builder.add(row, c0)]), V16I8.as_pointer())
                    xs = builder.zext(builder.load(xp, align=1), isa.V16I16)
                    builder.store(builder.add(builder.load(sums[m]), builder.mul(xs, ws)), sums[m])
            for m in range(PIXELS):
                dst = builder.gep(abase, [builder.add(builder.mul(cv, ir.Constant(ity, m)), c0)])
                builder.store(builder.sext(builder.load(sums[m]), V16I32), builder.bitcast(dst, V16I32.as_pointer()),
                              align=4)
        return context.get_dummy_value()

    return sig, codegen
