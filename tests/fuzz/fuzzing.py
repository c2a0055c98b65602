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


# ---------------------------------------------------------------- the two signatures of issue 22
# Tracebacks the generators above never produced: a scalar literal meeting a tensor of a typed
# element (`Tensor[trit, 4] * 0.5` packed 0.5 as a trit: struct.error), and one-line sources
# without a newline, which `tdsl.compile` first takes for a path ("1" * 256: File name too long).
ELEMENTS = ("float32", "float16", "int8", "int32", "int64", "trit", "bool")
SCALARS = ("0", "1", "-1", "2", "-2", "0.5", "-0.5", "1e39", "1e400", "127", "128", "-129", "65504", "65520",
           "2147483648", "9223372036854775808", "9" * 40, "true", "false")
SCALAR_OPS = ("+", "-", "*", "/", "%", "==", "<", "@")


def typed_scalar_program(rng: random.Random) -> str:
    """A forward on one typed tensor combined with a scalar literal (either side)."""
    element, scalar, op = rng.choice(ELEMENTS), rng.choice(SCALARS), rng.choice(SCALAR_OPS)
    expr = f"x {op} {scalar}" if rng.random() < 0.5 else f"{scalar} {op} x"
    out = rng.choice((element, "float32"))
    return f"layer T {{ fn forward(x: Tensor[{element}, N, 4]) -> Tensor[{out}, N, 4] {{ return {expr} }} }}\n"


def one_line_source(rng: random.Random) -> str:
    """A source of one line with no newline: digits, names, paths and text of every length."""
    unit = rng.choice(("1", "a", "x", "/", "a/", "../", ".", "é", "\udc80", "\x00", " ", "layer", "mlp"))
    text = unit * rng.choice((1, 2, 100, 255, 256, 300, 5000))
    return text + rng.choice(("", ".tdsl", ".tri", "/", " ", "\t"))


def signature_programs(count: int, seed: int) -> Iterator[tuple[int, str]]:
    """(seed, source) alternating the two generators above."""
    for i in range(count):
        s = seed * 1_000_003 + i
        rng = random.Random(s)
        yield s, typed_scalar_program(rng) if i % 2 == 0 else one_line_source(rng)


def run_signatures(count: int, seed: int) -> Tally:
    tally = Tally()
    for s, source in signature_programs(count, seed):
        tally.counts["programs"] += 1
        try:
            tally.counts[check_any_error(source)] += 1
        except Exception as e:
            tally.counts["findings"] += 1
            tally.findings.append((s, f"{type(e).__name__}: {str(e)[:200]}", source[:400]))
    return tally


def check_any_error(source: str) -> str:
    """'ok', 'located' or 'named' (a TdslError without a location is right for a one-line
    argument that names no program); the message must render as UTF-8 (it is printed)."""
    try:
        tdsl.compile(source)
    except TdslError as e:
        e.render().encode("utf-8")
        if "\n" in source and e.loc is None:
            raise AssertionError(f"TdslError without a location: {e.message}") from None
        return "located" if e.loc is not None else "named"
    return "ok"


# ---------------------------------------------------------------- command-line arguments
NUMBERS = ("-1", "0", "1", "-2,4", "2,-4", "100000000000", "100000000000,4", "1e400", "nan", "inf", "-inf", "abc",
           "", "9" * 5000, "0x10", "1.5", "2,", ",", "3,,4", "-0", "+5", "\u0663", "1_000", "4294967296")
NUMERIC_OPTIONS = {
    "run": ("--batch", "--seed", "--input-shape"),
    "export": ("--seed", "--batch"),
    "quantize": ("--seed",),
    "train": ("--epochs", "--batch-size", "--lr", "--momentum", "--warmup-steps", "--step-size", "--gamma",
              "--clip-norm", "--clip-value", "--weight-decay", "--ternary-reg", "--seed", "--keep-last", "--log-every"),
}
OUTPUT_SPOTS = ("file", "dir", "below-file", "missing-parents", "long-name", "new")


