"""Issue 22's held-out programs: a long left-associative sum is a chain, not nesting (the
original project's valid_030.tri: 1,000 `let`s and one sum of 1,000 terms), and the IR of a
zoo model records where it came from without this installation's absolute path."""
from __future__ import annotations

import numpy as np
import pytest

import tdsl
from tdsl.errors import TdslError


def _sum_program(terms: int) -> str:
    lets = "\n".join(f"        let a{i} = x * {i % 7 + 1}" for i in range(1000))
    total = " + ".join(f"a{i % 1000}" for i in range(terms))
    return ("layer Sum {\n    fn forward(x: Tensor[float32, N, 4]) -> Tensor[float32, N, 4] {\n"
            f"{lets}\n        return {total}\n    }}\n}}\n")


def test_a_thousand_lets_and_a_sum_of_a_thousand_terms_compile_and_run() -> None:
    import torch

    model = tdsl.compile(_sum_program(1000))
    out = model.to_torch()(torch.ones(2, 4))
    expected = sum(i % 7 + 1 for i in range(1000))
    np.testing.assert_allclose(out.detach().numpy(), np.full((2, 4), expected, np.float32))


def test_a_chain_past_its_bound_is_located_and_nesting_still_counts() -> None:
    with pytest.raises(TdslError, match="an operator chain of more than 4000 terms") as info:
        tdsl.compile(_sum_program(4001), pipeline="")
    assert info.value.loc is not None and info.value.loc.line == 1003
    nested = "layer T { fn forward(x: Tensor[float32, 4]) -> Tensor[float32, 4] { return " \
             + "x + (" * 300 + "x" + ")" * 300 + " } }\n"
    with pytest.raises(TdslError, match="nests more than 200 levels"):
        tdsl.compile(nested, pipeline="")


def test_the_ir_of_a_zoo_model_names_it_inside_the_package() -> None:
    """Issue 22: `tdsl compile mlp` wrote /abs/path/of/site-packages/tdsl/models/mlp.tdsl."""
    for name in ("mlp", "lenet"):
        assert f'tdsl.source = "tdsl/models/{name}.tdsl"' in tdsl.compile(name).ir
