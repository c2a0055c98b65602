"""Ternary linear layers over many rows (an LLM prefill: B*T tokens) on the NHWC runtime's
micro-kernel `tdsl.runtime.microkernels.tile`, with per-token int8 activations.

Semantics: exactly `conv_int8.linear_int8_into` (and so `gemm.linear_into` with act_quant
"int8"): each row of x is one token, quantised to xq = clamp(rint(x * 127 / absmax), +-127)
with scale xs = absmax / 127; the integer a[b, o] = sum_k xq[b, k] * T[o, k] is exact; the
float epilogue is `float32(float32(a) * (xs[b] * s[o])) + bias[o]`, then `+ res`, then the
activation, so the outputs are the same bits.

Why: the micro-kernel reads s8 weights in k2x32 panels (`microkernels.k2x32_panels`: 32
outputs x 2 k per 64 bytes) and u8 activations, and does 4 rows x 32 outputs per call with
one `vpmaddubsw` per 2 k x 16 outputs x 1 row and no weight decode; `conv_int8`'s AVX2 block
decodes 2-bit panels (shift, and) for every 3 rows x 16 outputs. Rows are the 1x1 case of the
kernel's indirection (`offs[b]` = byte offset of row b, one tap).

The kernel takes u8; the codes are s8. Row b is stored as u = xq + 128 (in [1, 255]), so the
kernel's sum is a + 128 * sum_k T[o, k]; `RowPanels.corr` holds 128 * sum_k T[o, k] per output
and the epilogue subtracts it (exact in int32). Padding: k >= K holds 128 against zero weight
trits, rows B .. Bp-1 (to a multiple of MR) hold 128 and are never written out.

Cost: the s8 panels take 1 byte a weight (4x the packed 2-bit trits). They are made once per
layer, on the first call with enough rows (`MIN_ROWS`); decode (one row a step) keeps the
2-bit row kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from tdsl.errors import TdslError
from tdsl.runtime import microkernels as mk
from tdsl.runtime.gemm import activation
from tdsl.runtime.packing import unpack
from tdsl.runtime.quant_act import token_scale

MIN_ROWS = 5
"""From this many rows on the AVX2 path runs linears here (conv_int8.LINEAR_MIN_ROWS's
threshold for the 2-bit panels it replaces)."""
ROWS_PER_TASK = 64
"""Rows per parallel task (rounded down to a multiple of MR: a tile reads MR rows from its
first): a task streams one 32-output weight block (K*32 bytes, in L2) past up to
this many rows (64 rows of K = 4096 u8: 256 KiB, in L2 too)."""
KINDS = {"portable": 0, "avx2": 1, "vnni": 5}
"""The micro-kernel row (`microkernels.TABLE` code) per kernel path ("vnni": avx512-vnni, k4x32
panels)."""


@dataclass(frozen=True)
class RowPanels:
    """A ternary linear weight [N, K] in the micro-kernel's layout."""

    panels: np.ndarray
    """int8, flat: the row's panels of the trits as [N, K, 1, 1] (`k2x32_panels`: [ceil(N/32), 1,
    cp/2, 64]; `k4x32_panels` for "vnni": [ceil(N/32), 1, cp/4, 128])."""
    corr: np.ndarray
    """int32 [ceil(N/32)*32]: 128 * sum_k T[o, k] (zero for padding outputs)."""
    n: int
    k: int
    path: str = "avx2"
    """The kernel path whose micro-kernel reads these panels (a key of KINDS)."""

    @property
    def npairs(self) -> int:
        return mk.padded_channels(self.k) // 2

    @property
    def nbytes(self) -> int:
        return self.panels.nbytes + self.corr.nbytes


def row_panels(packed: np.ndarray, out_features: int, in_features: int, path: str = "avx2") -> RowPanels:
    """The `RowPanels` of a packed "2bit" weight uint8 [N, ceil(K/4)] for kernel `path`."""
    trits = unpack(packed, (out_features, in_features))
    return panels_of_trits(trits, path)


