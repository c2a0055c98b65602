"""LM head GEMVs that read the head at 1 or 2 bytes a weight: int8 x int8 and fp16.

A decoder's LM head (vocab x d) is its largest single read per token: 197 MB at float32 for
d 1536 and vocab 32000, 1.3 GB for BitNet-b1.58-2B-4T's 128256 x 2560. Two storages:

* int8 (`Int8Head`): one int8 row per vocabulary entry with a float32 scale (absmax / 127,
  round half to even), and int8 per-token activations (the same codes the ternary projections
  take, `tdsl.runtime.quant_act`): y[b, r] = float32(sum_k xq[b, k] * w8[r, k]) * (xs[b] *
  scale[r]), the sum exact in int32 (|sum| <= 127^2 K < 2^31 for K < 133 000). The columns are
  stored in the de-interleaved order of the activation codes (xq[b, j*K4p + i] holds x[4i + j],
  zero padded), so the head reads the codes the final RMSNorm writes (`llm_kernels
  .rms_norm_quant`) with no reshuffle. Error: the weight's rounding (<= scale/2 per weight) and
  the activation's (<= xs/2 per element); its perplexity cost is in docs/results/bench_llm.md.
* fp16 (`Fp16Head`): the rows as IEEE half (stored as uint16: Numba has no float16 on the
  CPU), float32 activations, float32 sums. Where the head's weights are fp16 values already
  (`tdsl import` and the b1.58 freeze store the head at fp16), this is the float32 head's
  arithmetic on the same numbers, at half its bytes; only the summation order differs.

Fast paths (one parallel region, each thread a contiguous slice of rows, so each streams
one run of memory): "avx2" for int8, AVX2 `vpsignb` + `vpmaddubsw` (|x| as u8 times w*sign(x)
as s8, pairs in i16: at most 2 * 127 * 127 = 32258, no saturation) + `vpmaddwd` with ones;
"f16c" for fp16, `vcvtph2ps` (LLVM's fpext of <8 x half> on a target with F16C) and FMA.
"portable" is plain Numba with the same integers (int8) or the same conversion (fp16, by a
table of all 65536 halves); every path can be forced (`path=`) from a test.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from tdsl.errors import TdslError
from tdsl.runtime import isa
from tdsl.runtime.quant_act import plane_stride, quantize_deinterleave

_HAS_AVX2 = isa.has("avx2")
_HAS_F16C = isa.usable(("f16c", "fma"))
"""Read once at import, as constants: the kernels prune the branches this CPU cannot run."""
FP16_LANES = 32
"""fp16 rows are padded with zeros to a multiple of this many weights (four <8 x half> loads)."""


def int8_paths() -> tuple[str, ...]:
    return ("portable",) + (("avx2",) if _HAS_AVX2 else ())


def fp16_paths() -> tuple[str, ...]:
    return ("portable",) + (("f16c",) if _HAS_F16C else ())


# ---------------------------------------------------------------------------------------
# int8 x int8


_V8I16 = isa.V8I16
_V16I16 = isa.V16I16


PREFETCH_BYTES = 1024
"""How far ahead of a head row's stream both GEMVs prefetch (`isa.prefetch_line`). 32000 x
1536 from DRAM, one thread, one process A/B on the 2-core Zen 3 guest: int8 16.2 -> 19.5 GB/s
(2048 ahead: 18.8), fp16 14.5 -> 16.1 (2048: 14.5, 4096: 13.8); two threads, fp16: 24.3 ->
26.9 GB/s."""
_UNROLL = 4
"""Chunks per pass of the vector loops, each into its own accumulator (rows are a multiple of
8 chunks: int8 rows are 4*K4p bytes, a multiple of 256; fp16 rows are padded to FP16_LANES)."""


def _ptr(context, builder, aryty, ary, offset, elem, vecty):  # noqa: ANN001, ANN202 - llvmlite codegen
    return builder.bitcast(builder.gep(isa.data_ptr(context, builder, aryty, ary, elem), [offset]), vecty.as_pointer())


@intrinsic
def _dot_i8_avx2(typingctx, w, woff, x, xabs, xoff, nchunks):
    """int32 sum_i w[woff + i] * x[xoff + i] over nchunks*32 int8 bytes i (both signed);
    xabs = |x| (as u8), made once per call since every row reads it."""
    sig = types.int32(w, woff, x, xabs, xoff, nchunks)

    def codegen(context, builder, signature, args):
        wv, woffv, xv, xav, xoffv, nv = args
        wp = _ptr(context, builder, signature.args[0], wv, woffv, isa.I8, isa.V32I8)
        xp = _ptr(context, builder, signature.args[2], xv, xoffv, isa.I8, isa.V32I8)
        ap = _ptr(context, builder, signature.args[3], xav, xoffv, isa.I8, isa.V32I8)
        sign = cgutils.get_or_insert_function(builder.module, ir.FunctionType(isa.V32I8, [isa.V32I8, isa.V32I8]),
                                              "llvm.x86.avx2.psign.b")
        wd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(isa.V8I32, [_V16I16, _V16I16]),
                                            "llvm.x86.avx2.pmadd.wd")
        ones = ir.Constant(_V16I16, [1] * 16)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(isa.V8I32, None)) for _ in range(_UNROLL)]
        step = ir.Constant(nv.type, _UNROLL)
        with cgutils.for_range(builder, builder.udiv(nv, step)) as loop:
            for h in range(_UNROLL):
                i = builder.add(builder.mul(loop.index, step), ir.Constant(nv.type, h))
                if h % 2 == 0:  # one prefetch per 64-byte line of weights
                    isa.prefetch_line(builder, builder.gep(wp, [builder.add(i, ir.Constant(nv.type, PREFETCH_BYTES // 32))]))
                wc = builder.load(builder.gep(wp, [i]), align=1)
                xc = builder.load(builder.gep(xp, [i]), align=1)
                p16 = isa.pmaddubsw(builder, builder.load(builder.gep(ap, [i]), align=1), builder.call(sign, [wc, xc]))
                builder.store(builder.add(builder.load(accs[h]), builder.call(wd, [p16, ones])), accs[h])
        total = builder.load(accs[0])
        for h in range(1, _UNROLL):
            total = builder.add(total, builder.load(accs[h]))
        out = builder.extract_element(total, ir.Constant(isa.I32, 0))
        for i in range(1, 8):
            out = builder.add(out, builder.extract_element(total, ir.Constant(isa.I32, i)))
        return out

    return sig, codegen


@njit(cache=True, inline="always")
def _dot_i8_portable(w, r, x, b):
    acc = np.int32(0)
    for k in range(w.shape[1]):
        acc += np.int32(w[r, k]) * np.int32(x[b, k])
    return acc


@njit(cache=True, parallel=True)
def _gemv_i8(kind, xq, xabs, xs, w8, scale, y, chunks):
    rows, kp = w8.shape
    batch = y.shape[0]
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        for r in range(c * per, min(rows, (c + 1) * per)):
            for b in range(batch):
                if kind == 1 and _HAS_AVX2:  # a constant: pruned where the CPU lacks AVX2
                    acc = _dot_i8_avx2(w8, r * kp, xq, xabs, b * xq.shape[1], kp // 32)
                else:
                    acc = _dot_i8_portable(w8, r, xq, b)
                y[b, r] = np.float32(acc) * (xs[b] * scale[r])


def quantize_rows_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [R, K] float -> (int8 [R, K], float32 scale [R]) with w ~ scale[:, None] * q."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


@dataclass
class Int8Head:
    """An LM head as int8 rows in the activation codes' de-interleaved column order."""

    w8: np.ndarray
    """int8 [R, 4*K4p]: w8[r, j*K4p + i] = q[r, 4i + j], zero padded."""
    scale: np.ndarray
    """float32 [R]."""
    features: int
    """K, the activation width."""

    @classmethod
    def from_weight(cls, w: np.ndarray) -> Int8Head:
        """From the float weight [R, K] (vocabulary rows)."""
        q, scale = quantize_rows_int8(w)
        rows, k = q.shape
        k4p = plane_stride(k)
        padded = np.zeros((rows, 4 * k4p), np.int8)
        padded[:, :k] = q
        # column 4i + j -> j*K4p + i
        w8 = padded[:, :4 * k4p].reshape(rows, k4p, 4).transpose(0, 2, 1).reshape(rows, 4 * k4p)
        return cls(np.ascontiguousarray(w8), scale, k)

    @property
    def nbytes(self) -> int:
        return self.w8.nbytes + self.scale.nbytes

    def dequantized(self) -> np.ndarray:
        """The float32 weight [R, K] this head multiplies by (for tests and error bounds)."""
        rows = self.w8.shape[0]
        k4p = self.w8.shape[1] // 4
        q = self.w8.reshape(rows, 4, k4p).transpose(0, 2, 1).reshape(rows, 4 * k4p)[:, :self.features]
        return q.astype(np.float32) * self.scale[:, None]

    def apply_quantized(self, xq: np.ndarray, xs: np.ndarray, out: np.ndarray, path: str = "auto") -> None:
        """out [B, R] from activation codes xq int8 [>=B, 4*K4p] and scales xs [B] (as
        `quant_act.quantize_deinterleave` or `llm_kernels.rms_norm_quant` give them)."""
        batch = xs.shape[0]
        if xq.dtype != np.int8 or xq.ndim != 2 or xq.shape[1] != self.w8.shape[1] or xq.shape[0] < batch \
                or out.shape != (batch, self.w8.shape[0]):
            raise TdslError(f"int8 head [{self.w8.shape[0]}, {self.features}]: codes {xq.shape} {xq.dtype}, "
                            f"{batch} scales and output {out.shape} do not fit")
        xabs = np.abs(xq[:batch]).view(np.uint8)  # |-127..127| fits int8; read as u8 by vpmaddubsw
        _gemv_i8(_kind(path, int8_paths(), "avx2"), xq, xabs, xs, self.w8, self.scale, out, _chunks(self.w8.shape[0]))

    def __call__(self, x: np.ndarray, path: str = "auto") -> np.ndarray:
        """x float32 [..., K] -> logits [..., R]: quantises x per token, then `apply_quantized`."""
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        if x2.shape[1] != self.features:
            raise TdslError(f"int8 head takes {self.features} features, got {x.shape}")
        xq, xs, _ = quantize_deinterleave(x2)
        y = np.empty((x2.shape[0], self.w8.shape[0]), np.float32)
        self.apply_quantized(xq, xs, y, path)
        return y.reshape(*x.shape[:-1], self.w8.shape[0])


