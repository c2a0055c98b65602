"""NHWC int8 activations between layers: producers, drivers and epilogues around the
micro-kernels of `tdsl.runtime.microkernels`.

An activation in this form is a flat uint8 array: N*H*W rows of `cp` bytes (the C channels
padded to `microkernels.padded_channels(C)`), followed by one more row that holds the
zero point in every byte (what a padded tap reads), with a scale and zero point:
real = scale * (q - zp). ReLU-family outputs use zp = 0 and the whole u8 range.

Numerics. A ternary conv of (scale s_x, zero point z_x) input with weights s[o] * T[o]:
    acc[p, o] = sum over taps and channels of T * q        (exact int32; the micro-kernel)
    v[p, o]   = float32(acc - z_x * sum(T[o])) * (s_x * s[o]) + bias[o]
then + the residual (dequantised), the activation, and requantisation to the output's
(scale, zp): clamp(rint(v / s_y) + z_y, 0, 255). Padding reads z_x, so it adds 0 exactly, as
the float conv's zero padding does. Every micro-kernel computes the same acc, so every path
gives the same bits.

Scales. With calibration (`calibrate` on a deployment) every activation has a static scale
and the epilogue writes u8 directly. Without it the scales are dynamic, per layer and per
call: the epilogue writes float32 NHWC, the driver takes its range and quantises it.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from tdsl.runtime import activations, microkernels
from tdsl.runtime.depthwise_taps import LANES as TAP_LANES
from tdsl.runtime.depthwise_taps import MAX_TAPS, tap_sums
from tdsl.runtime.depthwise_taps import PIXELS as TAP_PIXELS
from tdsl.runtime.isa import claim, umax_u8
from tdsl.runtime.microkernels import MR, NR, PAIR, any_tile, any_tile_pair, takes_pair
from tdsl.runtime.requant import LANES, WIDE, requant_scalar, requant_tile, static_terms

activation = njit(inline="always", cache=True)(activations.apply)
TILE_PIXELS = 8 * MR
"""Output pixels per task (a multiple of MR)."""
BLOCKS_PER_TASK = 4
"""32-channel blocks per task: the task's input rows are read once per 128 channels."""
CLAIM_STRIDE = 8
"""int64s between the workers' task counters (one cache line each). Worker w first takes the
tasks of its own contiguous region of pixels (w-th of `workers`), then helps the others: the
same worker writes the same pixels in every step, so a 1x1 or depthwise step reads rows its own
core wrote (in its L2); claiming from one shared counter scattered every step's pixels over both
cores."""
SERIAL_MACS = 1_200_000
"""Convs of fewer multiply-adds (~15 us of work at ~80 GMAC/s) run on the calling thread
(`conv_prepared_serial`): starting a parallel region costs ~3-10 us with two threads, what a
second thread would save on such a conv."""
SERIAL_MACS_DEPTHWISE = 300_000
"""The same for depthwise convs, which run at ~20 GMAC/s."""


def qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of u8 for the range [lo, hi] (widened to hold 0, as float padding)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        lo, hi = (0.0 if not np.isfinite(lo) else lo), (0.0 if not np.isfinite(hi) else hi)
    if hi - lo <= 0.0:
        return 1.0, 0
    scale = (hi - lo) / 255.0
    zp = int(min(max(round(-lo / scale), 0), 255))
    return float(np.float32(scale)), zp


def buffer_size(n: int, h: int, w: int, c: int) -> int:
    """Bytes of an NHWC u8 activation of this shape (rows and the zero-point row)."""
    return (n * h * w + 1) * microkernels.padded_channels(c)


# ---------------------------------------------------------------------------------------
# Producers: float NCHW in, u8 NHWC out, and back