def panels_of_trits(trits: np.ndarray, path: str = "avx2") -> RowPanels:
    """The `RowPanels` of trits int8 [N, K] in {-1, 0, 1} for kernel `path`."""
    if trits.ndim != 2 or trits.dtype != np.int8:
        raise TdslError(f"ternary rows must be int8 [N, K], got {trits.dtype} {trits.shape}")
    if path not in KINDS:
        raise TdslError(f"rows_int8 runs the paths {', '.join(KINDS)}, not {path!r}")
    N, K = trits.shape
    panels = mk.panels_of(KINDS[path])(trits[:, :, None, None]).reshape(-1)
    nb = -(-N // mk.NR)
    corr = np.zeros(nb * mk.NR, np.int32)
    corr[:N] = 128 * trits.sum(axis=1, dtype=np.int32)
    return RowPanels(panels, corr, N, K, path)


@njit(cache=True, parallel=True)
def _quantize_u8(x, xu, xs, sums):
    """xu[b, :K] = xq + 128 of row b (its scale into xs[b]), xu[b, K:] = 128."""
    B, K = x.shape
    lo = np.float32(-127.0)
    hi = np.float32(127.0)
    for b in prange(B):
        amax = np.float32(0.0)
        for k in range(K):
            a = abs(x[b, k])
            if a > amax:
                amax = a
        row = xu[b]
        inv, nonzero = token_scale(amax, xs, sums, b)
        if nonzero:
            for k in range(K):
                q = min(max(np.rint(x[b, k] * inv), lo), hi)
                row[k] = np.uint8(np.int32(q) + 128)
        else:
            row[:K] = 128
        row[K:] = 128


@njit(cache=True, parallel=True)
def _rows_gemm(kind, panels, corr, npairs, xu, offs, B, xs, s, bias, res, act, y, rows_per_task):
    """y [B, N] from the u8 rows xu (flat, rows at offs) and the panels (module docstring)."""
    N = y.shape[1]
    nr = mk.NR
    mr = mk.MR
    nblocks = (N + nr - 1) // nr
    nrt = (B + rows_per_task - 1) // rows_per_task
    block_bytes = npairs * 2 * nr
    for task in prange(nblocks * nrt):
        blk = task // nrt
        r0 = (task - blk * nrt) * rows_per_task
        r1 = min(B, r0 + rows_per_task)
        o0 = blk * nr
        no = min(nr, N - o0)
        acc = np.empty(mr * nr, np.int32)
        cb = np.empty(nr, np.int32)  # the block's constants in task-local arrays: the loop below then
        sv = np.empty(nr, np.float32)  # reads no array it might write, and vectorises (~5 cycles an
        bv = np.zeros(nr, np.float32)  # output scalar: 40 % of a 64 x 768 x 768 prefill linear)
        val = np.empty(nr, np.float32)
        for o in range(no):
            cb[o] = corr[o0 + o]
            sv[o] = s[o0 + o]
            bv[o] = bias[o0 + o]
        for m0 in range(r0, r1, mr):
            mk.tile(kind, panels, blk * block_bytes, xu, offs, m0, 1, npairs, acc, 0, nr)
            for m in range(min(mr, r1 - m0)):
                b = m0 + m
                sb = xs[b]
                for o in range(nr):
                    a = np.int32(acc[m * nr + o] - cb[o])
                    val[o] = np.float32(np.float32(np.float32(a) * (sb * sv[o])) + bv[o])
                dst = y[b, o0:o0 + no]
                dst[:] = val[:no]
                if res.shape[0] != 0:
                    r = res[b, o0:o0 + no]
                    for o in range(no):
                        dst[o] = np.float32(dst[o] + r[o])
                if act != 0:
                    for o in range(no):
                        dst[o] = activation(dst[o], act)


_NO_RES = np.zeros((0, 0), np.float32)


def runs(path: str, rows: int) -> bool:
    """Whether a linear of `rows` tokens on kernel `path` runs here: AVX2 and AVX-512 VNNI from
    MIN_ROWS rows (the portable path keeps `gemm`'s row kernels). On VNNI the avx512-vnni tile
    on s8 k4x32 panels replaced `conv_int8`'s 2-bit panels, which decode the weights every call
    (VNNI_GAIN)."""
    return path in ("avx2", "vnni") and rows >= MIN_ROWS


def quantize_rows(x: np.ndarray, workspace: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xu uint8 flat [Bp*cp], offs int64 [Bp], xs float32 [B]) of x float32 [B, K] (module
    docstring); reusable for every layer that reads x."""
    B, K = x.shape
    cp = mk.padded_channels(K)
    Bp = -(-B // mk.MR) * mk.MR
    xu = _buffer(workspace, "rows_u8", Bp * cp, np.uint8)
    xs = _buffer(workspace, "rows_xs", B, np.float32)
    sums = _buffer(workspace, "rows_sums", B, np.int32)
    x2 = xu[:Bp * cp].reshape(Bp, cp)
    x2[B:] = 128
    _quantize_u8(x, x2, xs, sums)
    offs = np.arange(Bp, dtype=np.int64) * cp
    return xu[:Bp * cp], offs, xs


def _buffer(ws: dict | None, name: str, n: int, dtype: type) -> np.ndarray:
    """n elements of workspace buffer `name` (grown when too small), or a new array."""
    size = n * np.dtype(dtype).itemsize
    if ws is None:
        return np.empty(n, dtype)
    buf = ws.get(name)
    if buf is None or buf.nbytes < size:
        buf = ws[name] = np.empty(-(-size // 4), np.float32)
    return buf.view(np.uint8)[:size].view(dtype)


def linear_quantized_into(y: np.ndarray, rows: tuple[np.ndarray, np.ndarray, np.ndarray], w: RowPanels,
                          s: np.ndarray, bias: np.ndarray, res: np.ndarray, act: int, path: str = "avx2") -> None:
    """y [B, N] = act(rows . (s*T)^T + bias + res) from `quantize_rows`' output."""
    xu, offs, xs = rows
    B, N = y.shape
    if path not in KINDS:
        raise TdslError(f"rows_int8 runs the paths {', '.join(KINDS)}, not {path!r}")
    if w.path != path and mk.panels_of(KINDS[w.path]) is not mk.panels_of(KINDS[path]):
        raise TdslError(f"rows_int8: panels built for path {w.path!r} cannot run on {path!r} (another layout)")
    if N != w.n or xu.size != offs.size * mk.padded_channels(w.k) or xs.size != B:
        raise TdslError(f"rows_int8: y {y.shape} does not match the panels' {w.n} outputs or the rows' {xs.size} "
                        f"tokens of {w.k} inputs")
    s = np.broadcast_to(np.asarray(s, np.float32), (N,))
    _rows_gemm(KINDS[path], w.panels, w.corr, w.npairs, xu, offs, B, xs, np.ascontiguousarray(s), bias,
               res if res.size else _NO_RES, act, y, max(mk.MR, ROWS_PER_TASK // mk.MR * mk.MR))


def linear_into(y: np.ndarray, x: np.ndarray, w: RowPanels, s: np.ndarray, bias: np.ndarray, res: np.ndarray,
                act: int, path: str = "avx2", workspace: dict | None = None) -> None:
    """y [B, N] = act(x . (s*T)^T + bias + res) with per-token int8 x (module docstring).

    x float32 C-contiguous [B, K]; res [B, N] float32 or empty; act an activation code."""
    if x.dtype != np.float32 or not x.flags.c_contiguous or x.ndim != 2 or x.shape[1] != w.k:
        raise TdslError(f"rows_int8: x must be C-contiguous float32 [B, {w.k}], got {x.dtype} {x.shape}")
    linear_quantized_into(y, quantize_rows(x, workspace), w, s, bias, res, act, path)


def kernels() -> list:
    """The Numba dispatchers of this module (for cache statistics)."""
    return [_quantize_u8, _rows_gemm]
