"""Kept-precision (fp16/fp32 weight) convolutions on the CPU: im2col + an AVX-512 FMA
micro-kernel, all on Numba's threads.

Why not numpy's BLAS: the deployment runs BLAS single-threaded (Numba's OpenMP workers own
the cores, `backends/numba/executor`), and a BLAS call on other threads right after a Numba
kernel waits for those workers to stop spinning. The ResNet-18 stem (64 x 147 x 12544) took
5-7 ms inside a deployment that way against 2.5 ms in isolation. Here the im2col and the GEMM
are Numba `prange` loops, so they run on the same workers as every other kernel.

Layout: cols [K, Pp] (the im2col of one image, Pp = positions rounded up to 64, zero padded),
weights [Op, K] float32 (Op = channels rounded up to 4, zero rows). The micro-kernel keeps a
4-channel x 64-position block in 16 zmm accumulators: per k, 4 loads of cols, 4 broadcasts
of w, 16 `llvm.fma.v16f32`. Each task (one 64-position tile) runs every channel block over
its tile while the tile stays in cache, then applies bias, residual and activation. The sum
over k runs in order k = 0, 1, ... with one fused multiply-add per term (BLAS rounds
differently; both are within float32 rounding of the float64 reference).

Only built where the CPU has AVX-512F (`available()`); elsewhere the executor keeps BLAS.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from tdsl.runtime import activations
from tdsl.runtime.cpu_features import _usable
from tdsl.runtime.conv_int8 import tap_range

activation = njit(inline="always", cache=True)(activations.apply)
TILE = 64  # positions per micro-kernel call (4 zmm of float32)
MO = 4  # output channels per micro-kernel call
_V16F = ir.VectorType(ir.FloatType(), 16)
_HAS_AVX512F = _usable(("avx512f",))
"""Read once at import: the kernels below exist only where it is true (see module docstring)."""


def available() -> bool:
    """True where this module's kernels can be compiled and run (AVX-512F)."""
    return _HAS_AVX512F


