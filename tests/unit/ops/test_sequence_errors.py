"""Bad arguments to the sequence-model built-ins are located errors (file:line:col), never tracebacks."""
from __future__ import annotations

import pytest

import tdsl

PROGRAM = """
layer P() {{
    let emb: Tensor[float32, 16, 8] = randn()
    let g: Tensor[float32, 8] = ones()
    fn forward(ids: Tensor[int32, N, T], x: Tensor[float32, N, T, 8]) -> Tensor[float32] {{
        let y = x
        return {expr}
    }}
}}
"""

CASES = [
    ("attention(x, x, x, 3)", "attention: query has 8 features, not divisible by 3 heads"),
    ("attention(x, x, x, 4, kv_heads=3)", "heads \\(4\\) must be a multiple of kv_heads \\(3\\)"),
    ("attention(x, x, x, 0)", "heads must be at least 1, got 0"),
    ("attention(x, x, x, 2, causal=1)", "causal must be true or false"),
    ("attention(x, slice(x, -1, 0, 6), slice(x, -1, 0, 6), 2, kv_heads=2)",
     "attention: query head dim 4 \\(2 heads\\) differs from key head dim 3"),
    ("rope(x, 8)", "rope: the head dim 1 must be even"),
    ("rope(x, 3)", "rope: input has 8 features, not divisible by 3 heads"),
    ("rope(x, 2, base=1)", "base must be greater than 1"),
    ("rms_norm(x, emb)", "rms_norm"),
    ("embedding(x, emb)", "ids must be an integer tensor"),
    ("embedding(ids, g)", "weight must have rank 2"),
    ("slice(x, -1, 4, 2)", "slice\\(\\) end \\(2\\) must be greater than start \\(4\\)"),
    ("slice(x, -1, 0, 9)", "slice: \\[0, 9\\) is not a non-empty range of dim 2"),
    ("slice(x, 1, -2, -1)", "slice: negative bounds need a static dim"),
    ("permute(x, [0, 1, 1])", "permute\\(\\) dims \\[0, 1, 1\\] must be a permutation"),
    ("permute(x, [1, 0])", "permute"),
    ("transpose(x, 0, 5)", "transpose"),
    ("concat(x, ids, dim=1)", "concat"),
    ("concat(x, slice(x, 2, 0, 1), dim=1)", "concat: dim 2 differs"),
]


@pytest.mark.parametrize("expr, message", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments_are_located(expr: str, message: str) -> None:
    with pytest.raises(tdsl.TdslError, match=message) as info:
        tdsl.compile(PROGRAM.format(expr=expr))
    assert info.value.loc is not None and info.value.loc.line == 7, str(info.value)
    assert "Traceback" not in str(info.value)
