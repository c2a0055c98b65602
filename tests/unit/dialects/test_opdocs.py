"""docs/ops/ is generated from the op definitions; this fails when the checked-in pages drift."""
from __future__ import annotations

from pathlib import Path

from tdsl.dialects.tdsl import TDSL, ActivationOp, Conv2dOp, ReluOp
from tdsl.tools import opdocs


def test_checked_in_pages_match_the_definitions() -> None:
    stale = opdocs.stale()
    assert stale == [], f"docs/ops/{stale} out of date: run python -m tdsl.tools.opdocs"


def test_every_op_of_every_dialect_has_a_section() -> None:
    for dialect in opdocs.DIALECTS:
        text = (opdocs.DOCS_DIR / f"{dialect.name}.md").read_text(encoding="utf-8")
        for op in dialect.operations:
            assert f"## `{op.name}` ({op.__name__})" in text
    tdsl_page = (opdocs.DOCS_DIR / "tdsl.md").read_text(encoding="utf-8")
    activations = [op for op in TDSL.operations if issubclass(op, ActivationOp)]
    assert len(activations) >= 8 and all(f"[`{op.name}`]" in tdsl_page for op in activations)


def test_a_section_says_what_the_definition_says() -> None:
    section = "\n".join(opdocs.op_section(Conv2dOp))
    assert "| `weight` | single | TensorType \\| UnrankedTensorType |" in section
    assert "| `bias` | optional |" in section
    assert "| `groups` | required | IntegerAttr<IntAttr, i64> |" in section
    assert "**Traits**: Pure, WeightedOp(conv2d, float)" in section
    assert "object at 0x" not in "".join(opdocs.pages().values())


def test_the_check_catches_a_drift(tmp_path: Path) -> None:
    """A page written from a changed op list (one op dropped) is reported stale, and --check fails."""
    for name, text in opdocs.pages().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert opdocs.stale(tmp_path) == [] and opdocs.main(["--check", "--out", str(tmp_path)]) == 0
    without_relu = [op for op in TDSL.operations if op is not ReluOp]
    (tmp_path / "tdsl.md").write_text(opdocs.dialect_page(TDSL, without_relu), encoding="utf-8")
    assert opdocs.stale(tmp_path) == ["tdsl.md"]
    assert opdocs.main(["--check", "--out", str(tmp_path)]) == 1
    (tmp_path / "kern.md").unlink()
    assert opdocs.stale(tmp_path) == ["tdsl.md", "kern.md"]
