"""The static u8 epilogue of a tile of output pixels, 32 or 8 channels a step, as vector IR.

With static scales (a calibrated deployment) and a clamp activation (none, relu, relu6),
`nhwc_int8` writes each output byte as

    t = float32(acc) * m[o] + c[o]      (+ float32(res) * rsi  in a residual block)
    q = clamp(rint(t), qlo, qhi)        (qlo, qhi: the clamp's bounds in u8, inside [0, 255])

with, per layer, m = s_x * s[o] / s_y, c = (bias - z_x * sum(T[o]) * s_x * s[o]) / s_y + z_y
(- z_r * s_r / s_y with a residual), rsi = s_r / s_y (`static_terms`). That is the float
epilogue `v = (acc - corr) * se + bias (+ (res - z_r) * s_r)`, clamped by the activation and
requantised as `rint(v / s_y) + z_y`, with the constants folded once per layer: the clamp
moves to the u8 side because rint(x / s + z) is monotone, so clamping before or after it gives
the same byte.

Why vectors of IR: as a Numba loop the first form ran at ~6 cycles an output on Zen 3 (alias
checks across six arrays, a remainder loop); then as <8 x float> with both clamps in float, at
~0.9 cycles an output, 40 % of a 1x1 conv of 16 input channels. Here, with AVX2, 32 channels
take 4 x (load, convert, multiply, add, convert with rounding) and one pack to bytes
(`vpackssdw`, `vpackuswb`: their saturation is the clamp to [0, 255]), one u8 max and min for
the activation, one store; m and c stay in registers across the tile's pixels. Without AVX2
the same arithmetic is written in generic IR (`rint`, float clamps, truncation): the two give
the same bytes (a test forces both). With AVX-512 the 32 channels are two zmm: 2 x (load,
convert, multiply, add, `vcvtps2dq`), the clamp to [qlo, qhi] in i32 and `vpmovdb` (about 18
instructions a step where AVX2 takes 30).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from tdsl.runtime import isa

F32 = ir.FloatType()
V8F32 = ir.VectorType(F32, 8)
V8I8 = ir.VectorType(isa.I8, 8)
V16F32 = ir.VectorType(F32, 16)
V16I32 = ir.VectorType(isa.I32, 16)
LANES = 8
"""Channels of the narrow step (the wide step takes 4 x LANES)."""
WIDE = 4 * LANES
TOP = 65535.0
"""t is clamped to at most this before the AVX2 conversion (whose out-of-range answer is
INT_MIN, which would saturate to 0): anything above 255 still packs to 255."""


@njit(cache=True)
def static_terms(wsum, zpx, se, bias, inv, zpy, amin, amax, rs, rzp):
    """(m, c, rsi, qlo, qhi) of the module docstring, from the float epilogue's terms:
    se[o] = s_x * s[o], wsum[o] = sum(T[o]), inv = 1 / s_y, rs / rzp: the residual's scale and
    zero point (rs = 0: none). Folded in float64, stored as float32."""
    n = se.size
    m = np.empty(n, np.float32)
    c = np.empty(n, np.float32)
    for o in range(n):
        s = np.float64(se[o])
        m[o] = np.float32(s * inv)
        c[o] = np.float32((np.float64(bias[o]) - np.float64(wsum[o]) * zpx * s - rzp * np.float64(rs)) * inv + zpy)
    return m, c, np.float32(np.float64(rs) * inv), _u8_bound(amin, inv, zpy), _u8_bound(amax, inv, zpy)


@njit(inline="always", cache=True)
def _u8_bound(a, inv, zpy):
    """An activation bound a (float, may be infinite) as a u8 bound: clamp(rint(a / s_y) + z_y)."""
    v = np.rint(np.float64(a) * inv) + zpy
    return np.float32(min(max(v, 0.0), 255.0))


@njit(inline="always", cache=True)
def requant_scalar(acc, m, c, r, rsi, qlo, qhi):
    """One output byte by the module docstring's formula (r: the residual byte as float32, or
    0 with rsi = 0): the tails the vector steps leave, and the tests' reference."""
    t = np.float32(np.float32(acc) * m) + c
    t = t + np.float32(r * rsi)
    q = np.rint(min(t, np.float32(TOP)))
    return np.uint8(min(max(q, qlo), qhi))


def _splat(builder, value, vty=V8F32):  # noqa: ANN001, ANN202 - llvmlite codegen
    undef = ir.Constant(vty, ir.Undefined)
    vec = builder.insert_element(undef, value, ir.Constant(isa.I32, 0))
    return builder.shuffle_vector(vec, undef, ir.Constant(ir.VectorType(isa.I32, vty.count), [0] * vty.count))


