"""The pass registry: names match, pipelines parse, bad pipelines are PassErrors."""
from __future__ import annotations

import pytest

from tdsl.errors import PassError, TdslError
from tdsl.passes import PASSES
from tdsl.passes.pipelines import DEFAULT_PIPELINE, parse_pipeline


@pytest.mark.parametrize("key", sorted(PASSES))
def test_key_is_pass_name(key: str) -> None:
    assert PASSES[key]().name == key


def test_default_pipeline_parses() -> None:
    assert [p.name for p in parse_pipeline(DEFAULT_PIPELINE).passes] == ["shape-infer", "canonicalize"]


@pytest.mark.parametrize("spec, message", [
    ("nosuch", "invalid pass pipeline 'nosuch': Unrecognized passes: ['nosuch'] "
               "(available: shape-infer, canonicalize, ternarize, precision, pack, inline, fuse)"),
    ("shape-infer,ternarise{policy=all}", "invalid pass pipeline 'shape-infer,ternarise{policy=all}': "
                                          "Unrecognized passes: ['ternarise'] (did you mean 'ternarize'?) (available:"),
    ("shape-infer{bogus=1}", "invalid pass pipeline 'shape-infer{bogus=1}': Provided arguments [\"bogus\"] not found"),
    ("ternarize{bogus=1}", "invalid pass pipeline 'ternarize{bogus=1}': Provided arguments [\"bogus\"] not found in "
                           "expected arguments [\"policy\", \"threshold\", \"delta\", \"sparsity\", \"per-channel\""),
    ("shape-infer{a=1,b=2", "invalid pass pipeline 'shape-infer{a=1,b=2' at column 18: Malformed pass arguments"),
])
def test_bad_pipeline_is_pass_error(spec: str, message: str) -> None:
    with pytest.raises(PassError) as info:
        parse_pipeline(spec)
    assert info.value.message.startswith(message)
    assert "\n" not in info.value.message


def test_tdsl_error_from_a_pass_propagates_unchanged() -> None:
    from xdsl.dialects.builtin import ModuleOp

    from tdsl.dialects.context import make_context

    with pytest.raises(PassError, match="shape-infer: module has no `tdsl.entry`") as info:
        parse_pipeline("shape-infer").apply(make_context(), ModuleOp([]))
    assert isinstance(info.value, TdslError)
