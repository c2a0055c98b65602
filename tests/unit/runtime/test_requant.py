"""The vector epilogue (`tdsl.runtime.requant`): the scalar formula's bytes, in its AVX-512,
AVX2 and generic forms, and the float epilogue it folds (a clamp, then requantisation) up to float
rounding."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from tdsl.runtime import isa
from tdsl.runtime.requant import (WIDE, requant_scalar, requant_tile_avx2, requant_tile_avx512, requant_tile_generic,
                                  static_terms)

F = np.float32
ROWS = 3


@njit
def run_generic(acc, astride, rows, n32, n8, m, c, o0, res, rbase, has_res, rsi, qlo, qhi, dst, dbase, dstride):
    requant_tile_generic(acc, 0, astride, rows, n32, n8, m, c, o0, res, rbase, has_res, rsi, qlo, qhi, dst, dbase,
                         dstride)


@njit
def run_avx2(acc, astride, rows, n32, n8, m, c, o0, res, rbase, has_res, rsi, qlo, qhi, dst, dbase, dstride):
    requant_tile_avx2(acc, 0, astride, rows, n32, n8, m, c, o0, res, rbase, has_res, rsi, qlo, qhi, dst, dbase,
                      dstride)


@njit
def run_avx512(acc, astride, rows, n32, n8, m, c, o0, res, rbase, has_res, rsi, qlo, qhi, dst, dbase, dstride):
    requant_tile_avx512(acc, 0, astride, rows, n32, n8, m, c, o0, res, rbase, has_res, rsi, qlo, qhi, dst, dbase,
                        dstride)


@njit
def run_scalar(acc, astride, rows, no, m, c, o0, res, rbase, has_res, rsi, qlo, qhi, dst, dbase, dstride):
    for r in range(rows):
        for i in range(no):
            rv = F(res[rbase + r * dstride + i]) if has_res else F(0.0)
            dst[dbase + r * dstride + i] = requant_scalar(acc[r * astride + i], m[o0 + i], c[o0 + i], rv, rsi, qlo,
                                                          qhi)


FORMS = [pytest.param(run_generic, id="generic"),
         pytest.param(run_avx2, id="avx2", marks=pytest.mark.skipif(not isa.has("avx2"), reason="this CPU lacks AVX2")),
         pytest.param(run_avx512, id="avx512", marks=pytest.mark.skipif(not isa.has("avx512bw"),
                                                                       reason="this CPU lacks AVX-512BW"))]


def case(residual: bool, clamp: tuple[float, float], n32: int, n8: int):
    rng = np.random.default_rng(3)
    no = WIDE * n32 + 8 * n8
    astride, dstride, o0, dbase = no + 8, no + 12, 16, 5  # strided rows, offsets, unaligned u8 ends
    acc = rng.integers(-4000, 4000, ROWS * astride).astype(np.int32)
    acc[:4] = [0, 2**24 + 1, -(2**24) - 3, 10**9]  # large sums round in float32; far out of range
    wsum = rng.integers(-100, 100, o0 + no).astype(np.int32)
    se = rng.uniform(1e-4, 2e-3, o0 + no).astype(F)
    bias = rng.standard_normal(o0 + no).astype(F)
    rs, rzp = (F(0.02), 131) if residual else (0.0, 0)
    m, c, rsi, qlo, qhi = static_terms(wsum, 3, se, bias, 1 / 0.037, 11, F(clamp[0]), F(clamp[1]), rs, rzp)
    res = rng.integers(0, 256, dbase + ROWS * dstride + 3).astype(np.uint8)
    return acc, astride, no, m, c, o0, res, int(residual), F(rsi), F(qlo), F(qhi), dbase, dstride


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("clamp", [(-np.inf, np.inf), (0.0, np.inf), (0.0, 6.0)])
@pytest.mark.parametrize("n32,n8", [(1, 0), (0, 3), (2, 1)])
def test_vector_forms_give_the_scalar_bytes(form, residual, clamp, n32, n8):
    acc, astride, no, m, c, o0, res, has_res, rsi, qlo, qhi, dbase, dstride = case(residual, clamp, n32, n8)
    size = dbase + ROWS * dstride + 4
    got = np.full(size, 77, np.uint8)
    want = np.full(size, 77, np.uint8)
    form(acc, astride, ROWS, n32, n8, m, c, o0, res, dbase, has_res, rsi, qlo, qhi, got, dbase, dstride)
    run_scalar(acc, astride, ROWS, no, m, c, o0, res, dbase, has_res, rsi, qlo, qhi, want, dbase, dstride)
    np.testing.assert_array_equal(got, want)  # also: nothing written between rows or outside them
    written = np.concatenate([want[dbase + r * dstride:dbase + r * dstride + no] for r in range(ROWS)])
    assert len(np.unique(written)) > 8  # the case spans the range, not one clamped value
    assert want[dbase + 3] == qhi  # 10**9 saturates to the top, not to 0 (the AVX2 conversion's INT_MIN)
    if clamp[1] == 6.0:
        assert written.max() == qhi < 255


def test_scalar_formula_is_the_float_epilogue_up_to_float_rounding():
    """rint(acc * m + c) clamped == requantise(clamp((acc - z_x*wsum) * se + bias + residual)) but
    for ties that float32 rounding moves (at most one step)."""
    rng = np.random.default_rng(5)
    n = 4000
    acc = rng.integers(-3000, 3000, n).astype(np.int32)
    wsum = rng.integers(-60, 60, n).astype(np.int32)
    se = rng.uniform(1e-3, 3e-3, n).astype(F)
    bias = rng.standard_normal(n).astype(F)
    r = rng.integers(0, 256, n).astype(np.uint8)
    inv, zpy, zpx, rs, rzp = 1 / 0.05, 7, 3, 0.03, 120
    m, c, rsi, qlo, qhi = (F(v) if np.isscalar(v) else v
                           for v in static_terms(wsum, zpx, se, bias, inv, zpy, F(0.0), F(6.0), rs, rzp))
    got = np.array([requant_scalar(acc[i], m[i], c[i], F(r[i]), rsi, qlo, qhi) for i in range(n)])
    v = (acc - zpx * wsum) * se.astype(np.float64) + bias + (r.astype(np.float64) - rzp) * rs
    want = np.clip(np.rint(np.clip(v, 0.0, 6.0) * inv) + zpy, 0, 255)
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert qlo == zpy and qhi == np.rint(6.0 * inv) + zpy


def test_rounds_half_to_even_in_both_forms():
    acc = np.array([1, 3, 5, -1] + [0] * 4, np.int32)
    m = np.full(8, 0.5, F)
    c = np.full(8, 10.0, F)
    acc, m, c = np.tile(acc, 4), np.tile(m, 4), np.tile(c, 4)  # 32 channels: the wide step too
    for form in ([run_generic] + ([run_avx2] if isa.has("avx2") else []) +
                 ([run_avx512] if isa.has("avx512bw") else [])):
        for n32, n8 in ((0, 1), (1, 0)):
            dst = np.zeros(32, np.uint8)
            form(acc, 32, 1, n32, n8, m, c, 0, np.zeros(0, np.uint8), 0, 0, F(0), F(0), F(255), dst, 0, 32)
            assert dst[:4].tolist() == [10, 12, 12, 10]  # 10.5 -> 10, 11.5 -> 12, 12.5 -> 12, 9.5 -> 10
