"""Ternary linear layers on packed weights: y = act(x . (s*T)^T + bias + residual), CPU kernels.

Shapes and dtypes: x float32 [B, K]; packed uint8 [N, ceil(K/4)] in the "2bit" layout of
`tdsl.runtime.packing` (docs/PACKED_FORMAT.md: codes c = t + 1, byte i of a row holds
k = 4i .. 4i+3, rows not padded); scale float32 [N] or a scalar; bias float32 [N];
residual float32 [B, N]; result float32 [B, N]. Semantics: `tdsl.runtime.reference`.

Paths (KERNELS.md has the measurements behind each choice):
* act_quant="int8" (default): activations are quantised per token (per row of x) to int8
  and de-interleaved (`quant_act`), the kernel forms the exact integer sums
  acc = sum_k xq*c - sum_k xq = sum_k xq*t, and the epilogue computes
  act(float32(acc) * (xs[b]*s[n]) + bias[n] + residual[b, n]). Relative error vs the
  float64 reference is about 1e-2 (the int8 activations). Three kernels, same integers:
  - "vnni": AVX-512 VNNI `vpdpbusd` (u8 codes x s8 activations -> int32) emitted through
    llvmlite intrinsics, because LLVM never forms it from Numba loops. B = 1: mask-only
    decode (plane j is `w & (3 << 2j)` = c_j * 4^j, one accumulator per plane, recombined
    exactly as a0 + (a1 >> 2) + (a2 >> 4) + (a3 >> 6)), one row per pass (a single
    sequential weight stream per thread is fastest from DRAM), prange over row blocks.
    B >= 2: 4 weight rows x 4 batch rows per pass, shift decode, each decoded chunk reused
    for 4 batch rows (the batch is zero-padded to a multiple of 4).
  - "avx2": for CPUs without AVX-512 VNNI; AVX2 `vpmaddubsw` (u8 codes x s8 activations,
    adjacent pairs summed to i16, never saturating since codes <= 2 and |xq| <= 127), i16
    partial sums over groups of 32-byte chunks, widened by `vpmaddwd` with ones to int32
    (`_dot_avx2`: "mixed" decode, one row per pass as for VNNI; B >= 2 redoes the decode per
    batch row, and executors run linear layers with >= 5 rows on `conv_int8`'s AVX2 tile,
    `conv_int8.LINEAR_MIN_ROWS`).
  - "portable": plain Numba whose integer typing lets LLVM vectorise it (no intrinsics);
    chosen automatically when the CPU has neither (`cpu_features`).
  B = 1, 4096 x 4096, 2 threads, AMD EPYC Zen 4 (2 vCPUs shared with other jobs: +-30 % run
  to run, so compare within a run), `ternary_linear` incl. quantisation, medians, vs torch
  int8 dynamic (quantize_dynamic of nn.Linear(4096, 4096)) in the same process:
  | run | torch int8 | portable | avx2 | vnni |
  | 1 | 0.169 ms | 0.466 (0.36x) | 0.147 (1.14x) | 0.111 (1.52x) |
  | 2 | 0.154 ms | 0.417 (0.37x) | 0.107 (1.44x) | 0.113 (1.36x) |
  | 3 | 0.184 ms | 0.465 (0.40x) | 0.146 (1.26x) | 0.113 (1.62x) |
  | 4 (Haswell code) | 0.162 ms | 0.662 (0.24x) | 0.138 (1.17x) | - |
  | 5 (Haswell code) | 0.159 ms | 0.764 (0.21x) | 0.158 (1.00x) | - |
  "Haswell code": NUMBA_CPU_NAME=haswell, i.e. what an AVX2-only CPU compiles (on the Zen 4
  host LLVM also uses GFNI for the byte shift and `vpdpwssd` for pmaddwd + add).
* act_quant="float": fp32 activations, no quantisation, error about 1e-6 relative. Use it
  where int8 activations are not acceptable: the first layer (raw pixels/embeddings) and the
  last (logits) of a network, accuracy checks, or whenever a caller asks for exact results.
  One plain Numba kernel serves every path (there is no integer arithmetic to accelerate).
* format "base3" has no fast kernel here: on the 2-core reference machine its decode makes it
  slower than "2bit" (KERNELS.md); `reference.ternary_linear(..., format="base3")` computes it.

Every kernel's result for act_quant="int8" has the same int32 accumulators on every path,
hence bitwise-identical outputs (the epilogue is shared). K is limited to 2^22 so that no
int32 accumulator can overflow (|acc| <= 127 * 2 * K per lane sum).
"""
from __future__ import annotations

import time

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from tdsl.errors import TdslError
from tdsl.runtime import activations, isa
from tdsl.runtime.cpu_features import has_avx2, has_avx512_vnni, kernel_path
from tdsl.runtime.packing import bytes_per_row
from tdsl.runtime.quant_act import PARALLEL_MIN_ROWS, deinterleave_float, quantize_deinterleave

activation = njit(inline="always", cache=True)(activations.apply)
"""`tdsl.runtime.activations.apply` compiled for the CPU: every CPU kernel's epilogue."""
ACT_QUANTS: tuple[str, ...] = ("int8", "float")
MAX_K = 1 << 22
ROWS_PER_TASK = 32  # rows per prange iteration (B = 1 and float kernels)
BLOCKS_PER_TASK = 8  # 4-row blocks per prange iteration (blocked VNNI kernel)

