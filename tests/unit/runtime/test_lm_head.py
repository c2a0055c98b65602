"""The LM head kernels (`tdsl.runtime.lm_head`), every path this CPU runs forced and compared:
int8 (AVX2 and portable) bit for bit against numpy's integer arithmetic on the codes of
`tdsl.runtime.reference.quantize_activations`; fp16 (F16C and portable) against numpy float64
on the same halves; the shape errors; and which head `Generator(head="auto")` picks."""
from __future__ import annotations

import numpy as np
import pytest

from tdsl.errors import TdslError
from tdsl.runtime import lm_head as H
from tdsl.runtime.quant_act import quantize_deinterleave
from tdsl.runtime.reference import quantize_activations

RNG = np.random.default_rng(0)


def _int8_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float32(sum_k xq w8) * (xs * scale), the integers in int64, from the plain definitions."""
    xq, xs = quantize_activations(x)
    w8, scale = H.quantize_rows_int8(w)
    acc = xq.astype(np.int64) @ w8.astype(np.int64).T
    return acc.astype(np.float32) * (xs[:, None] * scale[None, :])


def test_rows_are_rounded_to_int8_with_a_scale_per_row() -> None:
    w = RNG.standard_normal((50, 37)).astype(np.float32)
    w[3] = 0.0
    q, scale = H.quantize_rows_int8(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    assert (np.abs(q).max(axis=1)[np.arange(50) != 3] == 127).all()
    assert scale[3] == 1.0 and not q[3].any()
    assert np.abs(q * scale[:, None] - w).max() <= scale.max() / 2 + 1e-6
    head = H.Int8Head.from_weight(w)
    np.testing.assert_array_equal(head.dequantized(), q.astype(np.float32) * scale[:, None])
    assert head.nbytes == 50 * head.w8.shape[1] + 4 * 50 and head.w8.shape[1] % 256 == 0


@pytest.mark.parametrize("path", H.int8_paths())
@pytest.mark.parametrize("batch, rows, k", [(1, 1001, 300), (3, 64, 1536), (2, 7, 5)])
def test_int8_head_is_numpys_integer_arithmetic_bit_for_bit(path: str, batch: int, rows: int, k: int) -> None:
    w = RNG.standard_normal((rows, k)).astype(np.float32)
    w[rows // 2] = 0.0
    x = RNG.standard_normal((batch, k)).astype(np.float32) * 4
    if batch > 1:
        x[1] = 0.0  # an all-zero token: scale 0, logits 0
    got = H.Int8Head.from_weight(w)(x, path=path)
    np.testing.assert_array_equal(got, _int8_reference(x, w))
    assert np.abs(got - x @ w.T).max() <= 0.05 * np.abs(x @ w.T).max() + 1e-6  # the roundings only


def test_int8_sums_do_not_saturate() -> None:
    """All codes +-127: every vpmaddubsw pair is 2 * 127 * 127 = 32258, the row sum 127^2 K."""
    k = 2048
    w = np.ones((16, k), np.float32)
    w[1::2] = -1.0
    x = np.full((1, k), 3.0, np.float32)
    for path in H.int8_paths():
        got = H.Int8Head.from_weight(w)(x, path=path)
        np.testing.assert_array_equal(got, _int8_reference(x, w))
        assert got[0, 0] == pytest.approx(3.0 * k) and got[0, 1] == pytest.approx(-3.0 * k)


def test_int8_paths_agree_on_codes_a_norm_wrote() -> None:
    """`apply_quantized` reads the codes as `quantize_deinterleave` lays them out (batch padded)."""
    w = RNG.standard_normal((300, 200)).astype(np.float32)
    x = RNG.standard_normal((2, 200)).astype(np.float32)
    head = H.Int8Head.from_weight(w)
    xq, xs, _ = quantize_deinterleave(x, 4)
    outs = []
    for path in H.int8_paths():
        y = np.empty((2, 300), np.float32)
        head.apply_quantized(xq, xs, y, path=path)
        outs.append(y)
    for y in outs:
        np.testing.assert_array_equal(y, _int8_reference(x, w))


@pytest.mark.parametrize("path", H.fp16_paths())
@pytest.mark.parametrize("batch, rows, k", [(1, 1001, 300), (2, 65, 1536), (3, 5, 7)])
def test_fp16_head_is_the_float_product_on_the_same_halves(path: str, batch: int, rows: int, k: int) -> None:
    w = (RNG.standard_normal((rows, k)) * 0.05).astype(np.float16)
    w[0, :4] = [6e-8, -3e-6, 65504.0, 0.0]  # subnormal halves and the largest one convert exactly
    x = RNG.standard_normal((batch, 1, k)).astype(np.float32)
    head = H.Fp16Head.from_weight(w.astype(np.float32))
    assert head.nbytes == rows * head.w16.shape[1] * 2 and head.w16.shape[1] % H.FP16_LANES == 0
    np.testing.assert_array_equal(head.w16.view(np.float16)[:, :k], w)
    got = head(x, path=path)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    bound = np.abs(x).astype(np.float64) @ np.abs(w.astype(np.float64)).T * (k * 2.0 ** -24)
    assert got.shape == (batch, 1, rows) and got.dtype == np.float32
    assert (np.abs(got - ref) <= bound + 1e-30).all()


def test_fp16_paths_agree() -> None:
    w = (RNG.standard_normal((257, 1000)) * 0.05).astype(np.float32)
    x = RNG.standard_normal((1, 1000)).astype(np.float32)
    head = H.Fp16Head.from_weight(w)
    outs = [head(x, path=p) for p in H.fp16_paths()]
    for y in outs[1:]:
        np.testing.assert_allclose(y, outs[0], rtol=1e-5, atol=1e-5)


def test_shapes_that_do_not_fit_and_unknown_paths_are_errors() -> None:
    w = RNG.standard_normal((10, 40)).astype(np.float32)
    i8, f16 = H.Int8Head.from_weight(w), H.Fp16Head.from_weight(w)
    x = np.zeros((1, 41), np.float32)
    with pytest.raises(TdslError, match="int8 head takes 40 features"):
        i8(x)
    with pytest.raises(TdslError, match="fp16 head takes 40 features"):
        f16(x)
    xq, xs, _ = quantize_deinterleave(np.ones((1, 40), np.float32))
    with pytest.raises(TdslError, match="do not fit"):
        i8.apply_quantized(xq.astype(np.int16), xs, np.empty((1, 10), np.float32))
    with pytest.raises(TdslError, match="do not fit"):
        i8.apply_quantized(xq, xs, np.empty((1, 11), np.float32))
    with pytest.raises(TdslError, match="do not fit"):
        i8.apply_quantized(xq[:, :64], xs, np.empty((1, 10), np.float32))
    with pytest.raises(TdslError, match="not available here"):
        i8(np.zeros((1, 40), np.float32), path="vnni")
    with pytest.raises(TdslError, match="not available here"):
        f16(np.zeros((1, 40), np.float32), path="avx2")


def test_exact_in_fp16() -> None:
    w = (RNG.standard_normal((8, 8)) * 0.02).astype(np.float16).astype(np.float32)
    assert H.exact_in_fp16(w)
    assert not H.exact_in_fp16(w + np.float32(1e-7))
    assert not H.exact_in_fp16(np.array([1e6], np.float32))  # beyond fp16's range


@pytest.mark.parametrize("workers, rows", [(1, 1000), (2, 1000), (3, 1001), (2, 300)])
def test_float_head_in_bands_is_the_blas_product(workers: int, rows: int) -> None:
    """Each band of head rows is its own BLAS call on its own thread (300 rows: one band)."""
    rng = np.random.default_rng(rows)
    wt = rng.standard_normal((40, rows)).astype(np.float32)
    x = rng.standard_normal((9, 40)).astype(np.float32)
    y = np.full((9, rows), np.nan, np.float32)
    H.float_head_into(y, x, wt, workers)
    np.testing.assert_allclose(y, x.astype(np.float64) @ wt.astype(np.float64), rtol=1e-5, atol=1e-5)
