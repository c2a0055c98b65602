"""Hostile and mistaken programs: each bad-input class of issue 14 is a located `TdslError`.

Before these limits, every case here ended in a Python exception (ValueError, OverflowError,
RecursionError, KeyError, struct.error, TypeError) or ran without end.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import tdsl
from tdsl.api import resolve_source
from tdsl.errors import TdslError
from tdsl.frontend import limits
from tdsl.tools.tdsl_cli import main as tdsl_main
from tdsl.tools.tdsl_opt import main as opt_main

FWD = "fn forward(x: Tensor[float32, N, 4]) -> Tensor[float32, N, 4] { %s }"


def layer(body: str, params: str = "", ret: str = "return x") -> str:
    head = f"layer M({params})" if params else "layer M"
    return f"{head} {{\n{body}\n{FWD % ret}\n}}\n"


CASES = [
    # (id, source, line, message fragment)
    ("int-literal-past-4300-digits", "let x = " + "9" * 5000 + "\n", 1, "integer literal of 5000 digits"),
    ("int-literal-past-int64", "let x = 9223372036854775808\n", 1, "out of the int64 range"),
    ("int32-let", "let x: int32 = 4294967296\n", 1, "out of range for int32"),
    ("top-level-int-to-int32-tensor", "let x = 4294967296\n", 1, "out of range for int32"),
    ("layer-param-2-64", layer("", "n: int = 18446744073709551616"), 1, "int64 range"),
    ("list-of-2-64", layer("", "n: list = [1, 18446744073709551616]"), 1, "int64 range"),
    ("int-overflow-by-arithmetic", "let x = 3037000500\nlet y = x * x\n", 2, "integer result"),
    ("int-overflow-by-negation", "let x = -9223372036854775807 - 1\nlet y = -x\n", 2, "int64 range"),
    ("int-overflow-by-builtin", "let x = int(1e300)\n", 1, "int64 range"),
    ("float-literal-past-float64", "let x = 1e400\n", 1, "float64 range"),
    ("float-arithmetic-overflow", "let x = 1e300 * 1e300\n", 1, "not a finite float64"),
    ("float-past-float32-in-forward", layer("", ret="return x * 1e39"), 3, "out of range for float32"),
    ("float-past-float32-top-level", "let x = 1e39\n", 1, "out of range for float32"),
    ("range-of-31-digits", layer("for i in range(1000000000000000000000000000000) { }"), 2, "int64 range"),
    ("range-past-maxsize", layer("for i in range(-9223372036854775807, 9223372036854775807) { }"), 2,
     "too long to unroll"),
    ("unroll-count", layer("for i in range(10001) { }"), 2, "more than 10000 iterations"),
    ("nested-loops-step-budget", layer("for i in range(10000) {\nfor j in range(10000) { }\n}"), 3,
     "more than 100000 steps"),
    ("layer-contains-itself", "layer A(n: int = 3) {\nlet a = A(n)\n" + FWD % "return x" + "\n}\n", 2,
     "contains itself"),
    ("layer-recursion-n-plus-1", "layer A(n: int = 3) {\nlet a = A(n + 1)\n" + FWD % "return x" + "\n}\n", 2,
     "calls nest more than 64 deep"),
    ("layer-recursion-in-default", "layer A(m: int = A()) {\n" + FWD % "return x" + "\n}\n", 1,
     "calls nest more than 64 deep"),
    ("forward-calls-itself", "layer A {\n" + FWD % "return forward(x)" + "\n}\n", 2, "forward()"),
    ("helper-fn-recursion", "layer A {\nfn h(y) { return h(y) }\n" + FWD % "return h(x)" + "\n}\n", 2, "h()"),
    ("top-level-fn-recursion", "fn f(n) { return f(n + 1) }\nlet y = f(1)\n", 1, "f() -> f()"),
    ("exponential-fn-calls", "fn f(n) {\nif n == 0 { return 0 }\nreturn f(n - 1) + f(n - 1)\n}\nlet y = f(60)\n",
     3, "more than 100000 steps"),
    ("4000-nested-calls", "let x = " + "abs(" * 4000 + "1" + ")" * 4000 + "\n", 1, "nests more than 200"),
    ("10000-nested-ifs", "if true {\n" * 10000 + "}\n" * 10000, 100, "nests more than 200"),
    ("long-operator-chain", "let x = " + " + ".join(["1"] * 5000) + "\n", 1, "an operator chain of more than 4000 terms"),
    ("int-tensor-times-float", layer("", ret="return x * 1.5").replace("float32", "int8"), 3,
     "cannot be an element of an int8 tensor"),
    ("int8-tensor-times-300", layer("", ret="return x * 300").replace("float32", "int8"), 3,
     "out of range for int8"),
    ("layer-as-ternary-shape", "layer B {\n" + FWD % "return x" + "\n}\n" + layer("let w = TernaryTensor[B](1)"),
     5, "dimension must be a positive integer, got the layer 'B'"),
    ("layer-as-weight-shape", "layer B {\n" + FWD % "return x" + "\n}\n"
     + layer("let w: Tensor[float32, B] = zeros()"), 5, "got the layer 'B'"),
    ("tensor-volume", layer("let w = zeros([100000, 100000, 100000])"), 2, "more than 2147483647 elements"),
    ("tensor-dim", layer("", ret="return x").replace("N, 4]) ->", "N, 4294967296]) ->"), 3, "larger than the limit"),
    ("string-doubling", "let s = \"ab\"\n" + "s = s + s\n" * 20, 17, "string of 131072 characters"),
    ("list-doubling", "let l = [1, 2]\n" + "l = [l, l]\n" * 20, 15, "more than 100000 steps"),
]


@pytest.mark.parametrize(("source", "line", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_located_error_in_bounded_time(source: str, line: int, fragment: str) -> None:
    start = time.monotonic()
    with pytest.raises(TdslError) as info:
        tdsl.compile(source)
    assert time.monotonic() - start < 60  # generous: CI machines are shared
    err = info.value
    assert fragment in err.message
    assert err.loc is not None and err.loc.line == line
    assert err.render().splitlines()[-1].strip() == "^"  # the caret under the source line


def test_a_flat_program_of_1001_statements_compiles() -> None:
    source = "".join(f"let a{i} = {i}\n" for i in range(1001))
    model = tdsl.compile(source)
    assert "a1000" in model.ir


def test_legal_extremes_still_compile() -> None:
    source = layer("let n = " + "(" * 60 + "1" + ")" * 60 + "\nfor i in range(10000) { }",
                   f"big: int = {limits.INT64_MAX}, small: int = -{limits.INT64_MAX} - 1, f: float = 1.7e308",
                   ret="return x * 3.0e38")
    model = tdsl.compile(source, pipeline="")
    assert "9223372036854775807" in model.ir and "-9223372036854775808" in model.ir


def test_flat_size_stops_at_the_limit_on_shared_sublists() -> None:
    value: list = [1]
    for _ in range(200):
        value = [value, value]  # 2**200 elements counted flat, built in 200 steps
    start = time.monotonic()
    with pytest.raises(limits.LimitError, match="more than 65536 elements"):
        limits.flat_size(value, None)
    assert time.monotonic() - start < 1


def test_params_from_the_api_are_range_checked() -> None:
    source = layer("", "n: int = 1")
    with pytest.raises(TdslError, match="int64 range") as info:
        tdsl.compile(source, params={"n": 2**64})
    assert info.value.loc is not None and info.value.loc.line == 1


def test_non_utf8_file_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.tdsl"
    path.write_bytes(b"let x = 1\nlet y = \"\xff\xfe\"\n")
    with pytest.raises(TdslError, match="not valid UTF-8 \\(byte 0xff\\)") as info:
        resolve_source(path)
    assert (info.value.loc.line, info.value.loc.col) == (2, 10)
    assert "let y" in info.value.render()


def test_a_utf8_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.tdsl"
    path.write_bytes(b"\xef\xbb\xbflet x = 1\n")
    assert resolve_source(path)[0] == "let x = 1\n"


def test_source_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_SOURCE_CHARS", 100)
    with pytest.raises(TdslError, match="more than the limit of 100") as info:
        tdsl.compile("let x = 1\n" * 20)
    assert info.value.loc is not None


@pytest.mark.parametrize("tool", ["tdsl", "tdsl-opt"])
def test_cli_prints_the_located_error_and_exits_1(tool: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rec.tdsl"
    path.write_text("layer A(n: int = 3) {\nlet a = A(n + 1)\n" + FWD % "return x" + "\n}\n")
    rc = tdsl_main(["compile", str(path)]) if tool == "tdsl" else opt_main([str(path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{path}:2:9: error: calls nest more than 64 deep" in err
    assert "Traceback" not in err


def test_tdsl_opt_non_utf8_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.tdsl"
    path.write_bytes(b"let x = 1\n\xff\n")
    assert opt_main([str(path)]) == 1
    assert f"{path}:2:1: error: the file is not valid UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize(("expr", "message"), [
    ("x * 0.5", "the float 0.5 cannot be an element of a trit tensor"),
    ("x + 2", "2 is out of range for trit [-1, 1]"),
])
def test_a_scalar_that_a_trit_tensor_cannot_hold_is_located(expr: str, message: str) -> None:
    """Issue 22: `Tensor[trit, 4] * 0.5` packed 0.5 as a trit and failed in struct.pack."""
    source = f"layer T {{ fn forward(x: Tensor[trit, 4]) -> Tensor[trit, 4] {{ return {expr} }} }}\n"
    with pytest.raises(TdslError) as info:
        tdsl.compile(source)
    assert message in info.value.message
    assert (info.value.loc.line, info.value.loc.col) == (1, source.index(expr) + 1)


def test_a_lone_surrogate_is_located_and_the_message_prints() -> None:
    source = "layer T {\n fn forward(x: Tensor[float32, 4]) -> Tensor[float32, 4] { return x + \udc80 }\n}\n"
    with pytest.raises(TdslError, match="lone surrogate U\\+DC80") as info:
        tdsl.compile(source)
    assert (info.value.loc.line, info.value.loc.col) == (2, source.splitlines()[1].index("\udc80") + 1)
    assert "\ufffd" in info.value.render().encode("utf-8").decode("utf-8")


@pytest.mark.parametrize("text", ["1" * 256, "x" * 300 + ".tdsl", "a/" * 200, "\udc80" * 10 + ".tdsl"])
def test_one_line_text_taken_for_a_path_is_an_error(text: str) -> None:
    """Issue 22: `tdsl.compile("1" * 256)` asked the file system and got 'File name too long'."""
    with pytest.raises(TdslError) as info:
        tdsl.compile(text)
    info.value.render().encode("utf-8")