# ---------------------------------------------------------------------------------------
# VNNI intrinsics. Each takes arrays (any C layout: only their data pointer is used) plus
# byte offsets, and walks `nchunks` 64-byte chunks of packed weights; plane j of the
# de-interleaved activations starts j * k4p bytes after the activation offset.

_V64I8 = ir.VectorType(ir.IntType(8), 64)
_V16I32 = ir.VectorType(ir.IntType(32), 16)
_I32 = ir.IntType(32)


def _chunk_ptr(context, builder, aryty, ary, offset):
    """<64 x i8>* at byte `offset` of the array's data."""
    data = context.make_array(aryty)(context, builder, ary).data
    ptr = builder.gep(builder.bitcast(data, ir.IntType(8).as_pointer()), [offset])
    return builder.bitcast(ptr, _V64I8.as_pointer())


def _load(builder, base, index):
    return builder.load(builder.gep(base, [index]), align=1)


def _hsum(builder, v):
    total = builder.extract_element(v, ir.Constant(_I32, 0))
    for i in range(1, 16):
        total = builder.add(total, builder.extract_element(v, ir.Constant(_I32, i)))
    return total


def _splat8(value):
    return ir.Constant(_V64I8, [value] * 64)


def _chunk_ptrs(context, builder, aryty, ary, offset, stride, count):
    """`_chunk_ptr` at byte offset + i*stride for i < count (weight rows, activation planes)."""
    return [_chunk_ptr(context, builder, aryty, ary,
                       builder.add(offset, builder.mul(stride, ir.Constant(stride.type, i))))
            for i in range(count)]


def _shift_plane(builder, chunk, j):
    """The u8 codes of quad j of 64 packed bytes: (chunk >> 2j) & 3, the shift decode."""
    c = chunk if j == 0 else builder.lshr(chunk, _splat8(2 * j))
    return builder.and_(c, _splat8(3)) if j < 3 else c


def _zero_accs(builder, rows, cols):
    """rows x cols stack slots of <16 x i32> accumulators, set to zero."""
    zero = ir.Constant(_V16I32, None)
    return [[cgutils.alloca_once_value(builder, zero) for _ in range(cols)] for _ in range(rows)]


@intrinsic
def _dot_mask_vnni(typingctx, w, woff, x, xoff, k4p, nchunks):
    """int32 sum_i sum_j c_j(w[woff + i]) * x[xoff + j*k4p + i] over nchunks*64 bytes i."""
    sig = types.int32(w, woff, x, xoff, k4p, nchunks)

    def codegen(context, builder, signature, args):
        wv, woffv, xv, xoffv, k4pv, nv = args
        wp = _chunk_ptr(context, builder, signature.args[0], wv, woffv)
        xp = _chunk_ptrs(context, builder, signature.args[2], xv, xoffv, k4pv, 4)
        accs = _zero_accs(builder, 1, 4)[0]
        with cgutils.for_range(builder, nv) as loop:
            # chunk c sits 64*c bytes on, i.e. index c of a <64 x i8>* pointer
            wchunk = _load(builder, wp, loop.index)
            for j in range(4):
                plane = builder.and_(wchunk, _splat8(3 << (2 * j)))
                xj = _load(builder, xp[j], loop.index)
                builder.store(isa.dpbusd(builder, builder.load(accs[j]), plane, xj), accs[j])
        total = builder.load(accs[0])
        for j in range(1, 4):
            shift = ir.Constant(_V16I32, [2 * j] * 16)
            total = builder.add(total, builder.ashr(builder.load(accs[j]), shift))
        return _hsum(builder, total)

    return sig, codegen


def _hsum16(builder, v):
    """The sum of a <16 x i32>'s lanes by halving shuffles (`_hsum8` of its two halves' sum)."""
    v8 = ir.VectorType(_I32, 8)
    lo = builder.shuffle_vector(v, v, ir.Constant(v8, list(range(8))))
    hi = builder.shuffle_vector(v, v, ir.Constant(v8, list(range(8, 16))))
    return _hsum8(builder, builder.add(lo, hi))


PREFETCH_LINES_VNNI = 32
"""How far ahead `_dot_rows_vnni` prefetches the weight stream, in 64-byte chunks (2 KiB, as
`_dot_rows_avx2`)."""


