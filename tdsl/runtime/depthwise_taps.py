"""The depthwise conv's tap sum for one output pixel, 16 channels a vector, as vector IR.

A depthwise ternary conv (MobileNet's 3x3 per-channel filters) has no reduction over input
channels: per output pixel and channel it sums ntaps products u8 x trit. In Numba the
products of int8 by uint8 are typed int64 (its integer promotion), so the loop ran in
4-lane int64 vectors. Here the sum is kept in i16 lanes (|sum| <= ntaps * 255 < 2**15 for
ntaps <= MAX_TAPS) with `vpmullw`, then widened once to the int32 accumulators the epilogue
reads: 16 channels take one load of each tap's row and weights, one multiply and one add.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from tdsl.runtime import isa

LANES = 16
"""Channels a vector holds."""
MAX_TAPS = 128
"""Taps whose u8 x trit sum fits i16: 128 * 255 = 32640."""
V16I8 = ir.VectorType(isa.I8, 16)
V16I32 = ir.VectorType(isa.I32, 16)


@intrinsic
def tap_sums(typingctx, x, offs, obase, ntaps, w, C, acc, n16):  # noqa: ANN001, ANN201
    """acc[c] = sum_t x[offs[obase + t] + c] * w[t * C + c] (u8 x s8 -> int32) for c < 16 * n16."""
    if not (x.dtype == types.uint8 and w.dtype == types.int8 and acc.dtype == types.int32
            and offs.dtype == types.int64):
        return None
    sig = types.none(x, offs, obase, ntaps, w, C, acc, n16)

    def codegen(context, builder, signature, args):
        xv, offsv, obasev, ntv, wv, cv, accv, nv = args
        at = signature.args
        xbase = isa.data_ptr(context, builder, at[0], xv)
        obase = builder.gep(isa.data_ptr(context, builder, at[1], offsv, isa.I64), [obasev])
        wbase = isa.data_ptr(context, builder, at[4], wv)
        abase = builder.bitcast(isa.data_ptr(context, builder, at[6], accv, isa.I32), V16I32.as_pointer())
        sums = cgutils.alloca_once(builder, isa.V16I16)
        with cgutils.for_range(builder, nv) as chunk:
            c0 = builder.mul(chunk.index, ir.Constant(chunk.index.type, LANES))
            builder.store(ir.Constant(isa.V16I16, None), sums)
            with cgutils.for_range(builder, ntv) as tap:
                row = builder.load(builder.gep(obase, [tap.index]))
                xp = builder.bitcast(builder.gep(xbase, [builder.add(row, c0)]), V16I8.as_pointer())
                wp = builder.bitcast(builder.gep(wbase, [builder.add(builder.mul(tap.index, cv), c0)]),
                                     V16I8.as_pointer())
                xs = builder.zext(builder.load(xp, align=1), isa.V16I16)
                ws = builder.sext(builder.load(wp, align=1), isa.V16I16)
                builder.store(builder.add(builder.load(sums), builder.mul(xs, ws)), sums)
            builder.store(builder.sext(builder.load(sums), V16I32), builder.gep(abase, [chunk.index]), align=4)
        return context.get_dummy_value()

    return sig, codegen
