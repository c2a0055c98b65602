"""Seeded program generators and the oracle of the fuzz tests.

Two sources of programs: random derivations of the lark grammar itself
(tdsl/frontend/grammar.lark, so the generator follows the language as it changes), and
mutations of the zoo, the examples and the FileCheck inputs (token and byte edits,
truncation, huge literals, deep nesting, unicode, recursion). The oracle accepts a success
or a `TdslError` with a location; anything else is a finding. Every generator takes a
`random.Random`, so a failure names the seed that reproduces it.
"""
from __future__ import annotations

import contextlib
import io
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lark import Lark
from lark.grammar import NonTerminal, Terminal
from lark.lexer import PatternStr

import tdsl
from tdsl.errors import TdslError

ROOT = Path(__file__).resolve().parents[2]
GRAMMAR = ROOT / "tdsl" / "frontend" / "grammar.lark"
DSL_SEEDS = sorted([*ROOT.glob("tdsl/models/*.tdsl"), *ROOT.glob("examples/*.tdsl"),
                    *ROOT.glob("examples/*.tri")])
MLIR_SEEDS = sorted(ROOT.glob("tests/ir/**/*.mlir"))

NAMES = ("x", "y", "n", "w", "b", "A", "M", "forward", "relu", "linear", "conv2d", "zeros",
         "range", "len", "Tensor", "TernaryTensor", "float32", "int8", "trit", "N", "Linear",
         "Conv2d", "BatchNorm2d", "Sequential", "random_ternary", "flatten", "softmax", "int")
INTS = ("0", "1", "2", "3", "4", "16", "007", "2147483648", "4294967296", "9223372036854775807",
        "18446744073709551616", "9" * 40, "9" * 5000)
FLOATS = ("0.5", "1.0", "1e-5", "3.4e38", "1e39", "1e308", "1e400", "2.5e3")
HOSTILE = ("9" * 5000, "18446744073709551616", "1e400", "1e39", "4294967296",
           "abs(" * 300 + "1" + ")" * 300, "(" * 500 + "1" + ")" * 500, "[" * 300 + "]" * 300,
           "-" * 400 + "1", " + ".join(["1"] * 400), "\u00e9", "\u202e", "\x00", "\ufeff", "\ud7ff",
           "range(10000)", "range(9223372036854775807)", "A(n + 1)", "forward(x)", "zeros([65536, 65536])")


# ---------------------------------------------------------------- grammar derivations
class GrammarGenerator:
    """Random derivations of the tdsl grammar, bounded in depth (then shortest expansions)."""

    def __init__(self) -> None:
        lark = Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="basic",
                    maybe_placeholders=True)
        self.rules: dict[str, list[list]] = {}
        for rule in lark.rules:
            self.rules.setdefault(rule.origin.name, []).append(list(rule.expansion))
        self.literals = {t.name: t.pattern.value for t in lark.terminals if isinstance(t.pattern, PatternStr)}
        self.cost = self._costs()

    def _costs(self) -> dict[str, int]:
        """The fewest expansions to reach terminals from each rule: what a deep derivation picks."""
        cost: dict[str, int] = {}
        changed = True
        while changed:
            changed = False
            for name, expansions in self.rules.items():
                for exp in expansions:
                    c = 1 + sum(cost.get(s.name, 10**6) for s in exp if isinstance(s, NonTerminal))
                    if c < cost.get(name, 10**6):
                        cost[name], changed = c, True
        return cost

    def program(self, rng: random.Random, max_depth: int = 14) -> str:
        out: list[str] = []
        self._expand("start", rng, 0, max_depth, out)
        return " ".join(out).replace(" \n ", "\n")

    def _expand(self, name: str, rng: random.Random, depth: int, max_depth: int, out: list[str]) -> None:
        expansions = self.rules[name]
        if depth >= max_depth:
            exp = min(expansions, key=lambda e: sum(self.cost.get(s.name, 0) for s in e
                                                    if isinstance(s, NonTerminal)))
        else:
            exp = rng.choice(expansions)
        for sym in exp:
            if len(out) > 4000:
                return
            if isinstance(sym, Terminal):
                out.append(self._terminal(sym.name, rng))
            else:
                self._expand(sym.name, rng, depth + 1, max_depth, out)

    def _terminal(self, name: str, rng: random.Random) -> str:
        if name in self.literals:
            return self.literals[name]
        if name == "NAME":
            return rng.choice(NAMES)
        if name == "INT":
            return rng.choice(INTS[:8]) if rng.random() < 0.9 else rng.choice(INTS)
        if name == "FLOAT":
            return rng.choice(FLOATS)
        if name == "STRING":
            return rng.choice(('"zeros"', '"a"', '""', '"\\n"'))
        if name in ("_NL", "_VSEP"):
            return "\n"
        return " "


