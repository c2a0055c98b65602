"""`--verify-diagnostics`: check produced diagnostics against `expected-*` annotations, as mlir-opt does.

An annotation is a comment holding `expected-error {{text}}` (also `expected-warning`,
`expected-note`, and `expected-error-re {{literal {{regex}} literal}}`), optionally with a
designator after the kind: `@+N`/`@-N` (N lines below or above), `@below`/`@above` (the
next or previous line that holds no annotation), or `@unknown` (a diagnostic without a
location). Without one it refers to its own line. A diagnostic matches when kind and line
agree, it is located in the input file, and the annotation's text is a substring of the
message (a diagnostic located in another file, such as the DSL source named by `loc(...)`,
matches nothing, as in mlir-opt). Verification passes only when every
annotation is matched and every diagnostic is expected (mlir-opt's rule), so a test that
states the wrong message or line fails instead of passing silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from tdsl.errors import SourceLoc

ANNOTATION = re.compile(
    r"expected-(error|warning|note)(-re)?\s*(?:@(\+\d+|-\d+|above|below|unknown))?\s*\{\{(.*)\}\}\s*$")


@dataclass(frozen=True)
class Diagnostic:
    """One message produced while processing the input; `loc` None means unknown location."""

    kind: str
    message: str
    loc: SourceLoc | None

    def render(self) -> str:
        where = f"{self.loc}: " if self.loc is not None else ""
        return f"{where}{self.kind}: {self.message}"


@dataclass
class Expectation:
    """One `expected-*` annotation; `line` None means `@unknown`."""

    kind: str
    text: str
    line: int | None
    at: SourceLoc
    pattern: re.Pattern[str]
    matched: bool = False

    def accepts(self, diag: Diagnostic, line: int | None) -> bool:
        return not self.matched and self.kind == diag.kind and self.line == line \
            and self.pattern.search(diag.message) is not None


def message_pattern(text: str, is_regex: bool) -> re.Pattern[str]:
    """A substring match; with `-re`, the `{{...}}` parts of `text` are regular expressions."""
    if not is_regex:
        return re.compile(re.escape(text))
    parts = re.split(r"\{\{(.*?)\}\}", text)
    return re.compile("".join(p if i % 2 else re.escape(p) for i, p in enumerate(parts)))


def parse_expectations(text: str, file: str, line_offset: int = 0) -> list[Expectation]:
    """The annotations in `text` (a whole input or one split chunk starting after `line_offset` lines)."""
    lines = text.splitlines()
    annotated = {i for i, line in enumerate(lines) if ANNOTATION.search(line)}
    found: list[Expectation] = []
    for i, line in enumerate(lines):
        m = ANNOTATION.search(line)
        if m is None:
            continue
        kind, is_regex, designator, wanted = m.group(1), m.group(2), m.group(3), m.group(4)
        target: int | None = i
        if designator == "unknown":
            target = None
        elif designator == "below":
            target = next((j for j in range(i + 1, len(lines)) if j not in annotated), len(lines))
        elif designator == "above":
            target = next((j for j in range(i - 1, -1, -1) if j not in annotated), -1)
        elif designator is not None:
            target = i + int(designator)
        at = SourceLoc(file, i + 1 + line_offset, m.start() + 1)
        found.append(Expectation(kind, wanted, None if target is None else target + 1 + line_offset, at,
                                 message_pattern(wanted, bool(is_regex))))
    return found


def check(expected: list[Expectation], produced: list[Diagnostic], file: str) -> list[str]:
    """The mismatch messages, mlir-opt style: unexpected diagnostics, then annotations not produced."""
    problems: list[str] = []
    for diag in produced:
        in_file = diag.loc is None or diag.loc.file == file
        line = diag.loc.line if diag.loc is not None else None
        match = next((e for e in expected if in_file and e.accepts(diag, line)), None)
        if match is None:
            problems.append(Diagnostic("error", f"unexpected {diag.kind}: {diag.message}", diag.loc).render())
        else:
            match.matched = True
    for e in expected:
        if not e.matched:
            where = "with an unknown location" if e.line is None else f"at line {e.line}"
            problems.append(f"{e.at}: error: expected {e.kind} \"{e.text}\" {where} was not produced")
    return problems