@intrinsic
def _dot_rows_vnni(typingctx, w, woff, wstride, x, xoff, k4p, nchunks, nrows, out, ooff):
    """out[ooff + r] = `_dot_mask_vnni`(w, woff + r*wstride, x, xoff, k4p, nchunks) for r < nrows:
    the same integers (the same four plane accumulators, the same shifts), with the row loop
    inside one function (activation pointers and masks stay in registers), a `prefetcht0`
    PREFETCH_LINES_VNNI lines ahead of each chunk, and the horizontal sum by shuffles. The
    activation planes should be 64-byte aligned (`_aligned_codes`): four of a chunk's five
    loads are activations, and a zmm load across two lines costs two."""
    sig = types.none(w, woff, wstride, x, xoff, k4p, nchunks, nrows, out, ooff)

    def codegen(context, builder, signature, args):
        wv, woffv, wsv, xv, xoffv, k4pv, nv, nrv, outv, ooffv = args
        ity = nv.type
        xp = _chunk_ptrs(context, builder, signature.args[3], xv, xoffv, k4pv, 4)
        outp = context.make_array(signature.args[8])(context, builder, outv).data
        zero = ir.Constant(_V16I32, None)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
        with cgutils.for_range(builder, nrv) as row:
            wp = _chunk_ptr(context, builder, signature.args[0], wv, builder.add(woffv, builder.mul(wsv, row.index)))
            for j in range(4):
                builder.store(zero, accs[j])
            with cgutils.for_range(builder, nv) as loop:
                isa.prefetch_line(builder, builder.gep(wp, [builder.add(loop.index, ir.Constant(ity, PREFETCH_LINES_VNNI))]))
                wchunk = _load(builder, wp, loop.index)
                for j in range(4):
                    plane = builder.and_(wchunk, _splat8(3 << (2 * j)))
                    xj = builder.load(builder.gep(xp[j], [loop.index]), align=64)
                    builder.store(isa.dpbusd(builder, builder.load(accs[j]), plane, xj), accs[j])
            total = builder.load(accs[0])
            for j in range(1, 4):
                total = builder.add(total, builder.ashr(builder.load(accs[j]), ir.Constant(_V16I32, [2 * j] * 16)))
            builder.store(_hsum16(builder, total), builder.gep(outp, [builder.add(ooffv, row.index)]))
        return context.get_dummy_value()

    return sig, codegen


def _make_block_vnni(nr: int, nbt: int):
    """Intrinsic adding an nr x nbt block of dot products into out[ooff + r*nbt + b]."""

    @intrinsic
    def block(typingctx, w, woff, wstride, x, xoff, xstride, k4p, nchunks, out, ooff):
        sig = types.none(w, woff, wstride, x, xoff, xstride, k4p, nchunks, out, ooff)

        def codegen(context, builder, signature, args):
            wv, woffv, wsv, xv, xoffv, xsv, k4pv, nv, outv, ooffv = args
            wps = _chunk_ptrs(context, builder, signature.args[0], wv, woffv, wsv, nr)
            xps = [[_chunk_ptr(context, builder, signature.args[3], xv,
                               builder.add(xoffv, builder.add(
                                   builder.mul(xsv, ir.Constant(xsv.type, b)),
                                   builder.mul(k4pv, ir.Constant(k4pv.type, j)))))
                    for j in range(4)] for b in range(nbt)]
            accs = _zero_accs(builder, nr, nbt)
            with cgutils.for_range(builder, nv) as loop:
                wch = [_load(builder, wps[r], loop.index) for r in range(nr)]
                for j in range(4):
                    xj = [_load(builder, xps[b][j], loop.index) for b in range(nbt)]
                    for r in range(nr):
                        c = _shift_plane(builder, wch[r], j)
                        for b in range(nbt):
                            acc = isa.dpbusd(builder, builder.load(accs[r][b]), c, xj[b])
                            builder.store(acc, accs[r][b])
            out_ary = context.make_array(signature.args[8])(context, builder, outv)
            for r in range(nr):
                for b in range(nbt):
                    idx = builder.add(ooffv, ir.Constant(ooffv.type, r * nbt + b))
                    ptr = builder.gep(out_ary.data, [idx])
                    builder.store(builder.add(builder.load(ptr),
                                              _hsum(builder, builder.load(accs[r][b]))), ptr)
            return context.get_dummy_value()

        return sig, codegen

    return block


_dot_block_4x4_vnni = _make_block_vnni(4, 4)
_dot_block_1x4_vnni = _make_block_vnni(1, 4)

# ---------------------------------------------------------------------------------------
# AVX2 intrinsics (256-bit): `vpmaddubsw` (u8 codes x s8 activations, adjacent pairs summed
# to i16), partial sums kept in i16 over a group of chunks, then `vpmaddwd` with ones (i16
# pairs -> i32). Bounds (codes c <= 2, |xq| <= 127): a pmaddubsw lane is at most
# 2 * 2 * 127 = 508 per code scale, so the group sizes below keep every i16 sum <= 32512.

_V32I8 = ir.VectorType(ir.IntType(8), 32)
_V16I16 = ir.VectorType(ir.IntType(16), 16)
_V8I32 = ir.VectorType(ir.IntType(32), 8)


def _pmaddubsw(builder, u8, s8):
    fnty = ir.FunctionType(_V16I16, [_V32I8, _V32I8])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx2.pmadd.ub.sw")
    return builder.call(fn, [u8, s8])


def _pmaddwd_ones(builder, v16):
    fnty = ir.FunctionType(_V8I32, [_V16I16, _V16I16])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx2.pmadd.wd")
    return builder.call(fn, [v16, ir.Constant(_V16I16, [1] * 16)])


def _splat32(value):
    return ir.Constant(_V32I8, [value] * 32)


def _ymm_ptr(context, builder, aryty, ary, offset):
    """<32 x i8>* at byte `offset` of the array's data."""
    data = context.make_array(aryty)(context, builder, ary).data
    ptr = builder.gep(builder.bitcast(data, ir.IntType(8).as_pointer()), [offset])
    return builder.bitcast(ptr, _V32I8.as_pointer())


