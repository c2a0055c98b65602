"""The static u8 epilogue of one output pixel's channels, 8 at a time, written as vector IR.

`nhwc_int8._epilogue` computes, per output channel o of a pixel,

    v = float32((float32(acc[o]) - corr[o]) * se[o]) + bias[o]
    v += (float32(res[o]) - rzp) * rs                  (a residual block's second conv)
    v = min(max(v, amin), amax)                        (none / relu / relu6 as a clamp)
    dst[o] = u8(clamp(rint(v * inv) + zf, 0, 255))

As a Numba loop this ran at ~6 cycles an output on Zen 3 (the compiler's vector loop is
guarded by alias checks across six arrays and a remainder loop a block of 32 rarely leaves):
for a 1x1 conv of 16 input channels that is 4x the micro-kernel's own time. `requant_block`
is the same arithmetic on <8 x float> vectors (no fused multiply-add: the products round as
the scalar code's do, so the bytes are the same), 8 channels a vector; the caller does the
last `no % 8` channels with the scalar code.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from tdsl.runtime import isa

F32 = ir.FloatType()
V8F32 = ir.VectorType(F32, 8)
V8I8 = ir.VectorType(isa.I8, 8)
LANES = 8
"""Channels a vector holds."""


def _splat(builder, value):  # noqa: ANN001, ANN202 - llvmlite codegen
    undef = ir.Constant(V8F32, ir.Undefined)
    vec = builder.insert_element(undef, value, ir.Constant(isa.I32, 0))
    return builder.shuffle_vector(vec, undef, ir.Constant(ir.VectorType(isa.I32, 8), [0] * 8))


def _clamp(builder, v, lo, hi):  # noqa: ANN001, ANN202
    """min(max(v, lo), hi) as the scalar builtins compute it for ordered values."""
    v = builder.select(builder.fcmp_ordered(">", v, lo), v, lo)
    return builder.select(builder.fcmp_ordered("<", v, hi), v, hi)


@intrinsic
def requant_block(typingctx, acc, a0, corr, se, bias, o0, res, rbase, has_res, rs, rzf, amin, amax, inv, zf,
                  dst, dbase, n8):  # noqa: ANN001, ANN201
    """dst[dbase + i] for i < 8 * n8 from acc[a0 + i] (int32) and channels o0 + i of corr,
    se, bias (float32); with has_res != 0 the u8 residual res[rbase + i] (scale rs, zero
    point rzf) is added. Scalars rs, rzf, amin, amax, inv, zf are float32."""
    f32 = types.float32
    if not (acc.dtype == types.int32 and dst.dtype == types.uint8 and res.dtype == types.uint8
            and all(a.dtype == f32 for a in (corr, se, bias))
            and all(s == f32 for s in (rs, rzf, amin, amax, inv, zf))):
        return None
    sig = types.none(acc, a0, corr, se, bias, o0, res, rbase, has_res, rs, rzf, amin, amax, inv, zf, dst, dbase, n8)

    def codegen(context, builder, signature, args):
        (accv, a0v, corrv, sev, biasv, o0v, resv, rbasev, hasv, rsv, rzfv, aminv, amaxv, invv, zfv, dstv,
         dbasev, n8v) = args
        at = signature.args

        def vec(i, ary, off, elem, vty, h):
            base = builder.gep(isa.data_ptr(context, builder, at[i], ary, elem), [off])
            return builder.gep(builder.bitcast(base, vty.as_pointer()), [h])

        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8F32, [V8F32]), "llvm.rint.v8f32")
        lo, hi, inv, zf = (_splat(builder, s) for s in (aminv, amaxv, invv, zfv))
        rs, rzf = _splat(builder, rsv), _splat(builder, rzfv)
        zero, top = ir.Constant(V8F32, 0.0), ir.Constant(V8F32, 255.0)
        with_res = builder.icmp_signed("!=", hasv, ir.Constant(hasv.type, 0))
        slot = cgutils.alloca_once(builder, V8F32)
        with cgutils.for_range(builder, n8v) as loop:
            h = loop.index
            a = builder.sitofp(builder.load(vec(0, accv, a0v, isa.I32, isa.V8I32, h), align=4), V8F32)
            c = builder.load(vec(2, corrv, o0v, F32, V8F32, h), align=4)
            s = builder.load(vec(3, sev, o0v, F32, V8F32, h), align=4)
            b = builder.load(vec(4, biasv, o0v, F32, V8F32, h), align=4)
            v = builder.fadd(builder.fmul(builder.fsub(a, c), s), b)
            builder.store(v, slot)
            with builder.if_then(with_res):
                r = builder.uitofp(builder.load(vec(6, resv, rbasev, isa.I8, V8I8, h), align=1), V8F32)
                builder.store(builder.fadd(builder.load(slot), builder.fmul(builder.fsub(r, rzf), rs)), slot)
            v = _clamp(builder, builder.load(slot), lo, hi)
            q = _clamp(builder, builder.fadd(builder.call(rint, [builder.fmul(v, inv)]), zf), zero, top)
            out = builder.trunc(builder.fptosi(q, isa.V8I32), V8I8)
            builder.store(out, vec(15, dstv, dbasev, isa.I8, V8I8, h), align=1)
        return context.get_dummy_value()

    return sig, codegen