# ---------------------------------------------------------------- mutations
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|->|==|!=|<=|>=|\S")


def mutate(text: str, rng: random.Random) -> str:
    """One to four random edits of `text`."""
    for _ in range(rng.randint(1, 4)):
        text = rng.choice(_MUTATIONS)(text, rng)
    return text


def _tokens(text: str) -> list[re.Match]:
    return list(_TOKEN.finditer(text))


def _splice(text: str, rng: random.Random, replace: Callable[[str], str]) -> str:
    toks = _tokens(text)
    if not toks:
        return text
    m = rng.choice(toks)
    return text[:m.start()] + replace(m.group()) + text[m.end():]


def _delete_token(text: str, rng: random.Random) -> str:
    return _splice(text, rng, lambda t: "")


def _duplicate_token(text: str, rng: random.Random) -> str:
    return _splice(text, rng, lambda t: t + " " + t)


def _replace_token(text: str, rng: random.Random) -> str:
    toks = _tokens(text)
    pool = [m.group() for m in toks] or ["x"]
    return _splice(text, rng, lambda t: rng.choice(pool))


def _hostile_token(text: str, rng: random.Random) -> str:
    return _splice(text, rng, lambda t: rng.choice(HOSTILE))


def _number(text: str, rng: random.Random) -> str:
    nums = [m for m in _tokens(text) if m.group()[0].isdigit()]
    if not nums:
        return text
    m = rng.choice(nums)
    return text[:m.start()] + rng.choice(INTS + FLOATS) + text[m.end():]


def _flip_char(text: str, rng: random.Random) -> str:
    if not text:
        return text
    i = rng.randrange(len(text))
    return text[:i] + chr(rng.choice((0, 9, 10, 34, 35, 40, 41, 91, 93, 123, 125, 0xE9, 0x3000,
                                      rng.randrange(32, 127)))) + text[i + 1:]


def _truncate(text: str, rng: random.Random) -> str:
    return text[:rng.randrange(len(text) + 1)]


