"""Import rules that keep the stages apart, read from the source (no import runs):
no private name is imported across packages, no backend imports another backend, and
backends run no pass (`tdsl.lowering` owns lowering)."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "tdsl"


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _package_of(path: Path) -> str:
    return ".".join(("tdsl", *path.parent.relative_to(ROOT).parts))


def _runtime_imports(tree: ast.Module) -> Iterator[ast.ImportFrom | ast.Import]:
    """Every import, except those under `if TYPE_CHECKING:` (annotations only)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
            yield node


def _imported_modules(node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module or ""]


def _violations(rule) -> list[str]:
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _runtime_imports(tree):
            message = rule(path, node)
            if message:
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {message}")
    return found


def _private_across_packages(path: Path, node: ast.ImportFrom | ast.Import) -> str | None:
    if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("tdsl"):
        return None
    source_package = node.module.rsplit(".", 1)[0] if (ROOT.parent / (node.module.replace(".", "/") + ".py")).exists() \
        else node.module
    private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
    if private and source_package != _package_of(path):
        return f"imports private {', '.join(private)} from {node.module}"
    return None


def _backend_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["tdsl", "backends"] else None


def _cross_backend(path: Path, node: ast.ImportFrom | ast.Import) -> str | None:
    mine = _backend_of(_package_of(path) + ".x")
    if mine is None:
        return None
    for name in _imported_modules(node):
        other = _backend_of(name)
        if other is not None and other != mine:
            return f"the {mine} backend imports {name}"
    return None


def _backend_runs_passes(path: Path, node: ast.ImportFrom | ast.Import) -> str | None:
    if _backend_of(_package_of(path) + ".x") is None:
        return None
    for name in _imported_modules(node):
        if name == "tdsl.passes" or name.startswith("tdsl.passes."):
            return f"a backend imports {name}: lowering belongs to tdsl.lowering"
    return None


@pytest.mark.parametrize("rule", [_private_across_packages, _cross_backend, _backend_runs_passes],
                         ids=lambda r: r.__name__.strip("_"))
def test_import_rule(rule) -> None:
    assert _violations(rule) == []


def test_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    """Each rule, on a line that breaks it (so an empty result above means something)."""
    fake = ROOT / "backends" / "onnx" / "x.py"
    cases = {
        _private_across_packages: "from tdsl.runtime.conv2d import _helper",
        _cross_backend: "from tdsl.backends.torch.freeze import FrozenModel",
        _backend_runs_passes: "from tdsl.passes.fuse import FusePass",
    }
    for rule, line in cases.items():
        node = ast.parse(line).body[0]
        assert rule(fake, node) is not None, rule.__name__
