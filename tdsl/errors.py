"""User-facing errors: every mistake a person can make surfaces as a `TdslError`.

A `TdslError` carries an optional source location; `render()` gives the
`file:line:col: error: message` line, the source line and a caret, which is what
`tdsl-opt` and `tdsl` print before exiting with status 1.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLoc:
    """A 1-based position in a named source text."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


_SOURCES: dict[str, str] = {}


def register_source(file: str, text: str) -> None:
    """Remember a source text so that errors located in it can show the line."""
    _SOURCES[file] = text


def source_line(loc: SourceLoc) -> str | None:
    text = _SOURCES.get(loc.file)
    if text is None:
        try:
            with open(loc.file, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return None
    lines = text.splitlines()
    if 1 <= loc.line <= len(lines):
        return lines[loc.line - 1]
    return None


class TdslError(Exception):
    """An error in the user's program, options or files (never an internal bug)."""

    def __init__(self, message: str, loc: SourceLoc | None = None, notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.notes = notes

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        if self.loc is None:
            head = f"error: {self.message}"
        else:
            head = f"{self.loc}: error: {self.message}"
        parts = [head]
        if self.loc is not None:
            line = source_line(self.loc)
            if line is not None:
                parts.append(line.replace("\t", " "))
                parts.append(" " * (max(self.loc.col, 1) - 1) + "^")
        parts.extend(f"note: {n}" for n in self.notes)
        # a lone surrogate (a path or text from surrogateescape decoding) cannot be printed: escape it
        return "\n".join(parts).encode("utf-8", "backslashreplace").decode("utf-8")


class ParseError(TdslError):
    """Syntax error in DSL source."""


class UnknownNameError(TdslError):
    """Unknown name; the message suggests the closest known one."""


class TdslTypeError(TdslError):
    """A value of the wrong kind or type (parameter, argument, annotation)."""


class ShapeError(TdslError):
    """Tensor shapes that do not fit together."""


class PassError(TdslError):
    """A pass could not transform the IR (bad option, or an op it cannot handle)."""


def did_you_mean(name: str, candidates: list[str] | set[str] | tuple[str, ...]) -> str:
    """A ` (did you mean 'x'?)` suffix for the closest candidate, or ''."""
    import difflib

    match = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


EXTRAS: dict[str, str] = {
    "torch": "torch", "onnx": "onnx", "onnxruntime": "onnx", "numba_cuda": "cuda", "tqdm": "train",
    "matplotlib": "train", "sklearn": "train", "mnist1d": "train", "huggingface_hub": "publish",
    "github": "publish", "yaml": "publish",
}
"""Optional dependencies by import name -> the extra of `pip install 'tdsl[EXTRA]'` that brings them."""


def missing_dependency(error: ModuleNotFoundError) -> TdslError | None:
    """A TdslError naming the extra to install when `error` is about an optional dependency."""
    top = (error.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return TdslError(f"this needs {top}, which this installation lacks: pip install 'tdsl[{extra}]' "
                     "(or 'tdsl[all]'; with torch, add -c constraints.txt for the CPU build)")