def _hsum8(builder, v):
    """The sum of an <8 x i32>'s lanes by halving shuffles (3 vector adds instead of 7 extracts
    and 7 scalar adds; integer adds wrap the same in any order)."""
    v4 = ir.VectorType(_I32, 4)
    s = builder.add(builder.shuffle_vector(v, v, ir.Constant(v4, [0, 1, 2, 3])),
                    builder.shuffle_vector(v, v, ir.Constant(v4, [4, 5, 6, 7])))
    s = builder.add(s, builder.shuffle_vector(s, s, ir.Constant(v4, [2, 3, 0, 1])))
    s = builder.add(s, builder.shuffle_vector(s, s, ir.Constant(v4, [1, 0, 3, 2])))
    return builder.extract_element(s, ir.Constant(_I32, 0))


_for_groups = isa.for_groups


def _mixed_chunk(builder, wp, xp, i, a16):  # noqa: ANN001
    """One 32-byte chunk i of codes in the "mixed" decode (`_dot_avx2`) into the two i16 sums
    a16 (planes 0 + 2 at scale 1, planes 1 + 3 at scale 4)."""
    wch = _load(builder, wp, i)
    w4 = builder.lshr(wch, _splat32(4))
    planes = [builder.and_(wch, _splat32(3)), builder.and_(wch, _splat32(12)),
              builder.and_(w4, _splat32(3)), builder.and_(w4, _splat32(12))]
    r = [_pmaddubsw(builder, planes[j], _load(builder, xp[j], i)) for j in range(4)]
    builder.store(builder.add(builder.load(a16[0]), builder.add(r[0], r[2])), a16[0])
    builder.store(builder.add(builder.load(a16[1]), builder.add(r[1], r[3])), a16[1])


def _widen_sums(builder, a16, a32) -> None:  # noqa: ANN001
    """a32[s] += the i16 sums a16[s] widened in pairs; a16 back to zero (after each group)."""
    for slot in range(2):
        builder.store(builder.add(builder.load(a32[slot]), _pmaddwd_ones(builder, builder.load(a16[slot]))), a32[slot])
        builder.store(ir.Constant(_V16I16, None), a16[slot])


@intrinsic
def _dot_avx2(typingctx, w, woff, x, xoff, k4p, nchunks):
    """int32 sum_i sum_j c_j(w[woff + i]) * x[xoff + j*k4p + i] over nchunks*32 bytes i.

    "Mixed" decode: planes 0 and 2 as codes (w & 3, (w >> 4) & 3), planes 1 and 3 as codes
    times 4 (w & 12, (w >> 4) & 12), so one shift serves two planes (5 ops instead of the
    shift decode's 7) and the two i16 sums (scale 1 and 4) recombine exactly as
    s1 + (s4 >> 2) at the end; 8 chunks per group keep the scale-4 sum <= 8 * 4064 = 32512.
    (The pure mask decode of the VNNI kernel does not fit: plane 3 times 64 would need an
    i32 widening per chunk.) Kernel alone, 4096 x 4096, 2 threads: 0.238 ms vs 0.259 for the
    shift decode (with the epilogue still out of line)."""
    sig = types.int32(w, woff, x, xoff, k4p, nchunks)

    def codegen(context, builder, signature, args):
        wv, woffv, xv, xoffv, k4pv, nv = args
        wp = _ymm_ptr(context, builder, signature.args[0], wv, woffv)
        xp = [_ymm_ptr(context, builder, signature.args[2], xv,
                       builder.add(xoffv, builder.mul(k4pv, ir.Constant(k4pv.type, j))))
              for j in range(4)]
        zero16 = ir.Constant(_V16I16, None)
        zero32 = ir.Constant(_V8I32, None)
        a16 = [cgutils.alloca_once_value(builder, zero16) for _ in range(2)]
        a32 = [cgutils.alloca_once_value(builder, zero32) for _ in range(2)]

        _for_groups(builder, nv, 8, lambda i: _mixed_chunk(builder, wp, xp, i, a16), lambda: _widen_sums(builder, a16, a32))
        total = builder.add(builder.load(a32[0]),
                            builder.ashr(builder.load(a32[1]), ir.Constant(_V8I32, [2] * 8)))
        return _hsum8(builder, total)

    return sig, codegen


PREFETCH_CHUNKS = 64
"""How far ahead of the weight stream `_dot_rows_avx2` prefetches, in 32-byte chunks (2 KiB):
on the 2-core Zen 3 guest, one thread from DRAM, 4096 x 1536 / 8192 x 1536 / 1536 x 4096,
10.5 / 10.8 / 13.3 GB/s without, 12.9 / 14.9 / 15.7 with (32 chunks: 12.3 / 11.3 / 14.8,
128: 13.9 / 11.2 / 13.3). The hardware prefetcher alone does not keep DRAM busy while the
core decodes."""