def _swap_lines(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    if len(lines) < 2:
        return text
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _duplicate_line(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    if not lines:
        return text
    i = rng.randrange(len(lines))
    return "\n".join(lines[:i + 1] + [lines[i]] * rng.choice((1, 2, 50)) + lines[i + 1:])


def _delete_line(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    if not lines:
        return text
    del lines[rng.randrange(len(lines))]
    return "\n".join(lines)


def _wrap_nested(text: str, rng: random.Random) -> str:
    depth = rng.choice((10, 150, 250, 1000))
    open_, close = rng.choice((("(", ")"), ("abs(", ")"), ("[", "]"), ("-", ""), ("not ", "")))
    return _splice(text, rng, lambda t: open_ * depth + t + close * depth)


def _recursion(text: str, rng: random.Random) -> str:
    """Make a layer or fn call itself (the name of a nearby definition replaces a call)."""
    names = re.findall(r"(?:layer|fn)\s+([A-Za-z_]\w*)", text)
    if not names:
        return text
    name = rng.choice(names)
    calls = list(re.finditer(r"\b[A-Za-z_]\w*(?=\()", text))
    if not calls:
        return text
    m = rng.choice(calls)
    return text[:m.start()] + name + text[m.end():]


_MUTATIONS = (_delete_token, _duplicate_token, _replace_token, _hostile_token, _number, _flip_char,
              _truncate, _swap_lines, _duplicate_line, _delete_line, _wrap_nested, _recursion)


# ---------------------------------------------------------------- the oracle
@dataclass
class Tally:
    """Outcomes of a fuzz run; `findings` keeps (seed, what, program) of every bad one."""

    counts: Counter = field(default_factory=Counter)
    findings: list[tuple[int, str, str]] = field(default_factory=list)

    def report(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))


def dsl_programs(count: int, seed: int, start: int = 0) -> Iterator[tuple[int, str, str | None]]:
    """(seed, program, pipeline) for `count` programs: half derived from the grammar, half
    mutated seed files (small ones more often: they compile, big ones mostly fail early).
    One in four runs the default pipeline, the others stop after IR generation (`""`)."""
    gen = GrammarGenerator()
    texts = [p.read_text(encoding="utf-8") for p in DSL_SEEDS]
    weights = [1.0 / (1 + len(t) / 1000) for t in texts]
    for i in range(start, count):
        s = seed * 1_000_003 + i
        rng = random.Random(s)
        if i % 2 == 0:
            source = gen.program(rng)
        else:
            source = mutate(rng.choices(texts, weights)[0], rng)
        # a trailing newline keeps one-line programs from being taken for a file or zoo name
        yield s, source + "\n", None if i % 4 < 2 else ""


def check_dsl(source: str, pipeline: str | None = None) -> str:
    """'ok' or 'located'; raises AssertionError for an unlocated TdslError or another exception."""
    try:
        tdsl.compile(source, pipeline=pipeline)
    except TdslError as e:
        if e.loc is None:
            raise AssertionError(f"TdslError without a location: {e.message}") from None
        return "located"
    return "ok"


def check_mlir(path: Path, pipeline: str) -> str:
    """Run `tdsl-opt` in-process: 'ok', 'located' (file:line:col: error) or 'unlocated' (exit 1
    with a message naming only the file); anything escaping `main` is a finding."""
    from tdsl.tools.tdsl_opt import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main([str(path), "-p", pipeline, "-o", "-"] if pipeline else [str(path)])
    if rc == 0:
        return "ok"
    first = err.getvalue().splitlines()[0] if err.getvalue() else ""
    if rc == 1 and re.match(rf"{re.escape(str(path))}:\d+:\d+: error: ", first):
        return "located"
    if rc == 1 and "error:" in first:
        return "unlocated"
    raise AssertionError(f"tdsl-opt exit {rc}: {err.getvalue()[:500]}")


def run_dsl(count: int, seed: int, start: int = 0) -> Tally:
    """Programs `start` to `count` of the run `seed` (a range, so a long run can be split)."""
    tally = Tally()
    for s, source, pipeline in dsl_programs(count, seed, start):
        tally.counts["programs"] += 1
        try:
            tally.counts[check_dsl(source, pipeline)] += 1
        except Exception as e:  # a finding: keep going to count them all
            tally.counts["findings"] += 1
            tally.findings.append((s, f"{type(e).__name__}: {str(e)[:200]}", source))
    return tally


MLIR_PIPELINES = ("", "shape-infer", "shape-infer,canonicalize", "shape-infer,ternarize,pack,fuse")


def run_mlir(count: int, seed: int, tmp: Path) -> Tally:
    tally = Tally()
    seeds = [p.read_text(encoding="utf-8") for p in MLIR_SEEDS]
    path = tmp / "fuzz.mlir"
    for i in range(count):
        s = seed * 1_000_003 + i
        rng = random.Random(s)
        source = mutate(rng.choice(seeds), rng)
        path.write_text(source, encoding="utf-8", errors="surrogatepass")
        tally.counts["programs"] += 1
        try:
            tally.counts[check_mlir(path, rng.choice(MLIR_PIPELINES))] += 1
        except Exception as e:
            tally.counts["findings"] += 1
            tally.findings.append((s, f"{type(e).__name__}: {str(e)[:200]}", source))
    return tally
