"""One home per `tdsl` subcommand: `tdsl.tools.<name>` with `add_parser` and `main`, and no
argparse parser built anywhere else in the package."""
from __future__ import annotations

import ast
import importlib
import keyword
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tdsl
from tdsl.tools.tdsl_cli import COMMANDS, main

PACKAGE = Path(tdsl.__file__).resolve().parent
TOOLS = PACKAGE / "tools"


def subcommands(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The subcommands `tdsl --help` lists, in its order."""
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    found = re.search(r"^  \{([a-z,-]+)\}$", usage, re.MULTILINE)  # "positional arguments:"
    assert found, usage
    return found.group(1).split(",")


def module_of(command: str) -> str:
    """tdsl.tools.<command>, with a trailing underscore where the command is a Python keyword (import_)."""
    return f"tdsl.tools.{command}{'_' if keyword.iskeyword(command) else ''}"


def test_every_subcommand_has_its_own_module(capsys: pytest.CaptureFixture[str]) -> None:
    names = subcommands(capsys)
    assert len(names) >= 9 and {"compile", "run", "models", "train", "quantize", "export", "import"} <= set(names)
    for name in names:
        module = importlib.import_module(module_of(name))
        assert callable(getattr(module, "add_parser", None)), f"tdsl.tools.{name} has no add_parser"
        assert callable(getattr(module, "main", None)), f"tdsl.tools.{name} has no main"
    assert [m.__name__ for m in COMMANDS] == [module_of(name) for name in names]


def test_each_command_main_prints_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for name in subcommands(capsys):
        module = importlib.import_module(module_of(name))
        try:
            code = module.main(["--help"])
        except SystemExit as e:  # argparse's own exit; the modules return the status instead
            code = e.code
        assert code in (0, None), name
        out = capsys.readouterr().out
        assert out.startswith(f"usage: tdsl {name} "), out
        main([name, "--help"])
        assert capsys.readouterr().out == out, f"`tdsl {name} --help` differs from tdsl.tools.{name}.main"


def test_a_command_module_runs_alone(capsys: pytest.CaptureFixture[str]) -> None:
    from tdsl.tools import models

    assert main(["models"]) == 0
    expected = capsys.readouterr().out
    assert models.main([]) == 0
    assert capsys.readouterr().out == expected
    assert models.main(["--no-such-option"]) == 1
    assert "unrecognized arguments" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "tdsl.tools.models"], capture_output=True, text=True,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0 and proc.stdout == expected, proc.stderr


def _parser_calls(path: Path) -> list[str]:
    """`ArgumentParser(...)`, `.add_subparsers(...)` and `.add_parser(...)` calls in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("ArgumentParser", "add_subparsers", "add_parser"):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {name}(")
    return found


def test_no_parser_is_built_outside_tdsl_tools() -> None:
    assert _parser_calls(TOOLS / "common.py"), "the scan no longer recognises a parser"
    stray = [hit for path in sorted(PACKAGE.rglob("*.py")) if TOOLS not in path.parents
             for hit in _parser_calls(path)]
    assert not stray, "argparse parsers belong in tdsl/tools/ (one module per command):\n" + "\n".join(stray)
