"""The decoding kernels (`tdsl.runtime.llm_kernels`) against their numpy definitions:
RMSNorm (`tdsl.ops.sequence.rms_norm`), rotary embedding and cached attention
(`tdsl.runtime.attention`), and the int8-per-row head GEMV against float64 arithmetic on the
dequantised weight."""
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


@pytest.mark.parametrize("t, s, heads, kv_heads, causal", [(1, 9, 4, 2, True), (5, 5, 4, 1, True),
                                                            (3, 7, 2, 2, True), (4, 6, 4, 4, False)])
def test_attention_equals_the_reference(t: int, s: int, heads: int, kv_heads: int, causal: bool) -> None:
    dh = 8
    q = RNG.standard_normal((2, t, heads * dh)).astype(np.float32)
    k = RNG.standard_normal((2, s, kv_heads * dh)).astype(np.float32)
    v = RNG.standard_normal((2, s, kv_heads * dh)).astype(np.float32)
    np.testing.assert_allclose(L.attention(q, k, v, heads, kv_heads, causal), A.attention(q, k, v, heads, kv_heads,
                               causal), rtol=1e-5, atol=1e-5)


def test_attention_refuses_shapes_that_do_not_fit() -> None:
    q = np.zeros((1, 1, 32), np.float32)
    with pytest.raises(TdslError, match="do not fit"):
        L.attention(q, np.zeros((1, 3, 24), np.float32), np.zeros((1, 3, 24), np.float32), 4, 2, True)


@pytest.mark.parametrize("batch", [1, 3])
def test_int8_head_gemv_is_the_dequantised_product(batch: int) -> None:
    w = RNG.standard_normal((1000, 64)).astype(np.float32)
    w[3] = 0.0
    q, scale = L.quantize_rows_int8(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and scale[3] == 1.0 and not q[3].any()
    assert np.abs(q * scale[:, None] - w).max() <= scale.max() / 2 + 1e-6
    x = RNG.standard_normal((batch, 64)).astype(np.float32)
    ref = x.astype(np.float64) @ (q.astype(np.float64) * scale[:, None]).T
    np.testing.assert_allclose(L.gemv_int8_rows(x, q, scale), ref, rtol=1e-4, atol=1e-4)