@intrinsic
def _dot_rows_avx2(typingctx, w, woff, wstride, x, xoff, k4p, nchunks, nrows, out, ooff):
    """out[ooff + r] = `_dot_avx2`(w, woff + r*wstride, x, xoff, k4p, nchunks) for r < nrows.

    The same integers as `_dot_avx2` (same decode, same i16 groups of 8 chunks), with the
    row loop inside one function (the activation pointers and constants stay in registers
    across rows), each group of 8 chunks straight-line (no per-chunk bound test), a
    `prefetcht0` PREFETCH_CHUNKS ahead once per 64-byte line, and the horizontal sum by
    shuffles (`_hsum8`). Activation planes should be 32-byte aligned (`_aligned_codes`): a load that
    straddles two cache lines costs two, and four of the five loads a chunk are activations."""
    sig = types.none(w, woff, wstride, x, xoff, k4p, nchunks, nrows, out, ooff)

    def codegen(context, builder, signature, args):
        wv, woffv, wsv, xv, xoffv, k4pv, nv, nrv, outv, ooffv = args
        ity = nv.type
        xp = [_ymm_ptr(context, builder, signature.args[3], xv,
                       builder.add(xoffv, builder.mul(k4pv, ir.Constant(k4pv.type, j))))
              for j in range(4)]
        outp = context.make_array(signature.args[8])(context, builder, outv).data
        zero16 = ir.Constant(_V16I16, None)
        zero32 = ir.Constant(_V8I32, None)
        a16 = [cgutils.alloca_once_value(builder, zero16) for _ in range(2)]
        a32 = [cgutils.alloca_once_value(builder, zero32) for _ in range(2)]
        group = ir.Constant(ity, 8)
        ngroups = builder.udiv(nv, group)
        done = builder.mul(ngroups, group)
        with cgutils.for_range(builder, nrv) as row:
            wp = _ymm_ptr(context, builder, signature.args[0], wv,
                          builder.add(woffv, builder.mul(wsv, row.index)))
            for slot in range(2):
                builder.store(zero32, a32[slot])

            def chunk(i, prefetch):
                if prefetch:
                    isa.prefetch_line(builder, builder.gep(wp, [builder.add(i, ir.Constant(ity, PREFETCH_CHUNKS))]))
                _mixed_chunk(builder, wp, xp, i, a16)

            def widen():
                _widen_sums(builder, a16, a32)

            for slot in range(2):
                builder.store(zero16, a16[slot])
            with cgutils.for_range(builder, ngroups) as grp:
                start = builder.mul(grp.index, group)
                for c in range(8):
                    chunk(builder.add(start, ir.Constant(ity, c)), c % 2 == 0)
                widen()
            with cgutils.for_range(builder, builder.sub(nv, done)) as rest:
                chunk(builder.add(done, rest.index), True)
            widen()
            total = builder.add(builder.load(a32[0]),
                                builder.ashr(builder.load(a32[1]), ir.Constant(_V8I32, [2] * 8)))
            builder.store(_hsum8(builder, total), builder.gep(outp, [builder.add(ooffv, row.index)]))
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------------------------------
# Shared epilogue: v (already scaled) -> act(v + bias + residual), stored in y[b, n].


@njit(inline="always", cache=True)
def _finish(v, b, n, bias, res, act, y):
    v = np.float32(v + bias[n])
    if res.shape[0] != 0:
        v = np.float32(v + res[b, n])
    y[b, n] = activation(v, act)


@njit(inline="always", cache=True)
def _finish_int(acc, b, n, xs, s, bias, res, act, y, yi):
    if yi.shape[0] != 0:
        yi[b, n] = acc
    _finish(np.float32(acc) * (xs[b] * s[n]), b, n, bias, res, act, y)


# ---------------------------------------------------------------------------------------
# "vnni" path


