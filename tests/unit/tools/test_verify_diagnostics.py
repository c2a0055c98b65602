"""tdsl-opt --verify-diagnostics: mlir-opt's rule (every annotation matched, nothing unexpected)
and positions for `.mlir` errors that carry no `loc(...)`."""
from __future__ import annotations

from pathlib import Path

import pytest

from tdsl.tools.tdsl_opt import main
from tdsl.tools.verify_diagnostics import parse_expectations

BAD_LINEAR = """func.func @f(%x: tensor<?x8xf32>, %w: tensor<4x8x1xf32>) -> tensor<*xf32> {
  // expected-error @+1 {{ANNOTATION}}
  %y = tdsl.linear %x, %w : (tensor<?x8xf32>, tensor<4x8x1xf32>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}
"""
GOOD_FUNC = """func.func @g(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  func.return %x : tensor<?x8xf32>
}
"""


def run(tmp_path: Path, text: str, *flags: str) -> int:
    path = tmp_path / "t.mlir"
    path.write_text(text)
    return main([str(path), "--split-input-file", "--verify-diagnostics", *flags])


def test_matching_annotation_passes_and_prints_the_good_chunks(tmp_path: Path, capsys) -> None:
    text = BAD_LINEAR.replace("ANNOTATION", "'tdsl.linear' weight must have rank 2") + "// -----\n" + GOOD_FUNC
    assert run(tmp_path, text) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "func.func @g" in out and "tdsl.linear" not in out


@pytest.mark.parametrize("annotation", [
    "expected-error @+1 {{'tdsl.linear' weight must have rank 3}}",  # wrong text
    "expected-error @+2 {{'tdsl.linear' weight}}",                    # wrong line
    "expected-note @+1 {{'tdsl.linear' weight}}",                     # wrong kind
])
def test_wrong_annotation_fails_naming_both_sides(tmp_path: Path, capsys, annotation: str) -> None:
    text = BAD_LINEAR.replace("expected-error @+1 {{ANNOTATION}}", annotation)
    assert run(tmp_path, text) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 't.mlir'}:3:3: error: unexpected error: 'tdsl.linear' weight must have rank 2" in err
    assert f"{tmp_path / 't.mlir'}:2:6: error: expected " in err and "was not produced" in err
    assert err.rstrip().endswith("2 diagnostics did not match the expected-* annotations")
    assert "Traceback" not in err


def test_expected_error_that_is_not_produced_fails(tmp_path: Path, capsys) -> None:
    text = "// expected-error @below {{something}}\n" + GOOD_FUNC
    assert run(tmp_path, text) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 't.mlir'}:1:4: error: expected error \"something\" at line 2 was not produced" in err


def test_unannotated_error_fails(tmp_path: Path, capsys) -> None:
    assert run(tmp_path, BAD_LINEAR.replace("// expected-error @+1 {{ANNOTATION}}", "// no annotation")) == 1
    assert "unexpected error: 'tdsl.linear' weight must have rank 2" in capsys.readouterr().err


def test_error_located_in_another_file_is_unexpected(tmp_path: Path, capsys) -> None:
    """As in mlir-opt: a `loc("net.tdsl":...)` diagnostic cannot match an annotation in this file."""
    text = BAD_LINEAR.replace("ANNOTATION", "'tdsl.linear' weight").replace(
        "-> tensor<*xf32>\n  func.return", '-> tensor<*xf32> loc("net.tdsl":7:1)\n  func.return')
    assert run(tmp_path, text) == 1
    assert "net.tdsl:7:1: error: unexpected error: 'tdsl.linear'" in capsys.readouterr().err


def test_parse_error_and_regex_annotations_in_split_chunks(tmp_path: Path, capsys) -> None:
    text = (GOOD_FUNC + "// -----\n"
            + "// expected-error-re @+1 {{format must be one of {{.*}}, but got \"3bit\"}}\n"
            + 'func.func @f(%p: !tern.packed<4x8, "3bit">) {\n  func.return\n}\n'
            + "// -----\n"
            + "func.func @h() {\n  %y = tdsl.relu 5 // expected-error {{expected}}\n}\n")
    assert run(tmp_path, text) == 0, capsys.readouterr().err


def test_unknown_location_matches_only_at_unknown(tmp_path: Path, capsys) -> None:
    """The implicit module has no position: its pass error matches `@unknown`; an explicit one is located."""
    unknown = "// expected-error @unknown {{shape-infer: module has no `tdsl.entry`}}\n"
    assert run(tmp_path, unknown + GOOD_FUNC, "-p", "shape-infer") == 0, capsys.readouterr().err
    explicit = "builtin.module {\n" + GOOD_FUNC + "}\n"
    assert run(tmp_path, unknown + explicit, "-p", "shape-infer") == 1
    assert "t.mlir:2:1: error: unexpected error: shape-infer: module has no" in capsys.readouterr().err
    located = "// expected-error @+1 {{shape-infer: module has no `tdsl.entry`}}\n"
    assert run(tmp_path, located + explicit, "-p", "shape-infer") == 0


def test_designators() -> None:
    """Lines holding annotations are skipped by @above/@below, as in mlir-opt."""
    text = "a\nb // expected-error {{same}}\n// expected-note @above {{c}}\n// expected-error @below {{d}}\n" \
           "// expected-warning @below {{e}}\nx\n// expected-error @-6 {{f}}\n"
    got = [(e.kind, e.text, e.line) for e in parse_expectations(text, "f.mlir", line_offset=10)]
    assert got == [("error", "same", 12), ("note", "c", 11), ("error", "d", 16), ("warning", "e", 16),
                   ("error", "f", 11)]


def test_verify_error_without_loc_has_the_parsers_position(tmp_path: Path, capsys) -> None:
    path = tmp_path / "v.mlir"
    path.write_text(BAD_LINEAR)
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:3:3: error: 'tdsl.linear' weight must have rank 2")
    assert err.splitlines()[1] == "  %y = tdsl.linear %x, %w : (tensor<?x8xf32>, tensor<4x8x1xf32>) -> tensor<*xf32>"


def test_type_verifier_error_while_parsing_has_a_position(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.mlir"
    path.write_text('func.func @f(%p: !tern.packed<4x8, "3bit">) {\n  func.return\n}\n')
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:1:18: error: '!tern.packed' format must be one of 2bit, base3")
    assert err.splitlines()[2].startswith(" " * 17 + "^")


def test_parser_positions_do_not_show_up_in_the_output(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.mlir"
    path.write_text(GOOD_FUNC)
    assert main([str(path), "--print-debuginfo"]) == 0
    out = capsys.readouterr().out
    assert "g.mlir" not in out and "loc(unknown)" in out
