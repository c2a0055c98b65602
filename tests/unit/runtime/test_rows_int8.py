"""Linears over many rows on the NHWC micro-kernel (tdsl.runtime.rows_int8).

Its integers must equal `reference.int8_accumulators` exactly (the u8 offset 128 and its
correction 128 * sum(T[o]) may not change one), and its outputs must be bitwise those of
`gemm.linear_into` and `conv_int8.linear_int8_into` (the paths it replaces for prefill), with
bias, residual and activation. Shapes cover K not a multiple of 4 (padded k pairs), N not a
multiple of the 32-output block, rows not a multiple of MR or of a task, all-zero tokens.
"""
from __future__ import annotations

import numpy as np
import pytest

from tdsl.errors import TdslError
from tdsl.runtime import conv_int8, gemm
from tdsl.runtime import reference as R
from tdsl.runtime import rows_int8
from tdsl.runtime.cpu_features import has_avx2, has_avx512_vnni
from tdsl.runtime.packing import pack

PATHS = ["portable",
         pytest.param("avx2", marks=pytest.mark.skipif(not has_avx2(), reason="this CPU has no AVX2")),
         pytest.param("vnni", marks=pytest.mark.skipif(not has_avx512_vnni(), reason="this CPU has no AVX-512 VNNI "
                                                       "(the k4x32 tile's bits are checked emulated in test_nhwc_int8)"))]


def _exact_sums(x: np.ndarray, trits: np.ndarray, path: str) -> np.ndarray:
    """The kernel's int32 sums: scales 1, no bias, so y = float32(a), exact below 2^24."""
    B, N = x.shape[0], trits.shape[0]
    xu, offs, _ = rows_int8.quantize_rows(x)
    y = np.empty((B, N), np.float32)
    rows_int8.linear_quantized_into(y, (xu, offs, np.ones(B, np.float32)), rows_int8.panels_of_trits(trits, path),
                                    np.ones(N, np.float32), np.zeros(N, np.float32), np.zeros((0, 0), np.float32),
                                    0, path)
    return y.astype(np.int64)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("B,K,N", [(5, 64, 16), (7, 70, 33), (8, 256, 64), (13, 1000, 130), (70, 96, 40)])
def test_outputs_are_the_row_kernels_and_conv_panels_bit_for_bit(path: str, B: int, K: int, N: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_int8, "ROWS_PER_TASK", 10)  # 8 a task (whole tiles): B = 70 ends in a task of 6
    rng = np.random.default_rng(B * K + N)
    trits = rng.integers(-1, 2, (N, K)).astype(np.int8)
    packed = pack(trits)
    x = rng.standard_normal((B, K)).astype(np.float32)
    x[1] = 0.0  # an all-zero token: scale 0, every output its bias
    s, bias = rng.random(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    res = rng.standard_normal((B, N)).astype(np.float32)
    want, panels, got = (np.empty((B, N), np.float32) for _ in range(3))
    gemm.linear_into(want, x, packed, s, bias, res, 1, "int8", path)
    conv_int8.linear_int8_into(panels, x, conv_int8.linear_panels(packed, N, K), s, bias, res, 1, path, {})
    rows_int8.linear_into(got, x, rows_int8.row_panels(packed, N, K, path), s, bias, res, 1, path, {})
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
    np.testing.assert_array_equal(got.view(np.int32), panels.view(np.int32))
    assert np.any(got != 0) and np.all(got >= 0)  # relu ran
    np.testing.assert_array_equal(_exact_sums(x, trits, path), R.int8_accumulators(x, trits))


@pytest.mark.parametrize("path", PATHS)
def test_extreme_values_are_exact(path: str) -> None:
    """All trits +1 (or -1) against +-127 codes, K = 1000 (15 widenings of 64 pairs and a
    partial one): the largest pair sums (u8 255 or 1 by +-1) and the largest correction."""
    B, K, N = 7, 1000, 48
    trits = np.ones((N, K), np.int8)
    trits[16:32] = -1
    trits[32:, ::3] = 0
    x = np.ones((B, K), np.float32)
    x[1::2] = -1.0
    x[2, ::2] = -1.0
    got = _exact_sums(x, trits, path)
    np.testing.assert_array_equal(got, R.int8_accumulators(x, trits))
    assert got.max() == 127 * K and got.min() == -127 * K


def test_rows_are_quantised_as_the_reference_with_offset_128() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    x[4] = 0.0
    xu, offs, xs = rows_int8.quantize_rows(x)
    xq, want_xs = R.quantize_activations(x)
    rows = xu.reshape(8, 12).astype(np.int16) - 128  # 8 rows (MR multiple), 12 = 10 padded to 4
    np.testing.assert_array_equal(rows[:6, :10], xq)
    assert not rows[:, 10:].any() and not rows[6:].any()
    np.testing.assert_array_equal(offs, np.arange(8) * 12)
    np.testing.assert_array_equal(xs, want_xs)


def test_the_avx2_and_vnni_paths_from_min_rows_run_here() -> None:
    assert rows_int8.runs("avx2", rows_int8.MIN_ROWS) and not rows_int8.runs("avx2", rows_int8.MIN_ROWS - 1)
    assert not rows_int8.runs("portable", 64) and rows_int8.runs("vnni", 64)
    w = rows_int8.panels_of_trits(np.ones((8, 16), np.int8), "vnni")
    assert w.path == "vnni" and w.panels.size == 32 * 16  # k4x32: one block of 32 outputs x 16 inputs
    with pytest.raises(TdslError, match="another layout"):  # k4x32 panels on the k2x32 tile
        rows_int8.linear_into(np.empty((5, 8), np.float32), np.zeros((5, 16), np.float32), w, np.ones(8, np.float32),
                              np.zeros(8, np.float32), np.zeros((0, 0), np.float32), 0, "avx2")


def test_mismatched_arguments_are_errors() -> None:
    w = rows_int8.panels_of_trits(np.zeros((8, 16), np.int8))
    one, zero, empty = np.ones(8, np.float32), np.zeros(8, np.float32), np.zeros((0, 0), np.float32)
    with pytest.raises(TdslError, match=r"x must be C-contiguous float32 \[B, 16\]"):
        rows_int8.linear_into(np.empty((5, 8), np.float32), np.zeros((5, 12), np.float32), w, one, zero, empty, 0)
    with pytest.raises(TdslError, match="does not match the panels' 8 outputs"):
        rows_int8.linear_into(np.empty((5, 9), np.float32), np.zeros((5, 16), np.float32), w, one, zero, empty, 0)
    with pytest.raises(TdslError, match="runs the paths portable, avx2, vnni, not 'sse9'"):
        rows_int8.linear_into(np.empty((5, 8), np.float32), np.zeros((5, 16), np.float32), w, one, zero, empty, 0,
                              "sse9")
    with pytest.raises(TdslError, match=r"int8 \[N, K\]"):
        rows_int8.panels_of_trits(np.zeros((8, 16), np.int16))