@njit(cache=True, parallel=True)
def _gemv_vnni(xq, sums, xs, packed, s, bias, res, act, y, yi):
    """`_gemm_vnni` for one row of x (decode), built as `_gemv_avx2` is: each task's rows in one
    `_dot_rows_vnni` call (prefetching, activations 64-byte aligned), then the epilogue. Same
    integers as `_dot_mask_vnni` row by row, so the same bits. 2-core Zen 5 guest, 2 threads,
    the 700M decoder's qkv / o / gate+up / down cycling through 600 MB of weights, GB/s of
    packed weights, row by row -> this (`_gemv_avx2` beside each in the same process):
    30.4 -> 40.0, 23.9 -> 34.5, 29.3 -> 35.8, 35.7 -> 35.4 (avx2 35.6 / 28.0 / 33.6 / 40.2 and
    38.7 / 33.5 / 34.3 / 37.6): the VNNI decode had been ~15 % behind the AVX2 one."""
    N, nb = packed.shape
    K4p = xq.shape[1] // 4
    nfull = nb // 64
    rem = nb - nfull * 64
    x, xoff = _aligned_codes(xq, 64)
    acc = np.empty(N, np.int32)
    for task in prange((N + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        lo = task * ROWS_PER_TASK
        hi = min(N, lo + ROWS_PER_TASK)
        _dot_rows_vnni(packed, lo * nb, nb, x, xoff, K4p, nfull, hi - lo, acc, lo)
        if rem > 0:
            tail = np.zeros(64, np.uint8)
            for n in range(lo, hi):
                for i in range(rem):
                    tail[i] = packed[n, nfull * 64 + i]
                acc[n] += _dot_mask_vnni(tail, 0, x, xoff + nfull * 64, K4p, 1)
        for n in range(lo, hi):
            _finish_int(np.int32(acc[n] - sums[0]), 0, n, xs, s, bias, res, act, y, yi)


@njit(cache=True, parallel=True)
def _gemm_vnni(xq, sums, xs, packed, s, bias, res, act, y, yi):
    N, nb = packed.shape
    B = y.shape[0]
    xstride = xq.shape[1]
    K4p = xstride // 4
    nfull = nb // 64
    rem = nb - nfull * 64
    nblocks = (N + 3) // 4
    for task in prange((nblocks + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK):
        tail = np.zeros((4, 64), np.uint8)
        out = np.zeros(16, np.int32)
        for blk in range(task * BLOCKS_PER_TASK, min(nblocks, (task + 1) * BLOCKS_PER_TASK)):
            n0 = blk * 4
            nr = min(4, N - n0)
            for r in range(nr):
                for i in range(rem):
                    tail[r, i] = packed[n0 + r, nfull * 64 + i]
            for b0 in range(0, B, 4):
                out[:] = 0
                xoff = b0 * xstride
                if nr == 4:
                    _dot_block_4x4_vnni(packed, n0 * nb, nb, xq, xoff, xstride, K4p, nfull, out, 0)
                    if rem > 0:
                        _dot_block_4x4_vnni(tail, 0, 64, xq, xoff + nfull * 64, xstride, K4p, 1,
                                            out, 0)
                else:
                    for r in range(nr):
                        _dot_block_1x4_vnni(packed, (n0 + r) * nb, nb, xq, xoff, xstride, K4p,
                                            nfull, out, 4 * r)
                        if rem > 0:
                            _dot_block_1x4_vnni(tail, 64 * r, 64, xq, xoff + nfull * 64, xstride,
                                                K4p, 1, out, 4 * r)
                for r in range(nr):
                    for bb in range(min(4, B - b0)):
                        _finish_int(np.int32(out[4 * r + bb] - sums[b0 + bb]), b0 + bb, n0 + r,
                                    xs, s, bias, res, act, y, yi)


# ---------------------------------------------------------------------------------------
# "avx2" path: 32-byte chunks; B >= 2 redoes the decode per batch row (linear layers with
# several rows run on `conv_int8`'s AVX2 micro-kernel instead, see LINEAR_MIN_ROWS there).


@njit(cache=True, parallel=True)
def _gemm_avx2(xq, sums, xs, packed, s, bias, res, act, y, yi):
    N, nb = packed.shape
    B = y.shape[0]
    xstride = xq.shape[1]
    K4p = xstride // 4
    nfull = nb // 32
    rem = nb - nfull * 32
    for task in prange((N + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        tail = np.zeros(32, np.uint8)
        for n in range(task * ROWS_PER_TASK, min(N, (task + 1) * ROWS_PER_TASK)):
            for i in range(rem):
                tail[i] = packed[n, nfull * 32 + i]
            for b in range(B):
                acc = _dot_avx2(packed, n * nb, xq, b * xstride, K4p, nfull)
                if rem > 0:
                    acc += _dot_avx2(tail, 0, xq, b * xstride + nfull * 32, K4p, 1)
                _finish_int(np.int32(acc - sums[b]), b, n, xs, s, bias, res, act, y, yi)


@njit(cache=True)
def _aligned_codes(xq, align=32):
    """(buffer, offset): row 0 of the codes copied to an `align`-byte aligned offset of a fresh
    buffer (a few KiB, once a call), so that no activation load straddles two cache lines; a
    chunk's width of zeros after it for the tail chunk's reads past the last plane.
    Not inlined: in the parallel caller the slice copy would become a parallel region of its
    own (a second thread wake-up per call)."""
    n = xq.shape[1]
    buf = np.zeros(n + 2 * align, np.int8)
    off = (align - buf.ctypes.data % align) % align
    for i in range(n):
        buf[off + i] = xq[0, i]
    return buf, off


@njit(cache=True, parallel=True)
def _gemv_avx2(xq, sums, xs, packed, s, bias, res, act, y, yi):
    """`_gemm_avx2` for one row of x (decode): each task's rows in one `_dot_rows_avx2` call
    into int32 accumulators, then the epilogue. Same integers, same bits as `_dot_avx2` row by
    row. One process, interleaved, medians, 2-core Zen 3 guest, weights from DRAM (the 700M
    decoder's qkv / o / gate+up / down), GB/s of packed weights, before -> after: one thread
    11.0 -> 13.0, 11.5 -> 13.5, 10.9 -> 13.0, 12.3 -> 15.5; two threads 18.4 -> 20.2,
    17.9 -> 19.7, 20.1 -> 22.2, 21.0 -> 24.9 (mostly the prefetch, then the aligned
    activations; a pure load loop reads 24-31 GB/s on two threads at these sizes). Not kept:
    two or four rows a pass sharing each activation load (3.0 / 2.6 cycles a chunk from L1
    against 3.6, but two or four streams at once, which this machine serves from DRAM
    15-50 % slower), the last partial group straight-line, larger prefetch distances, a
    prefetch burst at each thread's first rows, one slice per thread."""
    N, nb = packed.shape
    K4p = xq.shape[1] // 4
    nfull = nb // 32
    rem = nb - nfull * 32
    x, xoff = _aligned_codes(xq)
    acc = np.empty(N, np.int32)
    for task in prange((N + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        lo = task * ROWS_PER_TASK
        hi = min(N, lo + ROWS_PER_TASK)
        _dot_rows_avx2(packed, lo * nb, nb, x, xoff, K4p, nfull, hi - lo, acc, lo)
        if rem > 0:
            tail = np.zeros(32, np.uint8)
            for n in range(lo, hi):
                for i in range(rem):
                    tail[i] = packed[n, nfull * 32 + i]
                acc[n] += _dot_avx2(tail, 0, x, xoff + nfull * 32, K4p, 1)
        for n in range(lo, hi):
            _finish_int(np.int32(acc[n] - sums[0]), 0, n, xs, s, bias, res, act, y, yi)


# ---------------------------------------------------------------------------------------
# "portable" path: every intermediate is typed (uint8 codes, int32 products) so that LLVM
# keeps narrow vector lanes instead of Numba's default int64 (KERNELS.md, technique e).


@njit(cache=True)
def _dot_fused(w, x0, x1, x2, x3, nb):
    acc = np.int32(0)
    m = np.uint8(3)
    for i in range(nb):
        c = w[i]
        acc = np.int32(acc + np.int32(x0[i]) * np.int32(c & m)
                       + np.int32(x1[i]) * np.int32((c >> np.uint8(2)) & m)
                       + np.int32(x2[i]) * np.int32((c >> np.uint8(4)) & m)
                       + np.int32(x3[i]) * np.int32(c >> np.uint8(6)))
    return acc


@njit(cache=True, parallel=True)
def _gemm_portable(xq, sums, xs, packed, s, bias, res, act, y, yi):
    N, nb = packed.shape
    B = y.shape[0]
    K4p = xq.shape[1] // 4
    for task in prange((N + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for n in range(task * ROWS_PER_TASK, min(N, (task + 1) * ROWS_PER_TASK)):
            w = packed[n]
            for b in range(B):  # the decode is redone per batch row: it vectorises, a gather would not
                x = xq[b]
                acc = _dot_fused(w, x[0:K4p], x[K4p:2 * K4p], x[2 * K4p:3 * K4p], x[3 * K4p:], nb)
                _finish_int(np.int32(acc - sums[b]), b, n, xs, s, bias, res, act, y, yi)


# ---------------------------------------------------------------------------------------
# float activations (every path). Trits are decoded to float32 t = c - 1 (so there is no
# large sum to cancel); reassociation lets LLVM vectorise the fp32 dot product.


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot_fused_float(w, x0, x1, x2, x3, nb):
    acc = np.float32(0.0)
    m = np.uint8(3)
    one = np.float32(1.0)
    for i in range(nb):
        c = w[i]
        c0 = np.uint8(c & m)  # keep uint8: Numba types `uint8 & uint8` as int64
        c1 = np.uint8((c >> np.uint8(2)) & m)
        c2 = np.uint8((c >> np.uint8(4)) & m)
        c3 = np.uint8(c >> np.uint8(6))
        acc += (x0[i] * (np.float32(c0) - one) + x1[i] * (np.float32(c1) - one)
                + x2[i] * (np.float32(c2) - one) + x3[i] * (np.float32(c3) - one))
    return acc


@njit(cache=True, parallel=True)
def _gemm_float(xd, packed, s, bias, res, act, y):
    N, nb = packed.shape
    B = y.shape[0]
    K4p = xd.shape[1] // 4
    for task in prange((N + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        for n in range(task * ROWS_PER_TASK, min(N, (task + 1) * ROWS_PER_TASK)):
            w = packed[n]
            for b in range(B):
                x = xd[b]
                acc = _dot_fused_float(w, x[0:K4p], x[K4p:2 * K4p], x[2 * K4p:3 * K4p], x[3 * K4p:], nb)
                _finish(acc * s[n], b, n, bias, res, act, y)


# ---------------------------------------------------------------------------------------
# Python entry points


def _as_f32(a: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TdslError(f"{what} must be a float array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise TdslError(f"{what} has shape {arr.shape}, expected {shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_linear_args(x: np.ndarray, packed: np.ndarray, scale: object, bias: object,
                      activation: str | None, residual: object, act_quant: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Validate and normalise the arguments of `ternary_linear` (shared with conv2d and CUDA).

    Returns C-contiguous (x float32 [B, K], packed uint8 [N, nb], scale float32 [N],
    bias float32 [N] (zeros if None), residual float32 [B, N] or [0, 0], activation code).
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        desc = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TdslError(f"x must be a float32 array [batch, K], got a {desc}")
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 2:
        desc = (f"{packed.dtype} array of shape {packed.shape}" if isinstance(packed, np.ndarray)
                else type(packed).__name__)
        raise TdslError(f"packed weights must be a uint8 array [N, ceil(K/4)] (format '2bit'), "
                        f"got a {desc}")
    B, K = x.shape
    N, nb = packed.shape
    if nb != bytes_per_row(K):
        raise TdslError(f"packed weights have {nb} bytes per row but x has K={K} features, "
                        f"which need ceil(K/4)={bytes_per_row(K)} (format '2bit')")
    try:
        act = activations.code_of(activation)
    except ValueError as e:
        raise TdslError(str(e)) from None
    if act_quant not in ACT_QUANTS:
        raise TdslError(f"unknown act_quant {act_quant!r}: valid are 'int8', 'float'")
    if act_quant == "int8" and K > MAX_K:
        raise TdslError(f"K={K} is too large for int32 accumulators (at most {MAX_K})")
    s = np.asarray(scale)
    if s.ndim == 0:
        s = np.full(N, s, dtype=np.float32) if np.issubdtype(s.dtype, np.number) else s
    s = _as_f32(s, (N,), "scale")
    b = np.zeros(N, np.float32) if bias is None else _as_f32(bias, (N,), "bias")
    res = (np.zeros((0, 0), np.float32) if residual is None
           else _as_f32(residual, (B, N), "residual"))
    return np.ascontiguousarray(x), np.ascontiguousarray(packed), s, b, res, act


def row_kernel(path: str, rows: int):  # noqa: ANN201 - a Numba dispatcher
    """The int8 row kernel `path` runs `rows` rows of quantised activations on (one row: the
    GEMV forms). Arguments: (xq, sums, xs, packed, s, bias, res, act, y, yi)."""
    if path == "vnni":
        return _gemv_vnni if rows == 1 else _gemm_vnni
    if path == "avx2":
        return _gemv_avx2 if rows == 1 else _gemm_avx2
    return _gemm_portable


def _run_int8(x, packed, s, bias, res, act, path, y, yi) -> None:
    if path == "vnni":
        xq, xs, sums = quantize_deinterleave(x, 1 if x.shape[0] == 1 else 4)
    else:
        xq, xs, sums = quantize_deinterleave(x)
    row_kernel(path, x.shape[0])(xq, sums, xs, packed, s, bias, res, act, y, yi)


def ternary_linear(x: np.ndarray, packed: np.ndarray, scale: np.ndarray | float,
                   bias: np.ndarray | None = None, *, activation: str | None = None,
                   residual: np.ndarray | None = None, act_quant: str = "int8",
                   path: str | None = None) -> np.ndarray:
    """act(x . (scale * T)^T + bias + residual) as float32 [B, N]; see the module docstring.

    `path` ("portable", "avx2", "vnni", "auto") overrides `cpu_features.kernel_path` for this call.
    """
    x, packed, s, b, res, act = check_linear_args(x, packed, scale, bias, activation, residual,
                                                  act_quant)
    y = np.empty((x.shape[0], packed.shape[0]), np.float32)
    linear_into(y, x, packed, s, b, res, act, act_quant, kernel_path(path))
    return y


def linear_into(y: np.ndarray, x: np.ndarray, packed: np.ndarray, s: np.ndarray, b: np.ndarray,
                res: np.ndarray, act: int, act_quant: str, path: str) -> None:
    """Run the kernel for arguments already normalised by `check_linear_args` into y [B, N]."""
    if act_quant == "float":
        _gemm_float(deinterleave_float(x), packed, s, b, res, act, y)
    else:
        _run_int8(x, packed, s, b, res, act, path, y, np.zeros((0, 0), np.int32))


def int8_accumulators(x: np.ndarray, packed: np.ndarray, *, path: str | None = None
                      ) -> np.ndarray:
    """The exact integer sums sum_k xq[b, k] * t[n, k] (int32 [B, N]) a kernel path forms.

    Equal to `reference.int8_accumulators`; exposed so tests can compare paths bit for bit.
    """
    x, packed, s, b, res, act = check_linear_args(x, packed, 1.0, None, None, None, "int8")
    y = np.empty((x.shape[0], packed.shape[0]), np.float32)
    yi = np.empty((x.shape[0], packed.shape[0]), np.int32)
    _run_int8(x, packed, s, b, res, act, kernel_path(path), y, yi)
    return yi


def fold_batchnorm(scale: np.ndarray | float, bias: np.ndarray | None, gamma: np.ndarray,
                   beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float = 1e-5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(scale', bias') float32 such that bn(scale * acc + bias) = scale' * acc + bias'.

    A batch-norm after a ternary layer is a per-channel affine map, so it folds into the
    kernel's epilogue: k = gamma / sqrt(var + eps), scale' = scale * k,
    bias' = (bias - mean) * k + beta.
    """
    k = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    b = 0.0 if bias is None else np.asarray(bias, np.float64)
    new_scale = np.asarray(scale, np.float64) * k
    new_bias = (b - np.asarray(mean, np.float64)) * k + np.asarray(beta, np.float64)
    return new_scale.astype(np.float32), new_bias.astype(np.float32)


def kernels() -> list:
    """The Numba dispatchers of this module (for cache statistics)."""
    return [_gemv_vnni, _gemm_vnni, _gemv_avx2, _gemm_avx2, _gemm_portable, _gemm_float]


def warmup(paths: tuple[str, ...] | None = None) -> float:
    """Compile (or load from Numba's cache) every kernel signature the entry points use.

    Returns the wall seconds it took; `compile_stats.compile_seconds()` says how much of it
    was compilation. Paths default to "portable" plus "avx2" and "vnni" where the CPU has them.
    """
    if paths is None:
        paths = ("portable",) + (("avx2",) if has_avx2() else ()) + (("vnni",) if has_avx512_vnni() else ())
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    K, N = 70, 5  # a tail chunk and a partial row block
    packed = np.full((N, bytes_per_row(K)), 0x55, np.uint8)
    for B in (1, 5):
        x = rng.standard_normal((B, K)).astype(np.float32)
        for p in paths:
            ternary_linear(x, packed, 1.0, path=p)
            int8_accumulators(x, packed, path=p)
        ternary_linear(x, packed, 1.0, act_quant="float")
    quantize_deinterleave(rng.standard_normal((PARALLEL_MIN_ROWS, K)).astype(np.float32))
    return time.perf_counter() - start
