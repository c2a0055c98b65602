"""A `.mlir` integer past Python's 4300-digit conversion limit is a located parse error
(found by the `.mlir` fuzzer: it used to surface as a bare ValueError message)."""
from __future__ import annotations

from pathlib import Path

from tdsl.tools.tdsl_opt import main


def test_huge_integer_attribute_is_a_located_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "big.mlir"
    path.write_text("builtin.module attributes {x = " + "9" * 5000 + " : i64} {\n}\n")
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1:32: error: integer literal too long (more than 4300 digits)" in err
    assert "Traceback" not in err and "set_int_max_str_digits" not in err


def test_unterminated_string_fails_fast_not_exponentially(tmp_path: Path, capsys) -> None:
    """The .mlir fuzzer's hang: xDSL's string pattern backtracked exponentially on a string
    that never closes (minutes for this line); it must be a located error at once."""
    import time

    path = tmp_path / "open.mlir"
    path.write_text('func.func @f(%x: tensor<?x8xf32>, %p: !tern.packed<4x8x1, "2bitL>, '
                    '%s: tensor<4xf32>) -> tensor<*xf32> {\n')
    start = time.perf_counter()
    assert main([str(path)]) == 1
    assert time.perf_counter() - start < 5.0  # a bound, not a benchmark: the hang took minutes
    assert f"{path}:1:59: error: End of file reached before closing string literal." in capsys.readouterr().err


def test_deeply_nested_types_are_a_located_error(tmp_path: Path, capsys) -> None:
    """Another .mlir fuzzer finding: a type nested past Python's recursion limit raised a
    RecursionError out of xDSL's parser."""
    path = tmp_path / "deep.mlir"
    path.write_text("func.func @f(%x: " + "(" * 3000 + "f32" + ")" * 3000 + ") {\n  func.return\n}\n")
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1:" in err and "error: input nested too deeply to parse" in err
    assert "Traceback" not in err
