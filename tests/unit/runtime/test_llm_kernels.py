"""The decoding kernels (`tdsl.runtime.llm_kernels`) against their numpy definitions:
RMSNorm (`tdsl.ops.sequence.rms_norm`), rotary embedding and cached attention
(`tdsl.runtime.attention`); the quantising RMSNorm and the projections that read its codes
against the unfused quantise-then-project calls, bit for bit."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tdsl.errors import TdslError
from tdsl.runtime import attention as A
from tdsl.runtime import llm_kernels as L

RNG = np.random.default_rng(0)


def test_rms_norm_equals_the_reference() -> None:
    from tdsl.ops.sequence import rms_norm

    x = RNG.standard_normal((2, 5, 48)).astype(np.float32) * 3
    w = RNG.standard_normal(48).astype(np.float32)
    op = SimpleNamespace(eps=SimpleNamespace(value=SimpleNamespace(data=1e-5)))
    np.testing.assert_allclose(L.rms_norm(x, w, 1e-5), rms_norm(op, x, w), rtol=1e-6, atol=1e-6)
    with pytest.raises(TdslError, match="weight of shape"):
        L.rms_norm(x, w[:5], 1e-5)


@pytest.mark.parametrize("offset", [0, 17])
def test_rope_equals_the_reference(offset: int) -> None:
    x = RNG.standard_normal((2, 3, 4 * 16)).astype(np.float32)
    np.testing.assert_allclose(L.rope(x, 4, 500000.0, offset), A.rope(x, 4, 500000.0, offset), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("t, s, heads, kv_heads, causal", [(1, 9, 4, 2, True), (1, 300, 16, 4, True), (5, 5, 4, 1, True),
                                                            (3, 7, 2, 2, True), (4, 6, 4, 4, False)])
def test_attention_equals_the_reference(t: int, s: int, heads: int, kv_heads: int, causal: bool) -> None:
    dh = 8
    q = RNG.standard_normal((2, t, heads * dh)).astype(np.float32)
    k = RNG.standard_normal((2, s, kv_heads * dh)).astype(np.float32)
    v = RNG.standard_normal((2, s, kv_heads * dh)).astype(np.float32)
    np.testing.assert_allclose(L.attention(q, k, v, heads, kv_heads, causal), A.attention(q, k, v, heads, kv_heads,
                               causal), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t, s, causal", [(4, 4, True), (9, 30, True), (6, 6, False)])
def test_prefill_attention_is_the_decode_kernel_bit_for_bit(t: int, s: int, causal: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Many queries run on transposed keys (`_attention_rows`): the same sums in the same order
    as the one-query kernel, so the same bits; both within float32 rounding of the reference."""
    heads, kv_heads, dh = 6, 2, 24
    q = RNG.standard_normal((2, t, heads * dh)).astype(np.float32)
    k = RNG.standard_normal((2, s, kv_heads * dh)).astype(np.float32)
    v = RNG.standard_normal((2, s, kv_heads * dh)).astype(np.float32)
    rows = L.attention(q, k, v, heads, kv_heads, causal)
    monkeypatch.setattr(L, "ATTENTION_ROWS_MIN_QUERIES", t + 1)
    one_by_one = L.attention(q, k, v, heads, kv_heads, causal)
    np.testing.assert_array_equal(rows.view(np.int32), one_by_one.view(np.int32))
    np.testing.assert_allclose(rows, A.attention(q, k, v, heads, kv_heads, causal), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("s, heads, kv_heads", [(1, 4, 2), (9, 4, 4), (300, 16, 4), (70, 12, 4)])
def test_cached_attention_is_the_decode_kernel_bit_for_bit(s: int, heads: int, kv_heads: int) -> None:
    """A decode step over the cache's transposed keys (grown past its capacity, appended a
    prompt then token by token) gives `attention`'s bits for one query."""
    from tdsl.runtime.kv_cache import KVCache

    dh = 24
    k = RNG.standard_normal((2, s, kv_heads * dh)).astype(np.float32)
    v = RNG.standard_normal((2, s, kv_heads * dh)).astype(np.float32)
    q = RNG.standard_normal((2, 1, heads * dh)).astype(np.float32)
    cache = KVCache(layers=1, capacity=2)
    start = min(3, s - 1)
    cache.append(0, 0, k[:, :start], v[:, :start])
    for i in range(start, s):
        keys, _ = cache.append(0, i, k[:, i:i + 1], v[:, i:i + 1])
    np.testing.assert_array_equal(cache.keys_t[0][:, :, :s], keys.transpose(0, 2, 1))
    got = np.empty_like(q)
    L.attention_cached(q, cache.keys_t[0], cache.values[0], heads, kv_heads, s,
                       np.float32(1.0 / np.sqrt(dh)), got)
    want = L.attention(q, k, v, heads, kv_heads, True)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_member_slice_is_the_bias_and_activation_epilogue_bit_for_bit() -> None:
    from tdsl.runtime import nchw_float as K
    from tdsl.runtime.activations import code_of

    src = RNG.standard_normal((2, 50)).astype(np.float32) * 4
    bias = RNG.standard_normal(20).astype(np.float32)
    for act in ("silu", "relu2", None):
        want = np.ascontiguousarray(src[:, 10:30])
        K.bias_residual_act(want[:, :, None], bias, np.zeros((0, 0, 0), np.float32), code_of(act))
        got = np.empty((2, 20), np.float32)
        L.member_slice(src, 10, bias, code_of(act), True, got)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32), err_msg=str(act))
    L.member_slice(src, 10, bias, code_of("silu"), False, got)
    np.testing.assert_array_equal(got, src[:, 10:30])