def _fn(builder, name, ret, args):  # noqa: ANN001, ANN202
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _make(x86: bool, avx512: bool = False):  # noqa: ANN202
    """requant_tile with AVX2 packs (x86) or in generic IR; avx512: the 32-channel step in two
    zmm (16 lanes each), the 8-channel tail as AVX2's."""

    @intrinsic
    def requant_tile(typingctx, acc, a0, astride, rows, n32, n8, m, c, o0, res, rbase, has_res, rsi, qlo, qhi,
                     dst, dbase, dstride):  # noqa: ANN001, ANN201
        """For r < rows and channel i < 32 * n32 + 8 * n8: dst[dbase + r * dstride + i] from
        acc[a0 + r * astride + i] (int32), m[o0 + i], c[o0 + i] (float32) and, with has_res != 0,
        the u8 residual res[rbase + r * dstride + i] times rsi. Scalars rsi, qlo, qhi: float32."""
        f32 = types.float32
        if not (acc.dtype == types.int32 and dst.dtype == types.uint8 and res.dtype == types.uint8
                and m.dtype == f32 and c.dtype == f32 and all(s == f32 for s in (rsi, qlo, qhi))):
            return None
        sig = types.none(acc, a0, astride, rows, n32, n8, m, c, o0, res, rbase, has_res, rsi, qlo, qhi, dst, dbase,
                         dstride)

        def codegen(context, builder, signature, args):
            (accv, a0v, asv, rowsv, n32v, n8v, mv, cv, o0v, resv, rbasev, hasv, rsiv, qlov, qhiv, dstv, dbasev,
             dsv) = args
            at = signature.args
            ity = a0v.type
            accp = builder.gep(isa.data_ptr(context, builder, at[0], accv, isa.I32), [a0v])
            mp = builder.gep(isa.data_ptr(context, builder, at[6], mv, F32), [o0v])
            cp = builder.gep(isa.data_ptr(context, builder, at[7], cv, F32), [o0v])
            resp = builder.gep(isa.data_ptr(context, builder, at[9], resv), [rbasev])
            dstp = builder.gep(isa.data_ptr(context, builder, at[15], dstv), [dbasev])
            rsi = _splat(builder, rsiv)
            rsi16 = _splat(builder, rsiv, V16F32)
            top = ir.Constant(V8F32, TOP)
            top16 = ir.Constant(V16F32, TOP)
            lo32 = _splat(builder, builder.fptosi(qlov, isa.I32), V16I32)
            hi32 = _splat(builder, builder.fptosi(qhiv, isa.I32), V16I32)
            lo_f, hi_f = _splat(builder, qlov), _splat(builder, qhiv)
            lo8 = builder.fptoui(qlov, isa.I8)
            hi8 = builder.fptoui(qhiv, isa.I8)
            with_res = builder.icmp_signed("!=", hasv, ir.Constant(hasv.type, 0))

            def ptr(base, off, vty):
                return builder.bitcast(builder.gep(base, [off]), vty.as_pointer())

            def t_of(ch, r, mvec, cvec, residual):
                """<n x float> t of channels ch.. of row r (n: the width of mvec)."""
                n = mvec.type.count
                vf, vi = ir.VectorType(F32, n), ir.VectorType(isa.I32, n)
                a = builder.load(ptr(accp, builder.add(builder.mul(r, asv), ch), vi), align=4)
                t = builder.fadd(builder.fmul(builder.sitofp(a, vf), mvec), cvec)
                if residual:
                    rb = builder.load(ptr(resp, builder.add(builder.mul(r, dsv), ch), ir.VectorType(isa.I8, n)), align=1)
                    t = builder.fadd(t, builder.fmul(builder.uitofp(rb, vf), rsi if n == LANES else rsi16))
                return t

            def bytes512(ts):
                """u8 <32 x i8> of two <16 x float> t: `vcvtps2dq` (half to even), the clamp to
                [qlo, qhi] in i32 (its bounds lie in [0, 255]), then `vpmovdb` truncation."""
                cvt = _fn(builder, "llvm.x86.avx512.mask.cvtps2dq.512", V16I32, [V16F32, V16I32, isa.I16, isa.I32])
                smax = _fn(builder, "llvm.smax.v16i32", V16I32, [V16I32, V16I32])
                smin = _fn(builder, "llvm.smin.v16i32", V16I32, [V16I32, V16I32])
                parts = []
                for t in ts:
                    t = builder.select(builder.fcmp_ordered(">", t, top16), top16, t)
                    q = builder.call(cvt, [t, ir.Constant(V16I32, None), ir.Constant(isa.I16, -1),
                                           ir.Constant(isa.I32, 4)])  # 4: the current rounding (MXCSR)
                    q = builder.call(smin, [builder.call(smax, [q, lo32]), hi32])
                    parts.append(builder.trunc(q, ir.VectorType(isa.I8, 16)))
                return builder.shuffle_vector(parts[0], parts[1], ir.Constant(ir.VectorType(isa.I32, 32), list(range(32))))

            def to_i32(t):
                if x86:  # vcvtps2dq rounds half to even (MXCSR's default, which Numba keeps)
                    t = builder.select(builder.fcmp_ordered(">", t, top), top, t)
                    return builder.call(_fn(builder, "llvm.x86.avx.cvt.ps2dq.256", isa.V8I32, [V8F32]), [t])
                rint = _fn(builder, "llvm.rint.v8f32", V8F32, [V8F32])
                q = builder.call(rint, [builder.select(builder.fcmp_ordered(">", t, top), top, t)])
                q = builder.select(builder.fcmp_ordered(">", q, lo_f), q, lo_f)
                q = builder.select(builder.fcmp_ordered("<", q, hi_f), q, hi_f)
                return builder.fptosi(q, isa.V8I32)

            def bytes_of(ivs):
                """u8 vector of the int32 vectors ivs (1 or 4), clamped to [qlo, qhi]."""
                n = 8 * len(ivs)
                vty = ir.VectorType(isa.I8, n)
                if not x86:
                    parts = [builder.trunc(v, V8I8) for v in ivs]
                    if len(parts) == 1:
                        return parts[0]
                    ab = builder.shuffle_vector(parts[0], parts[1], ir.Constant(ir.VectorType(isa.I32, 16), list(range(16))))
                    cd = builder.shuffle_vector(parts[2], parts[3], ir.Constant(ir.VectorType(isa.I32, 16), list(range(16))))
                    return builder.shuffle_vector(ab, cd, ir.Constant(ir.VectorType(isa.I32, 32), list(range(32))))
                packd = _fn(builder, "llvm.x86.avx2.packssdw", isa.V16I16, [isa.V8I32, isa.V8I32])
                packw = _fn(builder, "llvm.x86.avx2.packuswb", isa.V32I8, [isa.V16I16, isa.V16I16])
                if len(ivs) == 1:
                    w = builder.call(packd, [ivs[0], ivs[0]])
                    b = builder.call(packw, [w, w])  # lane 0: q0-3 x4, lane 1: q4-7 x4
                    out = builder.shuffle_vector(b, b, ir.Constant(ir.VectorType(isa.I32, 8), [0, 1, 2, 3, 16, 17, 18, 19]))
                else:
                    ab = builder.call(packd, [ivs[0], ivs[1]])
                    cd = builder.call(packd, [ivs[2], ivs[3]])
                    b = builder.call(packw, [ab, cd])  # dwords: a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
                    permd = _fn(builder, "llvm.x86.avx2.permd", isa.V8I32, [isa.V8I32, isa.V8I32])
                    idx = ir.Constant(isa.V8I32, [0, 4, 1, 5, 2, 6, 3, 7])
                    out = builder.bitcast(builder.call(permd, [builder.bitcast(b, isa.V8I32), idx]), isa.V32I8)
                umax = _fn(builder, f"llvm.umax.v{n}i8", vty, [vty, vty])
                umin = _fn(builder, f"llvm.umin.v{n}i8", vty, [vty, vty])
                out = builder.call(umax, [out, _splat(builder, lo8, vty)])
                return builder.call(umin, [out, _splat(builder, hi8, vty)])

            def steps(residual):
                def step(ch, width):
                    lanes = 2 * LANES if avx512 and width == WIDE else LANES
                    nv, vf = width // lanes, ir.VectorType(F32, lanes)
                    mvecs = [builder.load(ptr(mp, builder.add(ch, ir.Constant(ity, lanes * v)), vf), align=4)
                             for v in range(nv)]
                    cvecs = [builder.load(ptr(cp, builder.add(ch, ir.Constant(ity, lanes * v)), vf), align=4)
                             for v in range(nv)]
                    with cgutils.for_range(builder, rowsv) as row:
                        r = row.index
                        ts = [t_of(builder.add(ch, ir.Constant(ity, lanes * v)), r, mvecs[v], cvecs[v], residual)
                              for v in range(nv)]
                        out = bytes512(ts) if lanes > LANES else bytes_of([to_i32(t) for t in ts])
                        dst = ptr(dstp, builder.add(builder.mul(r, dsv), ch), out.type)
                        builder.store(out, dst, align=1)

                with cgutils.for_range(builder, n32v) as g:
                    step(builder.mul(g.index, ir.Constant(ity, WIDE)), WIDE)
                base = builder.mul(n32v, ir.Constant(ity, WIDE))
                with cgutils.for_range(builder, n8v) as g:
                    step(builder.add(base, builder.mul(g.index, ir.Constant(ity, LANES))), LANES)

            with builder.if_else(with_res) as (then, otherwise):
                with then:
                    steps(True)
                with otherwise:
                    steps(False)
            return context.get_dummy_value()

        return sig, codegen

    return requant_tile


requant_tile_generic = _make(False)
requant_tile_avx2 = _make(True)
requant_tile_avx512 = _make(True, avx512=True)
requant_tile = (requant_tile_avx512 if isa.has("avx512bw") else
                requant_tile_avx2 if isa.has("avx2") else requant_tile_generic)
"""The epilogue `nhwc_int8` calls: the widest form this process can run."""
