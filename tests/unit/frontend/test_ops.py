"""Built-in functions: each option check reports the bad argument at its DSL location.

Every case is one `forward` line (line 3 of the program) or one compile-time `let` (line 2)
with a wrong argument; the test checks the message and the column of the culprit.
"""
from __future__ import annotations

import pytest

import tdsl
from tdsl.errors import TdslError


def fwd(expr: str, x: str = "Tensor[float32, N, 4, 8, 8]") -> str:
    return f"layer M {{\n let w = zeros([4, 4])\n fn forward(x: {x}) {{ return {expr} }}\n}}\n"


def body(stmt: str) -> str:
    return f"layer M {{\n {stmt}\n fn forward(x: Tensor[float32, N, 4]) {{ return x }}\n}}\n"


SEQ = "Tensor[float32, N, 6, 8]"
CASES = [
    # compile-time helpers and initialisers
    (body("let a = range(1.5)"), 2, "range() needs integers, got float 1.5"),
    (body("let a = range(0, 4, 0)"), 2, "range() step must not be zero"),
    (body("let a = min([])"), 2, "needs at least one value"),
    (body("let a = max(1, \"s\")"), 2, "min()/max() needs a number, got string 's'"),
    (body("let a = len(3)"), 2, "len() needs a list, got int 3"),
    (body("let a = sqrt(-4)"), 2, "sqrt() of a negative number"),
    (body("let a = int(true)"), 2, "int() needs a number, got bool true"),
    (body("let a = zeros(\"x\")"), 2, "a shape is a list of integers, got string 'x'"),
    (body("let a = zeros([2, 1.5])"), 2, "a shape dimension must be an integer, got float 1.5"),
    (body("let a = zeros([2, 0])"), 2, "a shape dimension must be positive, got 0"),
    (body("let a = zeros([4294967296])"), 2, "larger than the limit"),
    (body("let a = uniform([2])"), 2, "uniform() is missing the argument 'bound'"),
    (body("let a = relu(1)"), 2, "relu() works on tensors: call it inside forward"),
    # tensor built-ins
    (fwd("conv2d(x, w, stride=[1, 2, 3])"), 3, "stride must be an integer or a list of two"),
    (fwd("conv2d(x, w, stride=0)"), 3, "stride must be at least 1, got 0"),
    (fwd("conv2d(x, w, groups=true)"), 3, "groups must be an integer, got bool true"),
    (fwd("conv2d(x, w, groups=0)"), 3, "groups must be at least 1, got 0"),
    (fwd("conv2d(1, w)"), 3, "conv2d() argument 'x' must be a tensor, got int 1"),
    (fwd("conv_transpose2d(x, w, output_padding=1)"), 3, "output_padding must be smaller than stride or dilation"),
    (fwd("conv_transpose2d(x, w, stride=2, output_padding=-1)"), 3, "output_padding must be at least 0, got -1"),
    (fwd("conv_transpose2d(x, w, padding=[1])"), 3, "padding must be an integer or a list of two"),
    (fwd("batch_norm(x, w, w, w, w, eps=0)"), 3, "eps must be positive"),
    (fwd("batch_norm(x, w, w, w, w, momentum=1.5)"), 3, "momentum must be in [0, 1)"),
    (fwd("max_pool2d(x, 2, padding=2)"), 3, "padding [2, 2] must be at most half the kernel [2, 2]"),
    (fwd("softmax(x, dim=1.5)"), 3, "dim must be an integer, got float 1.5"),
    (fwd("reshape(x, 4)"), 3, "reshape() needs a list of integers, got int 4"),
    (fwd("reshape(x, [-1, -1])"), 3, "may hold one -1 and positive sizes only"),
    (fwd("dropout(x, p=1)"), 3, "p must be in [0, 1)"),
    (fwd("permute(x, [0, 0, 1, 2])"), 3, "must be a permutation of 0..3"),
    (fwd("permute(x, 3)"), 3, "dims must be a list of integers, got int 3"),
    (fwd("slice(x, 1, 3, 2)"), 3, "slice() end (2) must be greater than start (3)"),
    (fwd("rope(x, heads=2, base=1)", SEQ), 3, "base must be greater than 1"),
    (fwd("rope(x, heads=0)", SEQ), 3, "heads must be at least 1, got 0"),
    (fwd("attention(x, x, x, heads=3, kv_heads=2)", SEQ), 3, "heads (3) must be a multiple of kv_heads (2)"),
    (fwd("attention(x, x, x, heads=2, causal=1)", SEQ), 3, "causal must be true or false, got int 1"),
    (fwd("flatten(x, start_dim=\"a\")"), 3, "start_dim must be an integer"),
    (fwd("relu(x, y=1)"), 3, "relu() got an unexpected keyword argument 'y'"),
    (fwd("linear(x)"), 3, "linear() is missing the argument 'w'"),
    (fwd("relu(x, x)"), 3, "relu() takes at most 1 positional argument (2 given)"),
]