def test_attention_refuses_shapes_that_do_not_fit() -> None:
    q = np.zeros((1, 1, 32), np.float32)
    with pytest.raises(TdslError, match="do not fit"):
        L.attention(q, np.zeros((1, 3, 24), np.float32), np.zeros((1, 3, 24), np.float32), 4, 2, True)


@pytest.mark.parametrize("rows", [1, 3, 20])
def test_rms_norm_quant_gives_the_unfused_codes_bit_for_bit(rows: int) -> None:
    from tdsl.runtime.quant_act import quantize_deinterleave

    x = RNG.standard_normal((rows, 200)).astype(np.float32) * 3
    x[rows - 1, :] = 0.0 if rows > 1 else x[0]  # an all-zero token: scale 0, no codes
    w = RNG.standard_normal(200).astype(np.float32)
    y, q = L.rms_norm_quant(x, w, 1e-5, batch_multiple=4)
    xq, xs, sums = quantize_deinterleave(L.rms_norm(x, w, 1e-5), 4)
    np.testing.assert_array_equal(y, L.rms_norm(x, w, 1e-5))
    np.testing.assert_array_equal(q.xq, xq)
    np.testing.assert_array_equal(q.xs, xs)
    np.testing.assert_array_equal(q.sums, sums)
    assert q.xq.shape[0] % 4 == 0 and np.abs(q.xq).max() == 127


def test_rms_norm_quant_into_reused_codes_are_the_fresh_ones() -> None:
    """Decode reuses one set of code arrays per norm: stale codes (of an earlier token) are
    overwritten, and a token that is all zero gets zero codes, as on fresh arrays."""
    from tdsl.runtime.quant_act import plane_stride

    w = RNG.standard_normal(200).astype(np.float32)
    xq = np.zeros((4, 4 * plane_stride(200)), np.int8)
    xs, sums, y = np.empty(4, np.float32), np.empty(4, np.int32), np.empty((4, 200), np.float32)
    for x in (RNG.standard_normal((4, 200)).astype(np.float32) * 3, np.zeros((4, 200), np.float32)):
        x[1] = 0.0
        L.rms_norm_quant_into(x, w, 1e-5, y, xq, xs, sums, plane_stride(200))
        want_y, want = L.rms_norm_quant(x, w, 1e-5)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(xq, want.xq)
        np.testing.assert_array_equal(xs, want.xs)
        np.testing.assert_array_equal(sums, want.sums)


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_prequantized_linear_equals_the_quantising_one(rows: int) -> None:
    """Every kernel path this CPU runs: the rows quantised by the norm give the bits
    `gemm.ternary_linear` gives on the norm's float output."""
    from tdsl.runtime import gemm
    from tdsl.runtime.activations import code_of
    from tdsl.runtime.cpu_features import has_avx2, has_avx512_vnni
    from tdsl.runtime.packing import pack

    K, N = 300, 70
    x = RNG.standard_normal((rows, K)).astype(np.float32)
    w = RNG.standard_normal(K).astype(np.float32)
    packed = pack(RNG.integers(-1, 2, (N, K), dtype=np.int8), "2bit")
    s, bias = RNG.uniform(0.1, 1, N).astype(np.float32), RNG.standard_normal(N).astype(np.float32)
    res = RNG.standard_normal((rows, N)).astype(np.float32)
    paths = ["portable"] + ["avx2"] * has_avx2() + ["vnni"] * has_avx512_vnni()
    for path in paths:
        normed, q = L.rms_norm_quant(x, w, 1e-6, batch_multiple=L.batch_multiple(path, rows))
        want = gemm.ternary_linear(normed, packed, s, bias, residual=res, activation="relu", path=path)
        got = np.empty((rows, N), np.float32)
        L.ternary_linear_quantized(got, q, packed, s, bias, res, code_of("relu"), path)
        np.testing.assert_array_equal(got, want, err_msg=path)
    with pytest.raises(TdslError, match="do not fit"):
        L.ternary_linear_quantized(np.empty((rows, N + 1), np.float32), q, packed, s, bias, res, 0, "portable")


def test_the_vector_exp_is_within_two_ulp_of_exp() -> None:
    """`_exp_shifted` (the attention's softmax numerators) against float64 exp: every shifted
    score in [-87, 0] within 2 float32 ulp; below -87 it counts as exp(-87) (< 2e-38)."""
    from numba import njit

    @njit
    def run(scores, top):
        L._exp_shifted(scores, scores.shape[0], top, np.empty(scores.shape[0], np.int32))

    x = np.concatenate([np.linspace(-87.0, 0.0, 200_001), RNG.uniform(-87.0, 0.0, 100_000), [0.0, -1e-30, -0.5]])
    got = (x + 1.5).astype(np.float32)
    shifted = got.astype(np.float64) - 1.5  # the float32 arguments exactly as the kernel forms them
    run(got, np.float32(1.5))
    want = np.exp(np.float32(shifted).astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 2.0
    low = np.array([-100.0, -1e4, -np.inf], np.float32)
    run(low, np.float32(0.0))
    assert low[0] == low[1] == low[2] and 1e-38 < low[0] < 2e-38
    nan = np.array([np.nan, 0.0], np.float32)
    run(nan, np.float32(0.0))
    assert np.isnan(nan[0]) and nan[1] == 1.0  # a NaN score stays NaN (the softmax is NaN, not silently 0)
