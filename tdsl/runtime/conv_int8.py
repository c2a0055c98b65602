"""Ternary conv2d with int8 activations for the CPU: im2col fused with the per-token
quantisation, and a GEMM micro-kernel made for conv shapes (many output positions, small
K and N), NCHW float32 in and out.

Semantics: exactly `tdsl.runtime.reference.ternary_conv2d` with act_quant="int8" (a token
is one output position of one group: its absmax int8 scale is taken over its receptive
field). Every integer accumulator equals the reference's; the float epilogue rounds like
`tdsl.runtime.gemm` (`float32(acc) * (xs * s)`, `+ bias`, `+ residual`, activation), so
the result is bitwise that of im2col + `gemm.ternary_linear`.

Why not im2col + the LLM GEMM of `tdsl.runtime.gemm`: that kernel is built for K = 4096
and a handful of batch rows. A conv layer is a GEMM with B = Nimg*Ho*Wo positions in the
thousands and K = C*kh*kw, N = O in the tens to hundreds: the de-interleaved activation
planes pad K to 4 x 64 bytes (16x waste at K = 16), the 4x4 register block re-reads every
weight row B/4 times, and the float im2col + per-row quantise + [P, N] result + scatter
cost as much memory traffic as the products themselves. Here:

* Reduction order. The sum over k is an exact integer sum, so the k order is free: the
  weights are re-laid out (`conv_panels`) in (i, j, c) order (kernel row, kernel column,
  channel) instead of the packed (c, i, j). An im2col row is then kh*kw contiguous runs
  of C channels of the NHWC input, which quantise as vector loops.
* Quantisation. `_nhwc_absmax` transposes the input to NHWC once and takes the per-pixel
  channel absmax; a token's absmax is the max of that map over its window (padding is 0,
  which never exceeds an absmax), so no window is scanned twice. `_im2col_quant` writes
  xq [P, Kp] int8 rows (Kp = K rounded up to 16, zero padded), xs [P] and sum(xq) [P].
* Weights: "conv panels", 2 bits per trit as in the packed format. Output channels in
  groups of 16 (zero-trit padded), K in chunks of 16: one 64-byte chunk holds, for 16
  channels x 16 k, byte 4*lane + kk with bits 2j..2j+1 = code of channel lane at
  k = 16*chunk + 4j + kk. Plane j = (chunk >> 2j) & 3 is then exactly the u8 operand of
  `vpdpbusd` for 16 channels x the 4 k of quad j, and the s8 operand is the 4 activation
  bytes of quad j of one position, broadcast to all 16 lanes.
* Micro-kernel ("vnni"): MR = 6 positions x NR <= 4 channel groups (64 channels) of
  int32 accumulators in zmm registers, each decoded weight plane reused for 6 positions
  and each broadcast for NR groups. prange over (image, position tile, 64-channel block);
  each task writes its NCHW output tile directly (no [P, N] intermediate, no scatter).
* Micro-kernel ("avx2", CPUs without AVX-512 VNNI): the same layout, MR_AVX2 = 3
  positions x one 16-channel group (two ymm halves of 8 channels) per call;
  `vpmaddubsw` of plane j with the broadcast quad j gives i16 pair sums, the 4 planes of up
  to 16 chunks are summed in i16, and `vpmaddwd` with ones widens them to the int32 of each
  channel (the same 4-k sums as `vpdpbusd`). MR x groups on the layer below, compiled for
  Haswell (16 ymm registers): 6x1 1.70-1.77 ms (its 12 accumulators spill), 4x1 0.98-1.04,
  3x1 0.92-0.98, 2x1 0.97-1.06, 2x2 1.07; compiled for the Zen 4 host (32 registers, where
  LLVM also uses GFNI shifts and `vpdpwssd`) 6x1 0.55, 4x1 0.56, 3x1 0.58.
* "portable": the same layout and the same integers in plain Numba.

ResNet-18 layer 128 -> 128 channels, 28 x 28, 3x3, pad 1, batch 1 (0.23 GOP), whole call
(quantising im2col included), 2 threads, AMD EPYC Zen 4, medians (machine shared, +-30 %):
portable 3.8 ms (60 GOPS), avx2 0.55 ms (420 GOPS), vnni 0.47 ms (490 GOPS); compiled for
Haswell (NUMBA_CPU_NAME=haswell: what an AVX2-only CPU gets) portable 5.9-8.5 ms, avx2
(MR_AVX2 = 3) 0.92-0.98 ms.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from tdsl.runtime.gemm import (_V8I32, _V16I16, _V16I32, _V32I8, _V64I8, _I32, _chunk_ptrs,
                               _for_groups, _pmaddubsw, _pmaddwd_ones, _shift_plane, _splat32,
                               _zero_accs, activation)
from tdsl.runtime import isa
from tdsl.runtime.cpu_features import has_avx2, has_avx512_vnni
from tdsl.runtime.packing import unpack
from tdsl.runtime.quant_act import token_scale

MR = 6  # positions per micro-kernel call
NR = 4  # 16-channel groups per micro-kernel call (64 channels)
_HAS_VNNI = has_avx512_vnni()
_HAS_AVX2 = has_avx2()
"""Read once at import: `_conv_gemm` sees them as constants and drops the VNNI (AVX2) branch
where the CPU lacks it (LLVM aborts the process on instructions it cannot select)."""
MR_AVX2 = 3  # positions per AVX2 micro-kernel call: 6 i16 accumulators fit 16 ymm; divides MR
PATH_CODES = {"portable": 0, "avx2": 1, "vnni": 2}
"""The `kind` argument of `_conv_gemm` for each kernel path."""
TILE_POSITIONS = 48  # positions per prange task (upper bound; tiles are evened out)
CHUNK = 16  # k per 64-byte weight chunk


def padded_k(K: int) -> int:
    """Kp: the xq row length (K rounded up to a whole weight chunk)."""
    return max(CHUNK, -(-K // CHUNK) * CHUNK)


def conv_panels(packed: np.ndarray, out_channels: int, in_per_group: int, kh: int, kw: int,
                groups: int = 1) -> np.ndarray:
    """The "conv panels" layout (module docstring) of a packed "2bit" conv weight.

    packed: uint8 [O, ceil(Cg*kh*kw/4)] (weight [O, Cg, kh, kw] as a row-major matrix).
    Returns uint8 [groups * Gg, Kp/16, 64] with Gg = ceil(O/groups/16).
    """
    O, Cg = out_channels, in_per_group
    Og = O // groups
    K = Cg * kh * kw
    Kp = padded_k(K)
    Gg = -(-Og // 16)
    t = unpack(packed, (O, Cg, kh, kw))
    codes = np.ones((groups, Gg * 16, Kp), np.uint8)  # padding: code 1 = trit 0
    codes[:, :Og, :K] = (t.astype(np.int16) + 1).astype(np.uint8).transpose(0, 2, 3, 1).reshape(groups, Og, K)
    # [groups, Gg, lane, chunk, j, kk] -> [groups, Gg, chunk, lane, kk] with j in the bits
    c6 = codes.reshape(groups, Gg, 16, Kp // 16, 4, 4).transpose(0, 1, 3, 2, 5, 4)
    out = np.zeros(c6.shape[:-1], np.uint8)
    for j in range(4):
        out |= c6[..., j] << np.uint8(2 * j)
    return np.ascontiguousarray(out.reshape(groups * Gg, Kp // 16, 64))


# ---------------------------------------------------------------------------------------
# Quantising im2col


@njit(inline="always", cache=True)
def tap_range(base, step, count, size):
    """[lo, hi) (empty when hi <= lo): the t < count with base + t*step in [0, size). The taps
    of a conv/pool window inside the image (base = o*stride - pad, step = dilation), or the
    outputs one tap reaches (base = tap offset, step = stride); shared by the CPU kernels."""
    lo = 0 if base >= 0 else (-base + step - 1) // step
    hi = min(count, (size - 1 - base) // step + 1) if size - 1 - base >= 0 else 0
    return lo, hi


@njit(cache=True, parallel=True)
def _nhwc_absmax(x, xt, amap):
    """xt[n, y, x, c] = x[n, c, y, x]; amap[n, y, x] = max_c |x[n, c, y, x]|."""
    Nimg, C, H, W = x.shape
    for r in prange(Nimg * H):
        n = r // H
        iy = r - n * H
        for ix in range(W):
            amap[n, iy, ix] = np.float32(0.0)
        for c in range(C):
            for ix in range(W):
                v = x[n, c, iy, ix]
                xt[n, iy, ix, c] = v
                a = abs(v)
                if a > amap[n, iy, ix]:
                    amap[n, iy, ix] = a


@njit(cache=True)
def _quant_run(src, inv, dst):
    """dst[c] = clamp(rint(src[c] * inv), +-127) as int8; returns the int32 sum."""
    total = np.int32(0)
    lo = np.float32(-127.0)
    hi = np.float32(127.0)
    for c in range(src.shape[0]):
        q = min(max(np.rint(src[c] * inv), lo), hi)
        qi = np.int32(q)
        dst[c] = np.int8(qi)
        total += qi
    return total


@njit(cache=True, parallel=True)
def _im2col_quant(xt, amap, Cg, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, xq, xs, sums):
    """Row p = (n, oy, ox) of xq: the (i, j, c)-ordered window, quantised per row.

    xt is the NHWC input viewed [Nimg, H, W*Cg]: a window row (i fixed, all j) is one
    contiguous run when dw == 1 and it lies inside the image."""
    Nimg, H, W = amap.shape
    Kp = xq.shape[1]
    K = kh * kw * Cg
    for r in prange(Nimg * Ho):
        n = r // Ho
        oy = r - n * Ho
        for ox in range(Wo):
            p = r * Wo + ox
            iy0 = oy * sh - ph
            ix0 = ox * sw - pw
            i0, i1 = tap_range(iy0, dh, kh, H)
            j0, j1 = tap_range(ix0, dw, kw, W)
            amax = np.float32(0.0)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    a = amap[n, iy0 + i * dh, ix0 + j * dw]
                    if a > amax:
                        amax = a
            row = xq[p]
            inv, nonzero = token_scale(amax, xs, sums, p)
            if not nonzero:
                row[:] = 0
                continue
            total = np.int32(0)
            whole = dw == 1 and ix0 >= 0 and ix0 + kw <= W  # the kw taps are one NHWC run
            for i in range(kh):
                iy = iy0 + i * dh
                k0 = i * kw * Cg
                if iy < 0 or iy >= H:
                    row[k0:k0 + kw * Cg] = 0
                elif whole:
                    total += _quant_run(xt[n, iy, ix0 * Cg:(ix0 + kw) * Cg], inv, row[k0:k0 + kw * Cg])
                else:
                    for j in range(kw):
                        ix = ix0 + j * dw
                        k1 = k0 + j * Cg
                        if 0 <= ix < W:
                            total += _quant_run(xt[n, iy, ix * Cg:(ix + 1) * Cg], inv, row[k1:k1 + Cg])
                        else:
                            row[k1:k1 + Cg] = 0
            row[K:Kp] = 0
            sums[p] = total


# ---------------------------------------------------------------------------------------
# VNNI micro-kernel


_store_tile = isa.store_tile


def _make_conv_block(mr: int, nr: int):
    """acc[m, g*16 + lane] (int32, stored into out at ooff + m*ostride + g*16 + lane) for
    positions m < mr of xq (rows xstride bytes apart from byte xoff) and channel groups
    g < nr of the panels (groups wgstride bytes apart from byte woff), over nchunks chunks."""

    @intrinsic
    def block(typingctx, w, woff, wgstride, x, xoff, xstride, nchunks, out, ooff, ostride):
        sig = types.none(w, woff, wgstride, x, xoff, xstride, nchunks, out, ooff, ostride)

        def codegen(context, builder, signature, args):
            wv, woffv, wgsv, xv, xoffv, xsv, nv, outv, ooffv, osv = args
            ity = woffv.type
            wps = _chunk_ptrs(context, builder, signature.args[0], wv, woffv, wgsv, nr)
            xdata = context.make_array(signature.args[3])(context, builder, xv).data
            xbase = builder.bitcast(xdata, ir.IntType(8).as_pointer())
            xrows = [builder.gep(xbase, [builder.add(xoffv, builder.mul(xsv, ir.Constant(ity, m)))])
                     for m in range(mr)]
            accs = _zero_accs(builder, mr, nr)
            undef16 = ir.Constant(_V16I32, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(_I32, 16), [0] * 16)
            with cgutils.for_range(builder, nv) as loop:
                wch = [builder.load(builder.gep(wps[g], [loop.index]), align=1) for g in range(nr)]
                kbase = builder.mul(loop.index, ir.Constant(ity, CHUNK))
                for j in range(4):
                    planes = [_shift_plane(builder, wch[g], j) for g in range(nr)]
                    koff = builder.add(kbase, ir.Constant(ity, 4 * j))
                    for m in range(mr):
                        p = builder.bitcast(builder.gep(xrows[m], [koff]), _I32.as_pointer())
                        d = builder.load(p, align=1)
                        vec = builder.insert_element(undef16, d, ir.Constant(_I32, 0))
                        bc = builder.shuffle_vector(vec, undef16, splat_mask)
                        bc8 = builder.bitcast(bc, _V64I8)
                        for g in range(nr):
                            acc = isa.dpbusd(builder, builder.load(accs[m][g]), planes[g], bc8)
                            builder.store(acc, accs[m][g])
            _store_tile(context, builder, signature.args[7], outv, ooffv, osv, accs)
            return context.get_dummy_value()

        return sig, codegen

    return block


_block_n1 = _make_conv_block(MR, 1)
_block_n2 = _make_conv_block(MR, 2)
_block_n3 = _make_conv_block(MR, 3)
_block_n4 = _make_conv_block(MR, 4)


@njit(cache=True)
def _tile_vnni(xq, panels, g0, ng, p0, np_, acc):
    """acc[m, 16*g + lane] for positions p0 .. p0+np_ (rounded up to MR) x groups g0 .. g0+ng."""
    nchunks = panels.shape[1]
    Kp = xq.shape[1]
    gstride = nchunks * 64
    for m0 in range(0, np_, MR):
        xoff = (p0 + m0) * Kp
        ooff = m0 * acc.shape[1]
        if ng == 4:
            _block_n4(panels, g0 * gstride, gstride, xq, xoff, Kp, nchunks, acc, ooff, acc.shape[1])
        elif ng == 3:
            _block_n3(panels, g0 * gstride, gstride, xq, xoff, Kp, nchunks, acc, ooff, acc.shape[1])
        elif ng == 2:
            _block_n2(panels, g0 * gstride, gstride, xq, xoff, Kp, nchunks, acc, ooff, acc.shape[1])
        else:
            _block_n1(panels, g0 * gstride, gstride, xq, xoff, Kp, nchunks, acc, ooff, acc.shape[1])


# ---------------------------------------------------------------------------------------
# AVX2 micro-kernel: a 64-byte panel chunk is two ymm halves (channels 8h .. 8h+7 of the
# group); vpmaddubsw of plane j with the broadcast quad j gives i16 pair sums, the 4 planes
# of up to 16 chunks are summed in i16 (<= 16 * 4 * 2 * 2 * 127 = 32512), and vpmaddwd
# with ones widens each lane pair into the int32 of one channel (the 4 k of `vpdpbusd`).


def _make_conv_block_avx2(mr: int, ng: int):
    """As `_make_conv_block` (same arguments, same integers) with AVX2 256-bit vectors."""

    @intrinsic
    def block(typingctx, w, woff, wgstride, x, xoff, xstride, nchunks, out, ooff, ostride):
        sig = types.none(w, woff, wgstride, x, xoff, xstride, nchunks, out, ooff, ostride)

        def codegen(context, builder, signature, args):
            wv, woffv, wgsv, xv, xoffv, xsv, nv, outv, ooffv, osv = args
            ity = woffv.type
            i8p = ir.IntType(8).as_pointer()
            wdata = builder.bitcast(context.make_array(signature.args[0])(context, builder, wv).data, i8p)
            # half h (8 channels) of group g, chunk c: byte woff + g*wgstride + 32*h + 64*c
            whalves = [builder.bitcast(builder.gep(wdata, [builder.add(
                woffv, builder.add(builder.mul(wgsv, ir.Constant(ity, h // 2)), ir.Constant(ity, 32 * (h % 2))))]),
                _V32I8.as_pointer()) for h in range(2 * ng)]
            xdata = context.make_array(signature.args[3])(context, builder, xv).data
            xbase = builder.bitcast(xdata, i8p)
            xrows = [builder.gep(xbase, [builder.add(xoffv, builder.mul(xsv, ir.Constant(ity, m)))])
                     for m in range(mr)]
            zero16 = ir.Constant(_V16I16, None)
            a16 = [[cgutils.alloca_once_value(builder, zero16) for _ in range(2 * ng)] for _ in range(mr)]
            a32 = [[cgutils.alloca_once_value(builder, ir.Constant(_V8I32, None)) for _ in range(2 * ng)]
                   for _ in range(mr)]
            undef8 = ir.Constant(_V8I32, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(_I32, 8), [0] * 8)

            def chunk(c):
                kbase = builder.mul(c, ir.Constant(ity, CHUNK))
                wch = [builder.load(builder.gep(whalves[h], [builder.mul(c, ir.Constant(ity, 2))]), align=1)
                       for h in range(2 * ng)]
                sums = [[builder.load(a16[m][h]) for h in range(2 * ng)] for m in range(mr)]
                for j in range(4):
                    planes = []
                    for h in range(2 * ng):
                        p = wch[h] if j == 0 else builder.lshr(wch[h], _splat32(2 * j))
                        planes.append(builder.and_(p, _splat32(3)) if j < 3 else p)
                    koff = builder.add(kbase, ir.Constant(ity, 4 * j))
                    for m in range(mr):
                        ptr = builder.bitcast(builder.gep(xrows[m], [koff]), _I32.as_pointer())
                        vec = builder.insert_element(undef8, builder.load(ptr, align=1), ir.Constant(_I32, 0))
                        bc = builder.bitcast(builder.shuffle_vector(vec, undef8, splat_mask), _V32I8)
                        for h in range(2 * ng):
                            sums[m][h] = builder.add(sums[m][h], _pmaddubsw(builder, planes[h], bc))
                for m in range(mr):
                    for h in range(2 * ng):
                        builder.store(sums[m][h], a16[m][h])

            def widen():
                for m in range(mr):
                    for h in range(2 * ng):
                        wide = _pmaddwd_ones(builder, builder.load(a16[m][h]))
                        builder.store(builder.add(builder.load(a32[m][h]), wide), a32[m][h])
                        builder.store(zero16, a16[m][h])

            _for_groups(builder, nv, 16, chunk, widen)
            _store_tile(context, builder, signature.args[7], outv, ooffv, osv, a32)
            return context.get_dummy_value()

        return sig, codegen

    return block


_block_avx2 = _make_conv_block_avx2(MR_AVX2, 1)


@njit(cache=True)
def _tile_avx2(xq, panels, g0, ng, p0, np_, acc):
    """The same integers as `_tile_vnni`: MR_AVX2 positions x one 16-channel group a call."""
    nchunks = panels.shape[1]
    Kp = xq.shape[1]
    gstride = nchunks * 64
    for m0 in range(0, np_, MR_AVX2):
        xoff = (p0 + m0) * Kp
        for g in range(ng):
            _block_avx2(panels, (g0 + g) * gstride, gstride, xq, xoff, Kp, nchunks, acc,
                        m0 * acc.shape[1] + 16 * g, acc.shape[1])


@njit(cache=True)
def _tile_portable(xq, panels, g0, ng, p0, np_, acc):
    """The same integers as `_tile_vnni`, in plain Numba."""
    nchunks = panels.shape[1]
    m3 = np.uint8(3)
    for m in range(np_):
        x = xq[p0 + m]
        for g in range(ng):
            a = np.zeros(16, np.int32)
            for ch in range(nchunks):
                w = panels[g0 + g, ch]
                xk = x[ch * CHUNK:(ch + 1) * CHUNK]
                for lane in range(16):
                    s = np.int32(0)
                    for kk in range(4):
                        b = w[4 * lane + kk]
                        s += (np.int32(xk[kk]) * np.int32(b & m3)
                              + np.int32(xk[4 + kk]) * np.int32((b >> np.uint8(2)) & m3)
                              + np.int32(xk[8 + kk]) * np.int32((b >> np.uint8(4)) & m3)
                              + np.int32(xk[12 + kk]) * np.int32(b >> np.uint8(6)))
                    a[lane] += s
            for lane in range(16):
                acc[m, 16 * g + lane] = a[lane]


@njit(cache=True, parallel=True)
def _conv_gemm(xq, xs, sums, panels, g0, Og, o0, s, bias, res, act, y, tp, kind, yi):
    """y[n, o0 + o, q] (y viewed [Nimg, O, HW]) for o < Og from xq rows p = n*HW + q.

    Tasks: (image, tile of tp positions, block of NR channel groups); kind is a PATH_CODES
    value. yi (int32, same view, or [0, 0, 0]) receives acc - sum(xq), for tests."""
    Nimg, _, HW = y.shape
    G = (Og + 15) // 16
    ntiles = (HW + tp - 1) // tp
    ncb = (G + NR - 1) // NR
    for task in prange(Nimg * ntiles * ncb):
        cb = task % ncb
        rest = task // ncb
        t = rest % ntiles
        n = rest // ntiles
        q0 = t * tp
        nq = min(tp, HW - q0)
        gb = cb * NR
        ng = min(NR, G - gb)
        acc = np.empty(((tp + MR - 1) // MR * MR, 16 * NR), np.int32)
        p0 = n * HW + q0
        if kind == 2 and _HAS_VNNI:  # a constant: pruned, so no VNNI code is built where it cannot run
            _tile_vnni(xq, panels, g0 + gb, ng, p0, nq, acc)
        elif kind == 1 and _HAS_AVX2:  # likewise for AVX2
            _tile_avx2(xq, panels, g0 + gb, ng, p0, nq, acc)
        else:
            _tile_portable(xq, panels, g0 + gb, ng, p0, nq, acc)
        tsum = sums[p0:p0 + nq]
        txs = xs[p0:p0 + nq]
        for ol in range(min(16 * ng, Og - 16 * gb)):
            o = o0 + 16 * gb + ol
            so = s[o]
            bo = bias[o]
            dst = y[n, o, q0:q0 + nq]
            # split loops (no branch inside) so that each one vectorises
            for m in range(nq):
                a = np.int32(acc[m, ol] - tsum[m])
                dst[m] = np.float32(np.float32(np.float32(a) * (txs[m] * so)) + bo)
            if yi.shape[0] != 0:
                for m in range(nq):
                    yi[n, o, q0 + m] = np.int32(acc[m, ol] - tsum[m])
            if res.shape[0] != 0:
                r = res[n, o, q0:q0 + nq]
                for m in range(nq):
                    dst[m] = np.float32(dst[m] + r[m])
            if act != 0:
                for m in range(nq):
                    dst[m] = activation(dst[m], act)


# ---------------------------------------------------------------------------------------
# Driver


def workspace_sizes(Nimg: int, C: int, H: int, W: int, Cg: int, kh: int, kw: int, Ho: int, Wo: int
                    ) -> dict[str, int]:
    """Bytes of scratch one call needs: xt (NHWC float), amap, xq (+MR rows), xs, sums."""
    P = Nimg * Ho * Wo
    return {"xt": 4 * Nimg * H * W * Cg, "amap": 4 * Nimg * H * W,
            "xq": (P + MR) * padded_k(Cg * kh * kw), "xs": 4 * P, "sums": 4 * P}


def _scratch(ws: dict | None, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A view of workspace buffer `name` (any dtype; grown when too small) as dtype[shape]."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if ws is None:
        return np.empty(shape, dtype)
    buf = ws.get(name)
    if buf is None or buf.nbytes < n:
        buf = ws[name] = np.empty(-(-n // 4), np.float32)
    return buf.view(np.uint8)[:n].view(dtype).reshape(shape)


def _tile_positions(HW: int) -> int:
    ntiles = -(-HW // TILE_POSITIONS)
    tp = -(-HW // ntiles)
    return -(-tp // MR) * MR


def conv2d_int8_into(y: np.ndarray, x: np.ndarray, panels: np.ndarray, kernel: tuple[int, int],
                     stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                     groups: int, s: np.ndarray, bias: np.ndarray, res: np.ndarray, act: int,
                     path: str, workspace: dict | None = None, yi: np.ndarray | None = None) -> None:
    """y [Nimg, O, Ho, Wo] = act(conv(x, s*T) + bias + res) with int8 tokens (checked args).

    x float32 C-contiguous NCHW; panels from `conv_panels`; res float32 [Nimg, O, Ho, Wo]
    or empty; act an activation code; workspace: a dict of reusable byte buffers."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    Nimg, C, H, W = x.shape
    O, Ho, Wo = y.shape[1:]
    Cg, Og = C // groups, O // groups
    Gg = -(-Og // 16)
    P = Nimg * Ho * Wo
    Kp = padded_k(Cg * kh * kw)
    xt = _scratch(workspace, "xt", (Nimg, H, W, Cg), np.float32)
    amap = _scratch(workspace, "amap", (Nimg, H, W), np.float32)
    xq = _scratch(workspace, "xq", (P + MR, Kp), np.int8)
    xs = _scratch(workspace, "xs", (P,), np.float32)
    sums = _scratch(workspace, "sums", (P,), np.int32)
    xq[P:] = 0
    y3 = y.reshape(Nimg, O, Ho * Wo)
    res3 = res.reshape(Nimg, O, Ho * Wo) if res.size else np.zeros((0, 0, 0), np.float32)
    yi3 = yi.reshape(Nimg, O, Ho * Wo) if yi is not None else np.zeros((0, 0, 0), np.int32)
    tp = _tile_positions(Ho * Wo)
    for g in range(groups):
        # a token's absmax is over its own group's channels
        _nhwc_absmax(x if groups == 1 else np.ascontiguousarray(x[:, g * Cg:(g + 1) * Cg]), xt, amap)
        _im2col_quant(xt.reshape(Nimg, H, W * Cg), amap, Cg, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo,
                      xq, xs, sums)
        _conv_gemm(xq, xs, sums, panels, g * Gg, Og, g * Og, s, bias, res3, act, y3, tp,
                   PATH_CODES[path], yi3)


@njit(cache=True, parallel=True)
def _row_absmax(x, amap):
    """amap[0, b, 0] = max_k |x[b, k]|: the token absmax of a linear layer's rows."""
    for b in prange(x.shape[0]):
        m = np.float32(0.0)
        for k in range(x.shape[1]):
            a = abs(x[b, k])
            if a > m:
                m = a
        amap[0, b, 0] = m


LINEAR_MIN_ROWS: dict[str, int] = {"vnni": 5, "avx2": 5}
"""From this many rows on, per kernel path, `linear_int8_into` (panels, 6 rows x 64 (VNNI)
or 16 (AVX2) channels per micro-kernel call, each decoded weight plane used for 6 rows)
beats `gemm`'s row kernels, which decode each weight chunk for 1 or 4 rows (VNNI) or for
every row (AVX2). Measured on 4096 x 4096, 2 threads, AMD EPYC (Zen 4), medians of noisy
runs, row vs panels ms: VNNI B=4 0.29 vs 0.34, B=5 0.54 vs 0.34, B=6 0.58 vs 0.40, B=12
0.86 vs 0.68, B=64 4.1 vs 3.8; AVX2 compiled for Haswell (16 ymm, what an AVX2-only CPU
gets) B=2 0.29 vs 0.41, B=4 0.56 vs 0.70, B=5 0.76 vs 0.71, B=8 1.16 vs 1.03, B=64 9.2 vs
7.4. The portable path keeps the row kernel at every B (its plain-Numba tile is slower:
B=64 37 vs 33 ms)."""


def linear_panels(packed: np.ndarray, out_features: int, in_features: int) -> np.ndarray:
    """The conv-panel layout of a packed linear weight [N, ceil(K/4)] (a 1x1 convolution)."""
    return conv_panels(packed, out_features, in_features, 1, 1, 1)


def linear_int8_into(y: np.ndarray, x: np.ndarray, panels: np.ndarray, s: np.ndarray, bias: np.ndarray,
                     res: np.ndarray, act: int, path: str, workspace: dict | None = None,
                     yi: np.ndarray | None = None) -> None:
    """y [B, N] = act(x . (s*T)^T + bias + res) with int8 tokens: the linear layer as the
    GEMM of a 1x1 convolution over B positions, on the same micro-kernel and the same
    integers as `gemm.linear_into` (so the same bits). Weights decode once per 6 rows.

    x float32 C-contiguous [B, K]; panels from `linear_panels`; res [B, N] or empty."""
    B, K = x.shape
    N = y.shape[1]
    Kp = padded_k(K)
    amap = _scratch(workspace, "amap", (1, B, 1), np.float32)
    xq = _scratch(workspace, "xq", (B + MR, Kp), np.int8)
    xs = _scratch(workspace, "xs", (B,), np.float32)
    sums = _scratch(workspace, "sums", (B,), np.int32)
    xq[B:] = 0
    _row_absmax(x, amap)
    _im2col_quant(x.reshape(1, B, K), amap, K, 1, 1, 1, 1, 0, 0, 1, 1, B, 1, xq, xs, sums)
    yt = _scratch(workspace, "yt", (1, N, B), np.float32)  # the conv kernel writes [channel, position]
    rest = np.ascontiguousarray(res.T).reshape(1, N, B) if res.size else np.zeros((0, 0, 0), np.float32)
    yit = np.zeros((1, N, B), np.int32) if yi is not None else np.zeros((0, 0, 0), np.int32)
    _conv_gemm(xq, xs, sums, panels, 0, N, 0, s, bias, rest, act, yt, _tile_positions(B), PATH_CODES[path],
               yit)
    y[...] = yt[0].T
    if yi is not None:
        yi[...] = yit[0].T


def kernels() -> list:
    """The Numba dispatchers of this module (for cache statistics)."""
    return [_nhwc_absmax, _im2col_quant, _conv_gemm, _row_absmax]
