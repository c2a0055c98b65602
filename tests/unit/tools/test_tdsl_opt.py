"""tdsl-opt in process: exit codes, one clean diagnostic, atomic -o, --help."""
from __future__ import annotations

from pathlib import Path

import pytest

from tdsl.tools.tdsl_opt import main

IR = Path(__file__).resolve().parents[2] / "ir"
GOOD = IR / "shape-infer.mlir"

MODULE = """builtin.module attributes {tdsl.entry = @Head} {
  tdsl.layer @Head layer "Head" params {} {
    tdsl.param @w : tensor<10x256xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x: tensor<?x256xf32>) -> tensor<*xf32> {
      %w = tdsl.get_param @w : tensor<10x256xf32>
      %y = tdsl.linear %x, %w : (tensor<?x256xf32>, tensor<10x256xf32>) -> tensor<*xf32>
      tdsl.return %y : tensor<*xf32>
    }
  }
}
"""


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "head.mlir"
    path.write_text(MODULE)
    return path


def test_runs_pipeline(good: Path, capsys) -> None:
    assert main([str(good), "-p", "shape-infer,canonicalize"]) == 0
    assert "-> tensor<?x10xf32>" in capsys.readouterr().out


def test_emit_generic(good: Path, capsys) -> None:
    assert main([str(good), "--emit", "generic"]) == 0
    assert '"tdsl.linear"(%x, %w)' in capsys.readouterr().out


def test_print_ir_after_all(good: Path, capsys) -> None:
    assert main([str(good), "-p", "shape-infer,canonicalize", "--print-ir-after-all"]) == 0
    err = capsys.readouterr().err
    assert "// -----// IR after shape-infer //----- //" in err
    assert "// -----// IR after canonicalize //----- //" in err


def test_output_file_written_on_success(good: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.mlir"
    assert main([str(good), "-p", "shape-infer", "-o", str(out)]) == 0
    assert "tensor<?x10xf32>" in out.read_text()
    assert capsys.readouterr().out == ""


def no_traceback(err: str) -> None:
    assert "Traceback" not in err
    assert err.count("error:") == 1


def test_shape_error_one_diagnostic_and_no_output(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.mlir"
    bad.write_text(MODULE.replace("tensor<?x256xf32>", "tensor<?x512xf32>").replace(
        "-> tensor<*xf32>\n      tdsl.return", '-> tensor<*xf32> loc("net.tdsl":6:7)\n      tdsl.return'))
    out = tmp_path / "out.mlir"
    assert main([str(bad), "-p", "shape-infer", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("net.tdsl:6:7: error: linear: input has 512 features but weight expects 256")
    no_traceback(err)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


def test_parse_error_has_position_and_caret(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "syntax.mlir"
    bad.write_text('builtin.module {\n  %y = tdsl.relu 5\n}\n')
    assert main([str(bad)]) == 1
    err = capsys.readouterr().err
    first, line, caret = err.splitlines()[:3]
    assert first.startswith(f"{bad}:2:")
    assert ": error: " in first
    assert line == "  %y = tdsl.relu 5"
    assert caret.strip().startswith("^")
    no_traceback(err)


def test_verifier_error_names_the_op(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "verify.mlir"
    bad.write_text(MODULE.replace('kind = "param"}', 'kind = "param"} loc("net.tdsl":3:5)').replace(
        'init = "zeros"', 'init = "xavier"'))
    assert main([str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("net.tdsl:3:5: error: 'tdsl.param' @w init must be one of")
    no_traceback(err)


@pytest.mark.parametrize("argv, message", [
    (["-p", "nosuch"], "tdsl-opt: error: invalid pass pipeline 'nosuch': Unrecognized passes"),
    (["-p", "shape-infer{a=1,b=2"], "tdsl-opt: error: invalid pass pipeline 'shape-infer{a=1,b=2' at column 18"),
])
def test_bad_pipeline(good: Path, capsys, argv, message) -> None:
    assert main([str(good), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message)
    no_traceback(err)


def test_missing_file(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope.mlir")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tdsl-opt: error: ") and "nope.mlir" in err
    no_traceback(err)


def test_unknown_extension(tmp_path: Path, capsys) -> None:
    path = tmp_path / "x.txt"
    path.write_text("")
    assert main([str(path)]) == 1
    assert capsys.readouterr().err == "tdsl-opt: error: Unrecognized file extension 'txt'\n"


def test_usage_error_exits_1(capsys) -> None:
    assert main(["--emit", "nonsense"]) == 1
    assert "invalid choice" in capsys.readouterr().err


def test_help_lists_each_pass_on_its_own_line(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split()[:2] == ["shape-infer", "Give"] for line in lines)
    assert any(line.split()[:2] == ["canonicalize", "Remove"] for line in lines)
    assert "--print-ir-after-all" in out and "--emit" in out


MODELS = Path(__file__).resolve().parents[3] / "tdsl" / "models"


def test_dsl_input_through_default_pipeline(capsys) -> None:
    assert main([str(MODELS / "mlp.tdsl"), "-p", "shape-infer,canonicalize"]) == 0
    out = capsys.readouterr().out
    assert "tdsl.entry = @MLP" in out and "-> tensor<?x128xf32>" in out


def test_bad_param_value_is_one_diagnostic(capsys) -> None:
    assert main([str(MODELS / "mlp.tdsl"), "--param", "nonsense"]) == 1
    err = capsys.readouterr().err
    assert "--param expects NAME=VALUE, but got 'nonsense'" in err
    no_traceback(err)


def test_dash_means_standard_input_and_output(good: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import io
    import os
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MODULE.encode())))
    assert main(["-", "-p", "shape-infer", "-o", "-"]) == 0
    assert "tensor<?x10xf32>" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "-")


def test_xdsl_flags_that_do_nothing_here_are_hidden_and_refused(good: Path, capsys) -> None:
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--time-passes" not in help_text and "riscv-asm" not in help_text and "--emit" in help_text
    assert main([str(good), "--time-passes"]) == 1
    err = capsys.readouterr().err
    assert "--time-passes is an xdsl-opt option that tdsl-opt does not support" in err
    no_traceback(err)


def test_help_lists_the_allowed_option_values(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "threshold: twn | absmean | fixed | sparsity (default twn)" in out
    assert "format: 2bit | base3 (default 2bit)" in out


def test_a_redefined_symbol_is_located_at_the_second_definition(tmp_path, capsys) -> None:
    """Issue 22: xDSL's 'Redefinition of symbol' pointed at the module's first line."""
    from pathlib import Path

    from tdsl.tools.tdsl_opt import main as opt_main

    source = (Path(__file__).resolve().parents[2] / "ir" / "canonicalize.mlir").read_text()
    lines = source.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith('  tdsl.layer @Orphan layer')) + 1
    second = next(i for i, line in enumerate(lines) if line.startswith('  tdsl.layer @Used layer')) + 1
    path = tmp_path / "redef.mlir"
    path.write_text(source.replace('tdsl.layer @Orphan layer "Orphan"', 'tdsl.layer @Used layer "Orphan"'))
    assert opt_main([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'{path}:{second}:3: error: redefinition of symbol "Used"'), err
    assert f"note: first defined at {path}:{first}:3" in err
