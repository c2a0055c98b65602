"""numpy ternarisation: trit range, scale and threshold formulas, sparsity targets,
per-channel benefit, stochastic rounding, and the errors users get."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tdsl.errors import TdslError
from tdsl.quant import METHODS, TernaryWeight, compute_threshold, ternarize

SHAPES = [(7,), (5, 3), (16, 33), (8, 3, 3, 3), (3, 5, 1, 7)]
OPTIONS = {"twn": {}, "absmean": {}, "fixed": {"threshold": 0.4},
           "sparsity": {"target_sparsity": 0.3}, "optimal": {}}


def weights(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rows(a: np.ndarray, per_channel: bool) -> np.ndarray:
    return a.reshape(a.shape[0], -1) if per_channel else a.reshape(1, -1)


@pytest.mark.parametrize("shape,per_channel",
                         [(s, pc) for s in SHAPES for pc in (False, True) if len(s) > 1 or not pc])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rounding", ["deterministic", "stochastic"])
def test_trits_are_ternary_int8_with_matching_shapes(shape, per_channel, method, rounding):
    q = ternarize(weights(shape), method, per_channel, rounding=rounding, rng=0, **OPTIONS[method])
    assert q.trits.dtype == np.int8 and q.trits.shape == shape
    assert set(np.unique(q.trits)) <= {-1, 0, 1}
    assert q.scale.dtype == np.float32 and q.threshold.dtype == np.float32
    assert q.scale.shape == q.threshold.shape == ((shape[0],) if per_channel else ())
    assert q.dequantize().shape == shape and q.dequantize().dtype == np.float32


@pytest.mark.parametrize("shape", [(16, 33), (8, 3, 3, 3)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_twn_threshold_and_mean_nonzero_scale_by_hand(shape, per_channel):
    w = weights(shape, 1)
    q = ternarize(w, "twn", per_channel)
    for i, row in enumerate(rows(w, per_channel)):
        delta = np.float32(0.7 * np.mean(np.abs(row.astype(np.float64))))
        kept = np.abs(row) > delta
        assert q.threshold.reshape(-1)[i] == delta
        np.testing.assert_array_equal(rows(q.trits, per_channel)[i], np.sign(row) * kept)
        np.testing.assert_allclose(q.scale.reshape(-1)[i], np.abs(row[kept]).mean(), rtol=1e-6)


@pytest.mark.parametrize("per_channel", [False, True])
def test_absmean_matches_bitnet_round_clip(per_channel):
    w = weights((12, 40), 2)
    q = ternarize(w, "absmean", per_channel, scale="absmean")
    gamma = (np.abs(w).mean(axis=1, keepdims=True) if per_channel else np.abs(w).mean())
    np.testing.assert_array_equal(q.trits, np.clip(np.round(w / gamma), -1, 1))
    np.testing.assert_allclose(q.scale, np.squeeze(gamma), rtol=1e-6)
    np.testing.assert_allclose(q.threshold, np.squeeze(gamma) / 2, rtol=1e-6)


def test_fixed_threshold_per_channel_and_boundary_is_zero():
    w = np.array([[0.5, -0.5, 0.6, -0.2], [1.0, 2.0, -3.0, 0.0]], np.float32)
    q = ternarize(w, "fixed", per_channel=True, threshold=[0.5, 1.5])
    np.testing.assert_array_equal(q.trits, [[0, 0, 1, 0], [0, 1, -1, 0]])
    np.testing.assert_allclose(q.scale, [0.6, 2.5])


@pytest.mark.parametrize("target", [0.0, 0.1, 0.33, 0.5, 0.9])
@pytest.mark.parametrize("shape,per_channel", [((64, 100), False), ((64, 100), True),
                                               ((31, 17), False), ((32, 16, 3, 3), True),
                                               ((10, 7, 5, 5), False)])
def test_target_sparsity_is_hit_within_one_point(target, shape, per_channel):
    q = ternarize(weights(shape, 3), "sparsity", per_channel, target_sparsity=target)
    assert abs(q.sparsity - target) <= 0.01
    if per_channel:
        assert np.all(np.abs((rows(q.trits, True) == 0).mean(axis=1) - target) <= 0.01)


@pytest.mark.parametrize("target", [0.1, 0.33, 0.5, 0.9])
def test_short_rows_per_channel_take_the_nearest_count(target):
    q = ternarize(weights((31, 17), 3), "sparsity", True, target_sparsity=target)
    zeros = (q.trits == 0).sum(axis=1)
    np.testing.assert_array_equal(zeros, round(target * 17))


def test_per_channel_beats_per_tensor_on_uneven_channels():
    w = weights((16, 64), 4) * np.logspace(-2, 1, 16, dtype=np.float32)[:, None]
    err = {pc: float(np.sum((ternarize(w, "twn", pc).dequantize() - w) ** 2)) for pc in (False, True)}
    assert err[True] < 0.5 * err[False]


def test_optimal_threshold_is_the_least_squares_ternary_of_each_row():
    """On 5-tap filters (MNIST-1D's first conv) the rule finds the best trits of all 3^5 sign-
    consistent masks and beats TWN's 0.7·mean|w|; ties in |w| are never split."""
    from itertools import product

    w = weights((200, 1, 1, 5), 8)
    q, twn = ternarize(w, "optimal", per_channel=True), ternarize(w, "twn", per_channel=True)
    err = np.sum((q.dequantize() - w).reshape(200, 5).astype(np.float64) ** 2, axis=1)
    masks = np.array(list(product([0, 1], repeat=5)), dtype=bool)[1:]
    for i, row in enumerate(w.reshape(200, 5).astype(np.float64)):
        best = min(np.sum((row - np.abs(row[m]).mean() * np.sign(row) * m) ** 2) for m in masks)
        assert err[i] <= best + 1e-9
    err_twn = np.sum((twn.dequantize() - w).astype(np.float64) ** 2)
    assert err.sum() < 0.9 * err_twn
    tied = np.array([[3.0, -2.0, 2.0, 0.1]], np.float32)  # equal magnitudes get the same |trit|
    assert ternarize(tied, "optimal", per_channel=True).trits.tolist() == [[1, -1, 1, 0]]


def test_all_zero_row_gets_zero_scale_without_nan():
    w = weights((3, 8), 5)
    w[1] = 0
    for scale in ("mean_nonzero", "absmean"):
        q = ternarize(w, "twn", per_channel=True, scale=scale)
        assert q.scale[1] == 0 and np.all(np.isfinite(q.scale))
        assert np.all(q.trits[1] == 0) and np.all(np.isfinite(q.dequantize()))


@pytest.mark.parametrize("shape,per_channel", [((0,), False), ((0, 4), True), ((3, 0), True)])
def test_empty_weight_quantises_to_empty(shape, per_channel):
    q = ternarize(np.zeros(shape, np.float32), "twn", per_channel)
    assert q.trits.shape == shape and q.sparsity == 0.0
    assert np.all(q.scale == 0) and q.scale.shape == ((shape[0],) if per_channel else ())


def test_stochastic_rounding_is_unbiased_within_the_scale():
    w = weights((4, 50), 6)
    alpha = ternarize(w, "twn", per_channel=True).scale[:, None]
    draws = np.stack([ternarize(w, "twn", True, rounding="stochastic", rng=s).dequantize()
                      for s in range(1000)])
    target = np.clip(w, -alpha, alpha)
    # each draw is ±α or 0, so the std of the mean is at most α/sqrt(1000) ≈ 0.032·α
    assert np.max(np.abs(draws.mean(axis=0) - target) / alpha) < 0.15
    inside = np.abs(w) < alpha
    assert abs(float(np.mean((draws.mean(axis=0) - w)[inside]))) < 0.01
    assert np.all(np.isin(draws / alpha, [-1, 0, 1]))


def test_stochastic_rounding_is_reproducible_with_a_seed():
    w = weights((8, 30), 7)
    a = ternarize(w, rounding="stochastic", rng=42).trits
    b = ternarize(w, rounding="stochastic", rng=np.random.default_rng(42)).trits
    c = ternarize(w, rounding="stochastic", rng=43).trits
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_compute_threshold_alone_matches_ternarize():
    w = weights((6, 9), 8)
    np.testing.assert_array_equal(compute_threshold(w, "twn", True), ternarize(w, "twn", True).threshold)


def test_ternary_weight_is_a_plain_dataclass():
    q = TernaryWeight(np.array([1, 0, -1], np.int8), np.float32(2.0) * np.ones((), np.float32),
                      np.zeros((), np.float32))
    np.testing.assert_array_equal(q.dequantize(), [2, 0, -2])
    assert not q.per_channel and q.sparsity == pytest.approx(1 / 3)


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "bitnet"}, "unknown ternary threshold method 'bitnet'; valid methods are twn, absmean, fixed, sparsity"),
    ({"method": "sparsity"}, "method 'sparsity' needs target_sparsity"),
    ({"method": "sparsity", "target_sparsity": 1.0}, "target_sparsity must be in [0, 1), got 1.0"),
    ({"method": "sparsity", "target_sparsity": -0.1}, "target_sparsity must be in [0, 1), got -0.1"),
    ({"method": "sparsity", "target_sparsity": "half"}, "target_sparsity must be a number in [0, 1), got 'half'"),
    ({"method": "fixed", "threshold": "big"}, "threshold must be a number or an array of numbers, got 'big'"),
    ({"target_sparsity": 0.5}, "target_sparsity is only used by method 'sparsity', not 'twn'"),
    ({"method": "fixed"}, "method 'fixed' needs a threshold"),
    ({"method": "fixed", "threshold": -0.1}, "threshold must be non-negative, got -0.1"),
    ({"method": "fixed", "threshold": [0.1, 0.2]}, "a per-tensor threshold must be a scalar"),
    ({"method": "fixed", "threshold": [0.1], "per_channel": True}, "a per-channel threshold needs shape (4,)"),
    ({"threshold": 0.3}, "threshold is only used by method 'fixed', not 'twn'"),
    ({"scale": "max"}, "unknown ternary scale 'max'; valid scales are mean_nonzero, absmean"),
    ({"rounding": "nearest"}, "unknown rounding 'nearest'; valid roundings are deterministic, stochastic"),
])
def test_invalid_options_raise_tdsl_error(kwargs, message):
    with pytest.raises(TdslError) as e:
        ternarize(weights((4, 6)), **kwargs)
    assert message in e.value.message


@pytest.mark.parametrize("w,per_channel,message", [
    (np.array([1.0, np.nan, np.inf], np.float32), False, "weights must be finite, found 2 NaN or infinite value(s)"),
    (np.float32(1.0), False, "weights must have at least one dimension"),
    (np.ones(5, np.float32), True, "per-channel quantisation needs a weight of rank >= 2"),
    (np.array(["a"]), False, "weights must be a real numeric array"),
])
def test_invalid_weights_raise_tdsl_error(w, per_channel, message):
    with pytest.raises(TdslError) as e:
        ternarize(w, per_channel=per_channel)
    assert message in e.value.message


def test_import_tdsl_quant_does_not_import_torch():
    code = "import sys, tdsl.quant; assert 'torch' not in sys.modules, 'torch was imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