# ---------------------------------------------------------------------------------------
# fp16


@intrinsic
def _dot_f16c(typingctx, w, woff, x, xoff, nblocks):
    """float32 sum_i half(w[woff + i]) * x[xoff + i] over nblocks*FP16_LANES weights i (w uint16)."""
    sig = types.float32(w, woff, x, xoff, nblocks)

    def codegen(context, builder, signature, args):
        wv, woffv, xv, xoffv, nv = args
        f32 = ir.FloatType()
        v8h, v8f = ir.VectorType(ir.HalfType(), 8), ir.VectorType(f32, 8)
        wp = builder.bitcast(builder.gep(isa.data_ptr(context, builder, signature.args[0], wv, isa.I16), [woffv]),
                             v8h.as_pointer())
        xp = builder.bitcast(builder.gep(isa.data_ptr(context, builder, signature.args[2], xv, f32), [xoffv]),
                             v8f.as_pointer())
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), "llvm.fma.v8f32")
        accs = [cgutils.alloca_once_value(builder, ir.Constant(v8f, None)) for _ in range(_UNROLL)]
        step = ir.Constant(nv.type, _UNROLL)
        with cgutils.for_range(builder, nv) as loop:  # a pass: 64 bytes of weights, one line
            isa.prefetch_line(builder, builder.gep(wp, [builder.add(builder.mul(loop.index, step),
                                                                ir.Constant(nv.type, PREFETCH_BYTES // 16))]))
            for h in range(_UNROLL):
                i = builder.add(builder.mul(loop.index, step), ir.Constant(nv.type, h))
                wf = builder.fpext(builder.load(builder.gep(wp, [i]), align=2), v8f)
                xf = builder.load(builder.gep(xp, [i]), align=4)
                builder.store(builder.call(fma, [wf, xf, builder.load(accs[h])]), accs[h])
        total = builder.fadd(builder.fadd(builder.load(accs[0]), builder.load(accs[1])),
                             builder.fadd(builder.load(accs[2]), builder.load(accs[3])))
        out = builder.extract_element(total, ir.Constant(isa.I32, 0))
        for i in range(1, 8):
            out = builder.fadd(out, builder.extract_element(total, ir.Constant(isa.I32, i)))
        return out

    return sig, codegen


HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
"""float32 of every fp16 bit pattern: the portable path's exact conversion (a 256 KB table)."""


@njit(cache=True, inline="always")
def _dot_f16_portable(w, r, x, b, table):
    acc = np.float32(0.0)
    for k in range(w.shape[1]):
        acc += table[w[r, k]] * x[b, k]
    return acc


@njit(cache=True, parallel=True)
def _gemv_f16(kind, x, w16, table, y, chunks):
    rows, kp = w16.shape
    batch = y.shape[0]
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        for r in range(c * per, min(rows, (c + 1) * per)):
            for b in range(batch):
                if kind == 1 and _HAS_F16C:
                    y[b, r] = _dot_f16c(w16, r * kp, x, b * kp, kp // FP16_LANES)
                else:
                    y[b, r] = _dot_f16_portable(w16, r, x, b, table)


@dataclass
class Fp16Head:
    """An LM head as fp16 rows (uint16 bits), zero padded to a multiple of FP16_LANES."""

    w16: np.ndarray
    """uint16 [R, Kp]."""
    features: int

    @classmethod
    def from_weight(cls, w: np.ndarray) -> Fp16Head:
        rows, k = w.shape
        kp = -(-k // FP16_LANES) * FP16_LANES
        padded = np.zeros((rows, kp), np.float16)
        padded[:, :k] = w
        return cls(padded.view(np.uint16), k)

    @property
    def nbytes(self) -> int:
        return self.w16.nbytes

    def __call__(self, x: np.ndarray, path: str = "auto") -> np.ndarray:
        """x float32 [..., K] -> logits [..., R] = x . half(w)^T in float32."""
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        y = np.empty((x2.shape[0], self.w16.shape[0]), np.float32)
        self.into(y, x2, path)
        return y.reshape(*x.shape[:-1], self.w16.shape[0])

    def into(self, y: np.ndarray, x2: np.ndarray, path: str = "auto") -> None:
        """y float32 [B, R] = x2 [B, K] . half(w)^T: one parallel region, a slice of rows a thread."""
        if x2.ndim != 2 or x2.shape[1] != self.features:
            raise TdslError(f"fp16 head takes {self.features} features, got {x2.shape}")
        kp = self.w16.shape[1]
        xp = np.ascontiguousarray(x2, dtype=np.float32)
        if kp != self.features:
            xp = np.pad(xp, ((0, 0), (0, kp - self.features)))
        _gemv_f16(_kind(path, fp16_paths(), "f16c"), xp, self.w16, HALF_TO_FLOAT, y, _chunks(self.w16.shape[0]))


@functools.cache
def _band_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="tdsl-head")


def float_head_into(y: np.ndarray, x: np.ndarray, weight_t: np.ndarray, workers: int) -> None:
    """y [B, R] = x [B, K] @ weight_t [K, R] (float32 BLAS) in `workers` bands of head rows (R),
    each on its own Python thread. For many token rows (prefill) BLAS beats the GEMV kernels,
    but the runtime holds BLAS at one thread (`executor._single_threaded_blas`: Numba's OpenMP
    workers own the cores); numpy releases the GIL in BLAS, so the bands run at once, each
    reading its own part of the weight. Each logit is one BLAS dot product over K either way."""
    rows = weight_t.shape[1]
    workers = max(1, min(workers, rows // 256))
    if workers == 1:
        np.matmul(x, weight_t, out=y)
        return
    edges = [rows * i // workers for i in range(workers + 1)]
    jobs = [_band_pool(workers).submit(np.matmul, x, weight_t[:, lo:hi], out=y[:, lo:hi])
            for lo, hi in zip(edges[:-1], edges[1:])]
    for job in jobs:
        job.result()


def exact_in_fp16(w: np.ndarray) -> bool:
    """True when every weight is an fp16 value (the fp16 head then changes no weight)."""
    w = np.asarray(w, np.float32)
    with np.errstate(over="ignore"):
        return bool(np.array_equal(w.astype(np.float16).astype(np.float32), w))


# ---------------------------------------------------------------------------------------


def _kind(path: str, available: tuple[str, ...], fast: str) -> int:
    if path == "auto":
        return 1 if fast in available else 0
    if path not in available:
        raise TdslError(f"LM head path {path!r} is not available here: valid are {', '.join(available)}, 'auto'")
    return 1 if path == fast else 0


def _chunks(rows: int) -> int:
    """One contiguous slice of rows per thread: one parallel region, one stream each."""
    return max(1, min(rows, numba.get_num_threads()))


def kernels() -> list:
    """The Numba dispatchers of this module (for cache statistics)."""
    return [_gemv_i8, _gemv_f16]