@njit(cache=True, parallel=True)
def minmax(x):
    """(min, max) of a float32 array, in parallel chunks."""
    flat = x.reshape(-1)
    n = flat.size
    chunks = max(1, min(64, n // 4096))
    los = np.empty(chunks, np.float32)
    his = np.empty(chunks, np.float32)
    for c in prange(chunks):
        a = c * n // chunks
        b = (c + 1) * n // chunks
        lo = flat[a]
        hi = flat[a]
        for i in range(a, b):
            v = flat[i]
            lo = min(lo, v)
            hi = max(hi, v)
        los[c] = lo
        his[c] = hi
    return los.min(), his.max()


@njit(cache=True)
def quantize_nchw(x, scale, zp, out):
    """out (u8 NHWC rows of cp bytes + the zero-point row) = quantised x float32 [N, C, H, W]:
    `quantize_nchw_padded` with no padding."""
    quantize_nchw_padded(x, scale, zp, out, 0, 0)


@njit(cache=True)
def fill_zero_row(out, rows, cp, zp):
    for c in range(cp):
        out[rows * cp + c] = np.uint8(zp)


@njit(inline="always", cache=True)
def requantise(v, inv, zf):
    """clamp(rint(v / s) + z, 0, 255) as u8: every u8 producer's last step (inv = 1/s, zf = z)."""
    return np.uint8(np.int32(min(max(np.rint(v * inv) + zf, np.float32(0.0)), np.float32(255.0))))


@njit(inline="always", cache=True)
def fill_padding(out, p0, p1, c0, cp, zp):
    """Channels c0..cp of rows p0..p1 hold the zero point (the row padding of a u8 activation)."""
    for p in range(p0, p1):
        for c in range(c0, cp):
            out[p * cp + c] = np.uint8(zp)


@njit(cache=True, parallel=True)
def quantize_rows(yf, O, scale, zp, out):
    """out (u8 NHWC, cp bytes a row) = quantised yf float32 [P, O] (the dynamic epilogue)."""
    P = yf.shape[0]
    cp = out.size // (P + 1)
    inv = np.float32(1.0) / np.float32(scale)
    z = np.float32(zp)
    for p in prange(P):
        for o in range(O):
            out[p * cp + o] = requantise(yf[p, o], inv, z)
        fill_padding(out, p, p + 1, O, cp, zp)
    fill_zero_row(out, P, cp, zp)


@njit(cache=True, parallel=True)
def dequantize_nchw(q, scale, zp, y):
    """y float32 [N, C, H, W] = scale * (q - zp) of u8 NHWC rows."""
    N, C, H, W = y.shape
    cp = q.size // (N * H * W + 1)
    s = np.float32(scale)
    for r in prange(N * H):
        n = r // H
        iy = r - n * H
        base = r * W * cp
        for c in range(C):
            for ix in range(W):
                y[n, c, iy, ix] = np.float32(np.int32(q[base + ix * cp + c]) - zp) * s


# ---------------------------------------------------------------------------------------
# Indirection


@njit(inline="always", cache=True)
def pixel_coords(p, Ho, Wo):
    """(image n, output row oy, output column ox) of flat output pixel p."""
    n = p // (Ho * Wo)
    rest = p - n * Ho * Wo
    oy = rest // Wo
    return n, oy, rest - oy * Wo


@njit(cache=True)
def indirection(N, H, W, cp, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo):
    """offs int64 [(P rounded up to PAIR) * kh*kw]: the byte offset of the input row each tap of
    each output pixel reads; taps in the padding (and the rows past P) read the zero row."""
    P = N * Ho * Wo
    Pp = (P + PAIR - 1) // PAIR * PAIR
    ntaps = kh * kw
    zero = N * H * W * cp
    offs = np.full(Pp * ntaps, zero, np.int64)
    for p in range(P):
        n, oy, ox = pixel_coords(p, Ho, Wo)
        for i in range(kh):
            iy = oy * sh - ph + i * dh
            for j in range(kw):
                ix = ox * sw - pw + j * dw
                if 0 <= iy < H and 0 <= ix < W:
                    offs[p * ntaps + i * kw + j] = ((n * H + iy) * W + ix) * cp
    return offs


@njit(cache=True, parallel=True)
def quantize_nchw_padded(x, scale, zp, out, ph, pw):
    """out = quantised x float32 [N, C, H, W] as the u8 NHWC image padded by ph rows and pw
    columns of the zero point on each side: [N, H+2ph, W+2pw] rows of cp bytes, then one
    zero-point row. A conv with that padding then reads each kernel row of each output pixel
    as one run of kw*cp bytes (`row_indirection`): the 3-channel stem needs no gather."""
    _quantize_padded(x, scale, zp, out, ph, pw, np.float32(np.inf))


@njit(cache=True, parallel=True)
def quantize_input(x, scale, zp, out, ph, pw, limit):
    """`quantize_nchw_padded` of a network input, returning how many of its values are NaN or
    beyond +-limit: the check every call owes its inputs (`signature.check_inputs`), made in
    the pass that reads them anyway (two more passes of min and max cost ~0.1-0.3 ms a call at
    224 x 224)."""
    return _quantize_padded(x, scale, zp, out, ph, pw, np.float32(limit))


@njit(inline="always", cache=True)
def _quantize_padded(x, scale, zp, out, ph, pw, limit):
    N, C, H, W = x.shape
    Hp = H + 2 * ph
    Wp = W + 2 * pw
    cp = out.size // (N * Hp * Wp + 1)
    inv = np.float32(1.0) / np.float32(scale)
    z = np.float32(zp)
    zb = np.uint8(zp)
    out32 = out[:out.size // 4 * 4].view(np.uint32)
    bad = 0
    for r in prange(N * Hp):
        n = r // Hp
        y = r - n * Hp - ph
        base = r * Wp * cp
        if y < 0 or y >= H:
            for i in range(Wp * cp):
                out[base + i] = zb
            continue
        for i in range(pw * cp):
            out[base + i] = zb
            out[base + (pw + W) * cp + i] = zb
        row_bad = 0
        if C == 3 and cp == 4:  # an RGB image: one 4-byte word a pixel (vectorises; 0.15 -> 0.05 ms at 224^2)
            w0 = (base + pw * cp) // 4
            top = np.uint32(zb) << np.uint32(24)
            for ix in range(W):
                v0, v1, v2 = x[n, 0, y, ix], x[n, 1, y, ix], x[n, 2, y, ix]
                row_bad += (np.int64(not abs(v0) <= limit) + np.int64(not abs(v1) <= limit)
                            + np.int64(not abs(v2) <= limit))  # NaN fails every comparison
                out32[w0 + ix] = (np.uint32(requantise(v0, inv, z)) | (np.uint32(requantise(v1, inv, z)) << np.uint32(8))
                                  | (np.uint32(requantise(v2, inv, z)) << np.uint32(16)) | top)
        else:
            for c in range(C):
                for ix in range(W):
                    v = x[n, c, y, ix]
                    row_bad += np.int64(not abs(v) <= limit)
                    out[base + (pw + ix) * cp + c] = requantise(v, inv, z)
            fill_padding(out, r * Wp + pw, r * Wp + pw + W, C, cp, zp)
        bad += row_bad
    fill_zero_row(out, N * Hp * Wp, cp, zp)
    return bad


@njit(cache=True)
def row_indirection(N, Hp, Wp, cp, kh, sh, sw, dh, Ho, Wo):
    """offs int64 [(P rounded up to PAIR) * kh]: for output pixel p and kernel row i, the byte
    offset in a padded image (`quantize_nchw_padded`) of the run of taps that row reads; rows
    past P read offset 0 (their sums are never written)."""
    P = N * Ho * Wo
    Pp = (P + PAIR - 1) // PAIR * PAIR
    offs = np.zeros(Pp * kh, np.int64)
    for p in range(P):
        n, oy, ox = pixel_coords(p, Ho, Wo)
        for i in range(kh):
            offs[p * kh + i] = ((n * Hp + oy * sh + i * dh) * Wp + ox * sw) * cp
    return offs


# ---------------------------------------------------------------------------------------
# Conv driver: (NHWC indirection producer) x (k2x32 micro-kernel) + fused epilogue


@njit(inline="always", cache=True)
def _epilogue(acc, a0, no, o0, corr, se, bias, res, rbase, rs, rzp, act, amin, amax, static, dst, dbase,
              inv, zf, yf, p, lohi, task):
    """One pixel's `no` channels from o0: acc[a0 + ol] -> dst[dbase + ol] (static: u8) or
    yf[p, o0 + ol] (dynamic: float32, its range into lohi[task]). corr[o] = z_x * sum(T[o]) as
    float32: exact (below 2**24), and float arithmetic keeps the loop vectorised (Numba widens
    int32 arithmetic to int64, which AVX2 cannot convert to float in vectors).
    act < 0: the activation is the clamp [amin, amax] (none, relu, relu6); static, that is the
    static with a clamp activation is `_requant_rows` instead."""
    if static:  # an activation other than a clamp (a clamp takes `_requant_rows`)
        for ol in range(no):
            o = o0 + ol
            v = np.float32((np.float32(acc[a0 + ol]) - corr[o]) * se[o]) + bias[o]
            if res.size:
                v = v + np.float32(np.int32(res[rbase + ol]) - rzp) * rs
            dst[dbase + ol] = requantise(activation(v, act), inv, zf)
    else:
        lo = lohi[task, 0]
        hi = lohi[task, 1]
        for ol in range(no):
            o = o0 + ol
            v = np.float32((np.float32(acc[a0 + ol]) - corr[o]) * se[o]) + bias[o]
            if res.size:
                v = v + np.float32(np.int32(res[rbase + ol]) - rzp) * rs
            v = activation(v, act) if act >= 0 else min(max(v, amin), amax)
            yf[p, o] = v
            lo = min(lo, v)
            hi = max(hi, v)
        lohi[task, 0] = lo
        lohi[task, 1] = hi


@njit(inline="always", cache=True)
def _requant_rows(acc, astride, rows, no, o0, m, c, res, rsi, qlo, qhi, dst, dbase, dstride):
    """The static clamp epilogue (`tdsl.runtime.requant`) of `rows` pixels x `no` channels from
    o0: acc[r * astride + i] -> dst[dbase + r * dstride + i] (res at the same places)."""
    n32 = no // WIDE
    n8 = (no - n32 * WIDE) // LANES
    requant_tile(acc, 0, astride, rows, n32, n8, m, c, o0, res, dbase, res.size, rsi, qlo, qhi, dst, dbase, dstride)
    for r in range(rows):
        for i in range(n32 * WIDE + n8 * LANES, no):
            rv = np.float32(res[dbase + r * dstride + i]) if res.size else np.float32(0.0)
            dst[dbase + r * dstride + i] = requant_scalar(acc[r * astride + i], m[o0 + i], c[o0 + i], rv, rsi, qlo, qhi)


@njit(cache=True)
def epilogue_terms(wsum, zpx, se, bias, inv_sy, zpy, act, res, rs, rzp):
    """The static clamp epilogue's constants (`requant.static_terms`) of a conv with these
    scales, for `conv_prepared` / `depthwise_prepared` (unused where `act` is not a clamp)."""
    code, amin, amax = clamp_of(act)
    return _static_terms(wsum, zpx, se, bias, inv_sy, zpy, amin, amax, res, rs, rzp)


@njit(inline="always", cache=True)
def _static_terms(wsum, zpx, se, bias, inv, zpy, amin, amax, res, rs, rzp):
    """`requant.static_terms` (with no residual: rs = 0, rzp = 0)."""
    if res.size:
        return static_terms(wsum, zpx, se, bias, np.float64(inv), zpy, amin, amax, np.float64(rs), rzp)
    return static_terms(wsum, zpx, se, bias, np.float64(inv), zpy, amin, amax, 0.0, 0)


@njit(inline="always", cache=True)
def epilogue_setup(wsum, zpx, inv_sy, zpy, act, yf):
    """(static, zf, inv, corr, code, amin, amax, clamp_static): what a driver's epilogue calls
    read, from its scales and activation (static: u8 outputs, yf empty; clamp_static: the static
    clamp epilogue `_requant_rows` applies)."""
    static = yf.shape[1] == 0
    code, amin, amax = clamp_of(act)
    return (static, np.float32(zpy), np.float32(inv_sy), (wsum * zpx).astype(np.float32), code, amin, amax,
            static and code < 0)


@njit(inline="always", cache=True)
def clamp_of(act):
    """(code, lo, hi): a none/relu/relu6 activation as a clamp (code -1), any other as itself."""
    if act == activations.NONE:
        return -1, np.float32(-np.inf), np.float32(np.inf)
    if act == activations.RELU:
        return -1, np.float32(0.0), np.float32(np.inf)
    if act == activations.RELU6:
        return -1, np.float32(0.0), np.float32(6.0)
    return act, np.float32(-np.inf), np.float32(np.inf)


@njit(cache=True, parallel=True)
def conv(kind, x, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zpx, se, bias, res, rs, rzp, act,
         out, inv_sy, zpy, yf, lohi, workers, geom):
    """One ternary conv of u8 NHWC x into out (static scales: u8 NHWC, cp_out bytes a row)
    or yf (dynamic: float32 [P, O], with each task's (min, max) in lohi [tasks, 2]).

    se[o] = s_x * s[o]; wsum[o] = sum(T[o]); res: u8 NHWC residual (or empty) with scale rs,
    zero point rzp; act: activation code. kind: the micro-kernel's code. workers: the threads
    that take tasks (`numba.get_num_threads()`, passed in: read inside, it keeps the kernel out
    of Numba's cache); each claims the next task of its own region of pixels as it frees up
    (`isa.claim`), then of the others' (`CLAIM_STRIDE`).

    geom: int64 [14], zeros or the geometry (N, H, W, cp, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo) of a conv
    with few input channels (the stem): each task then gathers its pixels' kh*kw input rows
    into one row of 2*npairs bytes each (`gather_pixel`, kernel rows copied as runs) and the
    micro-kernel reads those as one tap (ntaps = 1; offs is unused): the short taps of a
    3-channel input would starve it, and gathering per task (a few KB, in cache) instead of
    the whole image (a P x 49 offset table and a P x 196 byte copy at 224^2) writes nothing
    to memory."""
    m_, c_, rsi, qlo, qhi = epilogue_terms(wsum, zpx, se, bias, inv_sy, zpy, act, res, rs, rzp)
    _conv(kind, x, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy,
          zpy, yf, lohi, workers, geom, m_, c_, rsi, qlo, qhi)


@njit(cache=True, parallel=True)
def conv_prepared(kind, x, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zpx, se, bias, res, rs, rzp, act,
                  out, inv_sy, zpy, yf, lohi, workers, geom, m_, c_, rsi, qlo, qhi):
    """`conv` with the static epilogue's constants made by the caller (`static_terms`, once per
    set of scales instead of once a call)."""
    _conv(kind, x, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy,
          zpy, yf, lohi, workers, geom, m_, c_, rsi, qlo, qhi)


@njit(cache=True)
def conv_prepared_serial(kind, x, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zpx, se, bias, res, rs, rzp, act,
                         out, inv_sy, zpy, yf, lohi, workers, geom, m_, c_, rsi, qlo, qhi):
    """`conv_prepared` on the calling thread: no parallel region to start (~5 us with one
    thread, ~10 us with two), for convs whose work is not worth that (`SERIAL_MACS`)."""
    _conv(kind, x, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy,
          zpy, yf, lohi, 1, geom, m_, c_, rsi, qlo, qhi)


@njit(inline="always", cache=True)
def _conv(kind, x, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zpx, se, bias, res, rs, rzp, act,
          out, inv_sy, zpy, yf, lohi, workers, geom, m_, c_, rsi, qlo, qhi):
    """The body of `conv` (inlined: its prange is a parallel loop where the caller is parallel)."""
    cpo = _row_bytes(O)
    static, zf, inv, corr, code, amin, amax, clamp_static = epilogue_setup(wsum, zpx, inv_sy, zpy, act, yf)
    ntiles = (P + TILE_PIXELS - 1) // TILE_PIXELS
    ngroups = (nblocks + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK
    block_bytes = ntaps * npairs * 2 * NR
    ntasks = ntiles * ngroups
    nw = max(1, min(workers, ntasks))
    counters = np.zeros(nw * CLAIM_STRIDE, np.int64)  # per worker's region: tasks claimed from it
    gathering = geom[4] > 0  # kh
    kp = 2 * npairs
    skew = 2048  # the rows start half a page into the buffer: fewer 4K-aliasing stalls against acc
    local_offs = np.arange(TILE_PIXELS, dtype=np.int64) * kp + skew
    x4 = x.view(np.uint32) if gathering else x[:0].view(np.uint32)
    gN, gH, gW, gcp, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = geom
    zero = gN * gH * gW * gcp // 4
    for w in prange(nw):
        acc = np.empty(PAIR * NR, np.int32)
        tacc = np.empty(TILE_PIXELS * NR, np.int32)
        rows = np.zeros(skew + TILE_PIXELS * kp + 4 * GATHER_RUN if gathering else 0, np.uint8)
        rows4 = rows.view(np.uint32)
        region, drained = np.int64(w), 0
        while True:
            task = ntasks * region // nw + claim(counters[region * CLAIM_STRIDE:])
            if task >= ntasks * (region + 1) // nw:  # this region is done: help the next one
                drained += 1
                if drained == nw:
                    break
                region = (region + 1) % nw
                continue
            g = task % ngroups
            t = task // ngroups
            p0 = t * TILE_PIXELS
            np_ = min(TILE_PIXELS, P - p0)
            lohi[task, 0] = np.float32(np.inf)
            lohi[task, 1] = np.float32(-np.inf)
            if gathering:
                n, oy, ox = pixel_coords(p0, Ho, Wo)
                for m in range(np_):
                    gather_pixel(x4, n, oy, ox, zero, gH, gW, gcp // 4, kh, kw, sh, sw, ph, pw, dh, dw, rows4,
                                 (skew + m * kp) // 4)
                    ox += 1
                    if ox == Wo:
                        ox = 0
                        oy += 1
                        if oy == Ho:
                            oy = 0
                            n += 1
                src, soffs, first = rows, local_offs, 0
            else:
                src, soffs, first = x, offs, p0 * ntaps
            for b in range(g * BLOCKS_PER_TASK, min(nblocks, (g + 1) * BLOCKS_PER_TASK)):
                o0 = b * NR
                no = min(NR, O - o0)
                pair = takes_pair(kind, ntaps, npairs, no)
                if clamp_static:  # its own loop: with the general epilogue inlined beside it, this one ran 25 % slower
                    if pair:  # the task's pixels' accumulators (4 KB), then one epilogue call
                        for m0 in range(0, np_, PAIR):
                            any_tile_pair(kind, panels, b * block_bytes, src, soffs, first + m0 * ntaps, ntaps, npairs,
                                          tacc, m0 * NR, NR)
                    else:  # constant steps: a loop of a variable step made the small convs ~20 % slower
                        for m0 in range(0, np_, MR):
                            any_tile(kind, panels, b * block_bytes, src, soffs, first + m0 * ntaps, ntaps, npairs,
                                     tacc, m0 * NR, NR, no)
                    _requant_rows(tacc, NR, np_, no, o0, m_, c_, res, rsi, qlo, qhi, out, p0 * cpo + o0, cpo)
                else:
                    step = PAIR if pair else MR
                    for m0 in range(0, np_, step):
                        if pair:
                            any_tile_pair(kind, panels, b * block_bytes, src, soffs, first + m0 * ntaps, ntaps, npairs,
                                          acc, 0, NR)
                        else:
                            any_tile(kind, panels, b * block_bytes, src, soffs, first + m0 * ntaps, ntaps, npairs, acc,
                                     0, NR)
                        for m in range(min(step, np_ - m0)):
                            p = p0 + m0 + m
                            _epilogue(acc, m * NR, no, o0, corr, se, bias, res, p * cpo + o0, rs, rzp, code, amin,
                                      amax, static, out, p * cpo + o0, inv, zf, yf, p, lohi, task)
            if static and g == ngroups - 1:
                fill_padding(out, p0, p0 + np_, O, cpo, zpy)
    if static:
        fill_zero_row(out, P, cpo, zpy)


@njit(inline="always", cache=True)
def _row_bytes(c):
    return (c + 3) // 4 * 4


def conv_tasks(P: int, nblocks: int) -> int:
    """The number of tasks (rows of `lohi`) of one `conv` call."""
    return -(-P // TILE_PIXELS) * -(-nblocks // BLOCKS_PER_TASK)


# ---------------------------------------------------------------------------------------
# Depthwise, pools


@njit(cache=True, parallel=True)
def depthwise(x, offs, ntaps, C, Wo, w, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy, zpy, yf, lohi):
    """A depthwise ternary conv on u8 NHWC: w int8 [ntaps, C]; outputs as `conv`, one task per
    output row of Wo pixels (lohi [P / Wo, 2])."""
    m_, c_, rsi, qlo, qhi = epilogue_terms(wsum, zpx, se, bias, inv_sy, zpy, act, res, rs, rzp)
    _depthwise(x, offs, ntaps, C, Wo, w, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy, zpy, yf, lohi, m_, c_,
               rsi, qlo, qhi)


@njit(cache=True, parallel=True)
def depthwise_prepared(x, offs, ntaps, C, Wo, w, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy, zpy, yf, lohi,
                       m_, c_, rsi, qlo, qhi):
    """`depthwise` with the caller's `static_terms` (see `conv_prepared`)."""
    _depthwise(x, offs, ntaps, C, Wo, w, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy, zpy, yf, lohi, m_, c_,
               rsi, qlo, qhi)


@njit(cache=True)
def depthwise_prepared_serial(x, offs, ntaps, C, Wo, w, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy, zpy, yf,
                              lohi, m_, c_, rsi, qlo, qhi):
    """`depthwise_prepared` on the calling thread (see `conv_prepared_serial`)."""
    _depthwise(x, offs, ntaps, C, Wo, w, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy, zpy, yf, lohi, m_, c_,
               rsi, qlo, qhi)


@njit(inline="always", cache=True)
def _depthwise(x, offs, ntaps, C, Wo, w, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy, zpy, yf, lohi, m_, c_,
               rsi, qlo, qhi):
    """The body of `depthwise`."""
    cp = _row_bytes(C)
    rows = lohi.shape[0]
    static, zf, inv, corr, code, amin, amax, clamp_static = epilogue_setup(wsum, zpx, inv_sy, zpy, act, yf)
    n16 = C // TAP_LANES if ntaps <= MAX_TAPS else 0  # channels summed in i16 vectors, the rest below
    for r in prange(rows):
        acc = np.empty(TAP_PIXELS * C, np.int32)
        lohi[r, 0] = np.float32(np.inf)
        lohi[r, 1] = np.float32(-np.inf)
        for ox in range(0, Wo, TAP_PIXELS):
            p0 = r * Wo + ox
            npix = min(TAP_PIXELS, Wo - ox)
            tap_sums(x, offs, p0 * ntaps, ntaps, w, C, acc, n16, npix)
            for m in range(npix):
                p = p0 + m
                for c in range(n16 * TAP_LANES, C):
                    acc[m * C + c] = 0
                for t in range(ntaps):
                    row = offs[p * ntaps + t]
                    for c in range(n16 * TAP_LANES, C):
                        acc[m * C + c] += np.int32(w[t, c]) * np.int32(x[row + c])
            if clamp_static:  # hoisted out of the pixel loop, as in `conv`
                _requant_rows(acc, C, npix, C, 0, m_, c_, res, rsi, qlo, qhi, out, p0 * cp, cp)
            else:
                for m in range(npix):
                    p = p0 + m
                    _epilogue(acc[m * C:], 0, C, 0, corr, se, bias, res, p * cp, rs, rzp, code, amin, amax, static,
                              out, p * cp, inv, zf, yf, p, lohi, r)
        if static:
            fill_padding(out, r * Wo, (r + 1) * Wo, C, cp, zpy)
    if static:
        fill_zero_row(out, rows * Wo, cp, zpy)


@njit(cache=True, parallel=True)
def max_pool(x, N, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, zp, out):
    """Max pooling of u8 NHWC (same scale in and out: max commutes with quantisation). Each
    output row is built in a scratch row and copied out (no aliasing: the loops vectorise)."""
    cp = _row_bytes(C)
    nvec = cp // 32
    for r in prange(N * Ho):
        n = r // Ho
        oy = r - n * Ho
        i0 = max(0, ph - oy * sh)
        i1 = min(kh, H + ph - oy * sh)
        row = np.zeros(Wo * cp, np.uint8)
        for i in range(i0, i1):
            src0 = ((n * H + oy * sh - ph + i) * W) * cp
            for ox in range(Wo):
                j0 = max(0, pw - ox * sw)
                j1 = min(kw, W + pw - ox * sw)
                d = ox * cp
                for j in range(j0, j1):
                    src = src0 + (ox * sw - pw + j) * cp
                    umax_u8(row, d, x, src, nvec)
                    for c in range(nvec * 32, cp):
                        a = row[d + c]
                        b = x[src + c]
                        row[d + c] = a if a > b else b
        base = r * Wo * cp
        for k in range(Wo * cp):
            out[base + k] = row[k]
    fill_zero_row(out, N * Ho * Wo, cp, zp)


GATHER_RUN = 8
"""Words (of 4 bytes) `gather_pixel` copies at once for a kernel row of at most that many."""


@njit(inline="always", cache=True)
def gather_pixel(x4, n, oy, ox, zero, H, W, w, kh, kw, sh, sw, ph, pw, dh, dw, dst4, d0):
    """dst4[d0:d0 + kh*kw*w] = the input rows output pixel (n, oy, ox) reads, in (tap, channel) order
    (the zero row's where a tap falls in the padding), as 4-byte words (x4, dst4: uint32 views;
    w = cp/4 words a row; the zero row at word `zero`). A kernel row's taps inside the image
    are one run of kw*cp bytes when the dilation is 1. Indices are unsigned: Numba's code for
    negative indices made this copy 2-4x slower (the stem's gather: 19 -> 5-9 ms at B=8).
    The caller steps (n, oy, ox) from pixel to pixel: two divisions a pixel were half the cost."""
    y0 = oy * sh - ph
    x0 = ox * sw - pw
    run = kw * w
    d = d0
    for i in range(kh):
        iy = y0 + i * dh
        if not 0 <= iy < H:  # a kernel row in the padding
            for j in range(kw):
                for c in range(w):
                    dst4[np.uint64(d + j * w + c)] = x4[np.uint64(zero + c)]
        elif dw == 1 and x0 >= 0 and x0 + kw <= W:  # the row's taps: one run
            src = ((n * H + iy) * W + x0) * w
            if run <= GATHER_RUN and src + GATHER_RUN <= x4.size:
                # a fixed-length copy (one vector) is far cheaper than a loop of a few words;
                # the words past the run land where the next row (or the slack) is written
                ud = np.uint64(d)
                us = np.uint64(src)
                for k in range(GATHER_RUN):  # unsigned indices: no negative-index wraparound code
                    dst4[ud + np.uint64(k)] = x4[us + np.uint64(k)]
            else:
                for k in range(run):
                    dst4[np.uint64(d + k)] = x4[np.uint64(src + k)]
        else:
            row = (n * H + iy) * W
            for j in range(kw):
                ix = x0 + j * dw
                src = (row + ix) * w if 0 <= ix < W else zero
                for c in range(w):
                    dst4[np.uint64(d + j * w + c)] = x4[np.uint64(src + c)]
        d += run


POOL_CHANNELS = 256
"""Channels a task of `global_avg_pool` sums (B=1 still splits over threads; 1 KB of int32)."""


@njit(cache=True, parallel=True)
def global_avg_pool(x, N, HW, C, scale, zp, y):
    """y float32 [N, C] (any trailing 1x1) = mean over pixels of scale * (q - zp). Tasks of
    POOL_CHANNELS channels of one image, each pixel's run of them summed through a slice (a
    loop the compiler vectorises: MobileNetV2's 7x7x1280 41 -> 9 us on one thread)."""
    cp = _row_bytes(C)
    y2 = y.reshape(N, C)
    nch = (C + POOL_CHANNELS - 1) // POOL_CHANNELS
    for task in prange(N * nch):
        n = task // nch
        c0 = (task - n * nch) * POOL_CHANNELS
        c1 = min(C, c0 + POOL_CHANNELS)
        acc = np.zeros(POOL_CHANNELS, np.int32)
        for p in range(HW):
            base = (n * HW + p) * cp
            row = x[base + c0:base + c1]
            for c in range(c1 - c0):
                acc[c] += np.int32(row[c])
        for c in range(c1 - c0):
            y2[n, c0 + c] = np.float32((np.float64(acc[c]) / HW - zp) * scale)


@njit(cache=True, parallel=True)
def add(a, sa, za, b, sb, zb, act, C, out, inv_sy, zpy, yf, lohi):
    """act(a + b) of two u8 NHWC activations of the same shape; outputs as `conv` (lohi [P, 2])."""
    cp = _row_bytes(C)
    P = lohi.shape[0]
    static = yf.shape[1] == 0
    zf = np.float32(zpy)
    inv = np.float32(inv_sy)
    for p in prange(P):
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for c in range(C):
            v = np.float32(np.int32(a[p * cp + c]) - za) * sa + np.float32(np.int32(b[p * cp + c]) - zb) * sb
            v = activation(v, act)
            if static:
                out[p * cp + c] = requantise(v, inv, zf)
            else:
                yf[p, c] = v
                lo = min(lo, v)
                hi = max(hi, v)
        lohi[p, 0] = lo
        lohi[p, 1] = hi
    if static:
        fill_padding(out, 0, P, C, cp, zpy)
        fill_zero_row(out, P, cp, zpy)


def kernels() -> list:
    """The Numba dispatchers of this module (for cache statistics)."""
    return [minmax, quantize_nchw, quantize_rows, dequantize_nchw, indirection, conv, depthwise, max_pool,
            global_avg_pool, add, microkernels.tile]