def _spot(tmp: Path, kind: str, name: str) -> str:
    """An output path of a kind: an existing file or folder, a path below a file, one whose
    parents are missing, a name too long for the file system, or a new name."""
    base = tmp / f"spot-{kind}"
    base.mkdir(exist_ok=True)
    if kind == "file":
        (base / name).write_text("keep me")
    elif kind == "dir":
        (base / name).mkdir(exist_ok=True)
    elif kind == "below-file":
        (base / "afile").write_text("keep me")
        return str(base / "afile" / name)
    elif kind == "missing-parents":
        return str(base / "a" / "b" / name)
    elif kind == "long-name":
        return str(base / ("n" * 300 + name))
    return str(base / name)


def cli_cases(count: int, seed: int, tmp: Path) -> Iterator[tuple[int, list[str]]]:
    """(seed, argv): numeric options given negative, huge and malformed values, and `-o` onto
    files, folders, paths below a file, missing parents and overlong names, with and without
    --force. Work that would take long is cut short by a bad `--dataset`/`--weights` after the
    option parsing, so valid values stay fast."""
    garbage = tmp / "garbage.bin"
    garbage.write_bytes(b"PK\x03\x04 not a zip, not safetensors")
    bad_data = tmp / "bad.npz"
    bad_data.write_bytes(b"PK\x03\x04 not a zip")
    for i in range(count):
        s = seed * 1_000_003 + i
        rng = random.Random(s)
        if i % 2 == 0:
            command = rng.choice(sorted(NUMERIC_OPTIONS))
            option, value = rng.choice(NUMERIC_OPTIONS[command]), rng.choice(NUMBERS)
            argv = {"run": ["run", "mlp"], "export": ["export", "mlp", "--format", "onnx", "-o", str(tmp / "o.onnx"),
                                                      "--force", "--weights", str(garbage)],
                    "quantize": ["quantize", "mlp", "--weights", str(garbage)],
                    "train": ["train", "mlp", "--dataset", str(bad_data), "--out", str(tmp / "run"), "--force"]}[command]
            yield s, [*argv, f"{option}={value}"]
            continue
        kind = rng.choice(OUTPUT_SPOTS)
        force = ["--force"] if rng.random() < 0.5 else []
        command = rng.choice(("compile", "quantize", "quantize-report", "export-onnx", "export-package", "train", "opt"))
        if command == "compile":
            yield s, ["compile", "mlp", "-o", _spot(tmp, kind, "out.mlir"), *force]
        elif command == "quantize":
            yield s, ["quantize", "mlp", "--weights", str(garbage), "-o", _spot(tmp, kind, "q.safetensors"), *force]
        elif command == "quantize-report":
            yield s, ["quantize", "mlp", "--weights", str(garbage), "--report", _spot(tmp, kind, "r.json"), *force]
        elif command.startswith("export"):
            fmt = command.split("-")[1]
            yield s, ["export", "mlp", "--format", fmt, "--weights", str(garbage), "-o",
                      _spot(tmp, kind, "m.onnx" if fmt == "onnx" else "pkg"), *force]
        elif command == "train":
            yield s, ["train", "mlp", "--dataset", str(bad_data), "--out", _spot(tmp, kind, "run"), *force]
        else:
            yield s, ["opt", str(ROOT / "tests" / "ir" / "canonicalize.mlir"), "-o", _spot(tmp, kind, "o.mlir"), *force]


def check_cli(argv: list[str]) -> str:
    """Run `tdsl` (or `tdsl-opt` for "opt") in-process: 'ok' (exit 0) or 'refused' (exit 1
    with an `error:` line); another exit status, a traceback or an escaping exception is a finding."""
    from tdsl.tools.tdsl_cli import main as tdsl_main
    from tdsl.tools.tdsl_opt import main as opt_main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = opt_main(argv[1:]) if argv[0] == "opt" else tdsl_main(argv)
    text = err.getvalue()
    if "Traceback" in text:
        raise AssertionError(f"traceback: {text[-500:]}")
    text.encode("utf-8")
    if rc == 0:
        return "ok"
    if rc == 1 and "error" in text:
        return "refused"
    raise AssertionError(f"exit {rc}: {text[-500:]}")


def run_cli(count: int, seed: int, tmp: Path) -> Tally:
    tally = Tally()
    for s, argv in cli_cases(count, seed, tmp):
        tally.counts["commands"] += 1
        try:
            tally.counts[check_cli(argv)] += 1
        except Exception as e:
            tally.counts["findings"] += 1
            tally.findings.append((s, f"{type(e).__name__}: {str(e)[:300]}", " ".join(a[:100] for a in argv)))
    return tally