@intrinsic
def _fma_block(typingctx, w, woff, wstride, c, coff, cstride, nk, out, ooff, ostride):
    """out[ooff + o*ostride + p] = sum_k w[woff + o*wstride + k] * c[coff + k*cstride + p]
    for o < 4, p < 64 (float32 element offsets)."""
    sig = types.none(w, woff, wstride, c, coff, cstride, nk, out, ooff, ostride)

    def codegen(context, builder, signature, args):
        wv, woffv, wsv, cv, coffv, csv, nkv, outv, ooffv, osv = args
        ity = woffv.type
        wdata = context.make_array(signature.args[0])(context, builder, wv).data
        cdata = context.make_array(signature.args[3])(context, builder, cv).data
        odata = context.make_array(signature.args[7])(context, builder, outv).data
        wrows = [builder.gep(wdata, [builder.add(woffv, builder.mul(wsv, ir.Constant(ity, o)))]) for o in range(MO)]
        zero = ir.Constant(_V16F, None)
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(4)] for _ in range(MO)]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16F, [_V16F] * 3), "llvm.fma.v16f32")
        undef = ir.Constant(_V16F, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
        with cgutils.for_range(builder, nkv) as loop:
            row = builder.gep(cdata, [builder.add(coffv, builder.mul(csv, loop.index))])
            cs = [builder.load(builder.bitcast(builder.gep(row, [ir.Constant(ity, 16 * j)]), _V16F.as_pointer()),
                               align=4) for j in range(4)]
            for o in range(MO):
                wk = builder.load(builder.gep(wrows[o], [loop.index]))
                wb = builder.shuffle_vector(builder.insert_element(undef, wk, ir.Constant(ir.IntType(32), 0)),
                                            undef, splat)
                for j in range(4):
                    builder.store(builder.call(fma, [wb, cs[j], builder.load(accs[o][j])]), accs[o][j])
        for o in range(MO):
            orow = builder.gep(odata, [builder.add(ooffv, builder.mul(osv, ir.Constant(ity, o)))])
            for j in range(4):
                ptr = builder.bitcast(builder.gep(orow, [ir.Constant(ity, 16 * j)]), _V16F.as_pointer())
                builder.store(builder.load(accs[o][j]), ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def im2col_band(x, n, c0, Cg, kh, kw, sh, sw, ph, pw, dh, dw, oy0, oy1, Wo, cols):
    """cols[(c*kh + i)*kw + j, (oy - oy0)*Wo + ox] = x[n, c0+c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
    (0 outside) for output rows oy0 .. oy1: serial and without the GIL, one band per thread of
    `backends.numba.executor._conv_bands`, one row per task of `_im2col_padded`. Per (tap,
    row) the valid ox are one range (`tap_range`): a
    branch-free copy, not a bounds test per element."""
    H, W = x.shape[2], x.shape[3]
    zero = cols.dtype.type(0)
    for k in range(Cg * kh * kw):
        c = k // (kh * kw)
        i = (k // kw) % kh
        j = k % kw
        base = j * dw - pw
        o0, o1 = tap_range(base, sw, Wo, W)
        for oy in range(oy0, oy1):
            row = cols[k, (oy - oy0) * Wo:(oy - oy0 + 1) * Wo]
            iy = oy * sh - ph + i * dh
            if iy < 0 or iy >= H or o1 <= o0:
                row[:] = zero
                continue
            src = x[n, c0 + c, iy]
            for ox in range(o0):
                row[ox] = zero
            for ox in range(o0, o1):
                row[ox] = src[ox * sw + base]
            for ox in range(o1, Wo):
                row[ox] = zero


@njit(cache=True, parallel=True)
def _im2col_padded(x, n, c0, Cg, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, cols):
    """`im2col_band` of all Ho output rows, one row per task, and zeros in the padding
    columns past Ho*Wo."""
    P = Ho * Wo
    cols[:, P:] = 0.0
    for oy in prange(Ho):
        im2col_band(x, n, c0, Cg, kh, kw, sh, sw, ph, pw, dh, dw, oy, oy + 1, Wo, cols[:, oy * Wo:(oy + 1) * Wo])


@njit(cache=True, parallel=True)
def _gemm_tiles(wp, cols, o0, Og, bias, res, act, y, n):
    """y[n, o0 + o, p] = act(sum_k wp[o, k] cols[k, p] + bias[o0 + o] + res[n, o0 + o, p])
    for o < Og, p < P (y viewed [N, O, P]); wp [Op, K] zero padded."""
    Op, K = wp.shape
    Pp = cols.shape[1]
    P = y.shape[2]
    for t in prange(Pp // TILE):
        acc = np.empty((Op, TILE), np.float32)
        for ob in range(0, Op, MO):
            if _HAS_AVX512F:  # a constant: the intrinsic is only compiled where it can run
                _fma_block(wp, ob * K, K, cols, t * TILE, Pp, K, acc, ob * TILE, TILE)
        p0 = t * TILE
        np_ = min(TILE, P - p0)
        for o in range(Og):
            b = bias[o0 + o]
            dst = y[n, o0 + o, p0:p0 + np_]
            for m in range(np_):
                v = np.float32(acc[o, m] + b)
                if res.shape[0] != 0:
                    v = np.float32(v + res[n, o0 + o, p0 + m])
                dst[m] = activation(v, act)


def padded_weights(weight: np.ndarray, groups: int) -> list[np.ndarray]:
    """Per group, the float32 [Op, K] matrix `_gemm_tiles` reads (rows padded to 4)."""
    O = weight.shape[0]
    Og = O // groups
    w2 = np.asarray(weight, np.float32).reshape(O, -1)
    out = []
    for g in range(groups):
        wp = np.zeros((-(-Og // MO) * MO, w2.shape[1]), np.float32)
        wp[:Og] = w2[g * Og:(g + 1) * Og]
        out.append(wp)
    return out


def conv2d_float_into(y: np.ndarray, x: np.ndarray, wps: list[np.ndarray], geometry: tuple,
                      bias: np.ndarray, res: np.ndarray, act: int) -> None:
    """y [N, O, Ho, Wo] = act(conv(x, w) + bias + res) for float32 x, weights from `padded_weights`.

    geometry = (kh, kw, sh, sw, ph, pw, dh, dw); res [N, O, Ho, Wo] or empty."""
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    N, C = x.shape[:2]
    O, Ho, Wo = y.shape[1:]
    g = len(wps)
    Cg, Og = C // g, O // g
    P = Ho * Wo
    cols = np.empty((Cg * kh * kw, -(-P // TILE) * TILE), np.float32)
    y3 = y.reshape(N, O, P)
    res3 = res.reshape(N, O, P) if res.size else np.zeros((0, 0, 0), np.float32)
    for n in range(N):
        for gi in range(g):
            _im2col_padded(x, n, gi * Cg, Cg, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, cols)
            _gemm_tiles(wps[gi], cols, gi * Og, Og, bias, res3, act, y3, n)


def kernels() -> list:
    """The Numba dispatchers of this module (for cache statistics)."""
    return [_im2col_padded, _gemm_tiles]