@pytest.mark.parametrize(("source", "line", "message"), CASES, ids=[c[2][:40] for c in CASES])
def test_builtin_argument_errors_are_located(source: str, line: int, message: str) -> None:
    with pytest.raises(TdslError) as info:
        tdsl.compile(source, pipeline="")
    assert message in info.value.message
    assert info.value.loc is not None and info.value.loc.line == line


K = "layer K(v: list) {\n fn forward(x: Tensor[float32, N, 4]) { return x }\n}\n"


@pytest.mark.parametrize(("expr", "attr"), [
    ("range(2, 10, 3)", "[2 : i64, 5 : i64, 8 : i64]"), ("min(3, 1, 2)", "1 : i64"),
    ("max([3, 1, 2])", "3 : i64"), ("len([1, 2, 3])", "3 : i64"), ("int(2.7)", "2 : i64"),
    ("round(2.5)", "2 : i64"), ("abs(-4)", "4 : i64"), ("sqrt(16)", "4.000000e+00 : f64"),
    ("float(3)", "3.000000e+00 : f64"), ("7 / 2", "3.500000e+00 : f64"), ("8 / 2", "4 : i64"),
    ("7 % 3", "1 : i64"), ("\"a\" + \"b\"", '"ab"'), ("[1] + [2]", "[1 : i64, 2 : i64]"),
    ("3 > 2 and 1 <= 1", "true"), ("not (1 == 2)", "true"), ("[1, 2][1]", "2 : i64"),
])
def test_compile_time_values_reach_the_ir(expr: str, attr: str) -> None:
    """A compile-time result, passed to a sub-layer, appears as that layer's parameter."""
    source = K + f"layer M {{\n let k = K([{expr}])\n fn forward(x: Tensor[float32, N, 4]) {{ return k(x) }}\n}}\n"
    line = next(ln for ln in tdsl.compile(source, pipeline="").ir.splitlines() if "@K " in ln)
    assert f"params {{v = [{attr}]}}" in line


def test_a_layer_default_that_is_a_layer_is_located() -> None:
    """Found by the long fuzz run: the default made the specialisation key unhashable."""
    source = "layer Y(t = Conv2d or 1) {\n fn forward(x: Tensor[float32, N, 4]) { return x }\n}\n"
    with pytest.raises(TdslError, match="parameter 't' of layer 'Y' must be a compile-time value"):
        tdsl.compile(source, pipeline="")


def test_a_layer_parameter_that_is_not_a_value_is_located() -> None:
    source = K + "layer M {\n let k = K([none])\n fn forward(x: Tensor[float32, N, 4]) { return k(x) }\n}\n"
    with pytest.raises(TdslError, match="must be a compile-time value .* got nothing") as info:
        tdsl.compile(source, pipeline="")
    assert (info.value.loc.line, info.value.loc.col) == (5, 10)
