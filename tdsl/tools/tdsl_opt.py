"""`tdsl-opt`: run tdsl passes over DSL source or IR and print IR or emitted code.

A thin layer over xDSL's `xDSLOptMain` that registers tdsl's dialects, passes and
frontends, and turns every user error into one `file:line:col: error: ...` diagnostic.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from io import StringIO
from typing import IO

from xdsl.dialects.builtin import FileLineColLoc, ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.printer import Printer
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, ParseError
from xdsl.xdsl_opt_main import xDSLOptMain

from tdsl.dialects.context import DIALECTS
from tdsl.dialects.verify import verify_module
from tdsl.errors import SourceLoc, TdslError, register_source
from tdsl.package.files import write_atomic
from tdsl.passes import PASSES
from tdsl.passes.pipelines import parse_pipeline
from tdsl.tools.common import add_force_arg, parse_param, refuse_overwrite
from tdsl.tools.ir_input import check_symbols, parse_located, strip_stamped
from tdsl.tools.verify_diagnostics import Diagnostic, Expectation, check, parse_expectations

EMITS = ("mlir", "generic", "torch")
IGNORED_XDSL_FLAGS: dict[str, str] = {
    "print_between_passes": "--print-between-passes", "time_passes": "--time-passes",
    "print_no_properties": "--print-no-properties", "target": "-t/--target",
    "syntax_highlight": "--syntax-highlight", "shrink": "--shrink",
}
"""xdsl-opt flags that the inherited parser accepts but this driver's `run` does not honour:
hidden from --help, and an error when given (--print-ir-after-all and --emit are tdsl's)."""


class InputError(TdslError):
    """A problem with the command line or the input file itself."""


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def parse_error_text(e: ParseError) -> str:
    """`file:line:col: error: msg`, the source line and carets under the span."""
    span = e.span
    where = span.get_location()
    content = span.input.content
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    line_start = content.rfind("\n", 0, span.start) + 1
    line_end = content.find("\n", span.start)
    line = content[line_start: len(content) if line_end < 0 else line_end].rstrip("\r")
    width = max(1, min(span.end, len(line) + line_start) - span.start)
    caret = " " * (span.start - line_start) + "^" * width
    return f"{where.file}:{where.line}:{where.col}: error: {e.msg}\n{line}\n{caret}"


def pass_help() -> str:
    """One line per pass: name, docstring summary, then its options."""
    lines = ["passes:"]
    for name, factory in PASSES.items():
        cls = factory()
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"  {name:<16} {summary}")
        choices = getattr(cls, "OPTION_CHOICES", {})
        for f in dataclasses.fields(cls):
            default = "" if f.default is dataclasses.MISSING else f" (default {f.default})"
            kind = " | ".join(choices[f.name]) if f.name in choices else f.type
            lines.append(f"  {'':<16}   {f.name.replace('_', '-')}: {kind}{default}")
    return "\n".join(lines)


class TdslOptMain(xDSLOptMain):
    """xdsl-opt with tdsl's dialects, passes, `.tdsl`/`.tri` frontends and clean errors."""

    version_format = "tdsl-opt (xDSL {xdsl_version})"

    def register_all_dialects(self) -> None:
        for dialect in DIALECTS:
            self.ctx.register_dialect(dialect.name, lambda d=dialect: d)

    def register_all_passes(self) -> None:
        for name, factory in PASSES.items():
            self.register_pass(name, factory)

    def register_all_frontends(self) -> None:
        super().register_all_frontends()
        self.available_frontends["tdsl"] = self.parse_dsl
        self.available_frontends["tri"] = self.parse_dsl

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        super().register_all_arguments(arg_parser)
        arg_parser.prog = "tdsl-opt"
        arg_parser.description = "Run tdsl passes over DSL source (.tdsl, .tri) or IR (.mlir)."
        arg_parser.formatter_class = argparse.RawDescriptionHelpFormatter
        arg_parser.epilog = pass_help()
        for action in arg_parser._actions:  # the inherited help joins all pass names on one line
            if action.dest == "passes":
                action.help = "pass pipeline, e.g. 'shape-infer,canonicalize' (passes are listed below)"
            if action.dest in IGNORED_XDSL_FLAGS:  # accepted by xDSL's parser, but this driver does not do them
                action.help = argparse.SUPPRESS
        arg_parser.add_argument("--emit", choices=EMITS, default="mlir",
                                help="output: custom IR (mlir), generic IR, or PyTorch source (torch)")
        arg_parser.add_argument("--print-ir-after-all", action="store_true",
                                help="print the IR to stderr after each pass")
        arg_parser.add_argument("--entry", help="entry layer of a DSL program (default: the program's own)")
        arg_parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                                help="set a parameter of the entry layer (repeatable)")
        add_force_arg(arg_parser)

    def setup_pipeline(self) -> None:
        def callback(prev: ModulePass | None, module: ModuleOp, _next: ModulePass | None) -> None:
            if prev is None:
                return  # run() verified the input already
            if not self.args.disable_verify:
                verify_module(module)
            if self.args.print_ir_after_all:
                print(f"// -----// IR after {prev.name} //----- //", file=sys.stderr)
                sys.stderr.write(self.print_ir(module))

        self.pipeline: PassPipeline = parse_pipeline(self.args.passes, callback)

    def parse_dsl(self, io: IO[bytes]) -> ModuleOp:
        from tdsl.frontend.irgen import build_module
        from tdsl.frontend.parser import decode_source

        text = decode_source(io.read(), self.get_input_name())
        params = dict(parse_param(p) for p in self.args.param)
        return build_module(text, self.get_input_name(), entry=self.args.entry, params=params or None)

    def output_resulting_program(self, prog: ModuleOp) -> str:
        if self.args.emit == "torch":
            from tdsl.backends.torch.emit import emit_module

            return emit_module(prog)
        return self.print_ir(prog, self.args.print_op_generic or self.args.emit == "generic")

    def print_ir(self, module: ModuleOp, generic: bool = False) -> str:
        """The IR as text, without the locations that only the parser gave (see `ir_input`)."""
        if self.args.print_debuginfo and self.stamped:
            module = module.clone()
            strip_stamped(module, self.stamped)
        out = StringIO()
        Printer(stream=out, print_generic_format=generic, print_debuginfo=self.args.print_debuginfo).print_op(module)
        out.write("\n")
        return out.getvalue()

    def parse_chunk(self, chunk: IO[bytes], file_extension: str, start_offset: int = 0) -> ModuleOp | None:
        """`.mlir` goes through the locating parser, so its ops and errors have positions."""
        if file_extension != "mlir":
            return super().parse_chunk(chunk, file_extension, start_offset)
        module, stamped = parse_located(self.ctx, chunk.read(), self.get_input_name(), start_offset,
                                        not self.args.no_implicit_module)
        self.stamped |= stamped
        return module

    def run(self) -> None:
        """Parse, verify, run the pipeline and print each input chunk; write `-o` atomically.

        With --verify-diagnostics a failing chunk prints nothing; its diagnostics are checked
        against the file's `expected-*` annotations and any mismatch fails the run.
        """
        for dest, flag in IGNORED_XDSL_FLAGS.items():
            if getattr(self.args, dest, None) not in (None, False, "mlir"):
                raise InputError(f"{flag} is an xdsl-opt option that tdsl-opt does not support "
                                 "(see tdsl-opt --help)")
        if self.args.input_file == "-":  # the conventional name of standard input
            self.args.input_file = None
        if self.args.param and self.args.input_file and not self.args.input_file.endswith((".tdsl", ".tri")):
            raise InputError("--param applies to DSL input (.tdsl, .tri) only")
        try:
            refuse_overwrite(self.args.output_file, self.args.force)
        except TdslError as e:
            raise InputError(e.message) from None
        self.stamped: set[FileLineColLoc] = set()
        name = self.get_input_name()
        chunks, extension = self.prepare_input()
        datas = []
        for chunk, offset in chunks:
            datas.append((chunk.read(), offset))
            chunk.close()
        register_source(name, b"// -----".join(d for d, _ in datas).decode("utf-8", "replace"))
        expected: list[Expectation] = []
        produced: list[Diagnostic] = []
        out = StringIO()
        for i, (data, offset) in enumerate(datas):
            if self.args.verify_diagnostics:
                expected += parse_expectations(data.decode("utf-8", "replace"), name, offset)
            try:
                module = self.parse_chunk(_Rewound(data), extension, offset)
                assert module is not None
                if not self.args.disable_verify:
                    check_symbols(module)
                    verify_module(module)
                self.apply_passes(module)
                text = self.output_resulting_program(module)
            except ParseError as e:
                e.span = dataclasses.replace(e.span, line_offset=offset)
                if not self.args.verify_diagnostics:
                    raise
                produced += diagnostics_of(e, name)
                continue
            except (TdslError, DiagnosticException) as e:
                if not self.args.verify_diagnostics:
                    raise
                produced += diagnostics_of(e, name)
                continue
            if i > 0:
                out.write("// -----\n")
            out.write(text)
        if self.args.verify_diagnostics:
            problems = check(expected, produced, name)
            if problems:
                raise DiagnosticsMismatch(problems)
        write_output(out.getvalue(), self.args.output_file)


class DiagnosticsMismatch(Exception):
    """--verify-diagnostics found diagnostics that differ from the annotations."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def diagnostics_of(e: BaseException, input_name: str) -> list[Diagnostic]:
    """The error (and its notes) that `e` reports, for --verify-diagnostics."""
    if isinstance(e, ParseError):
        where = e.span.get_location()
        return [Diagnostic("error", e.msg, SourceLoc(where.file, where.line, where.col))]
    if isinstance(e, TdslError):
        return [Diagnostic("error", e.message, e.loc), *(Diagnostic("note", n, e.loc) for n in e.notes)]
    return [Diagnostic("error", first_line(e), None)]


class _Rewound(StringIO):
    """The bytes of a chunk, readable again by a frontend."""

    def __init__(self, data: bytes):
        super().__init__()
        self.data = data

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        return self.data


def write_output(text: str, path: str | None) -> None:
    """Print to stdout (no `-o`, or `-o -`), or write `path` through a temp file renamed on success."""
    if path is None or path == "-":
        sys.stdout.write(text)
    else:
        write_atomic(path, text)


def render(e: BaseException, input_name: str) -> str:
    """The one diagnostic printed for a user error."""
    if isinstance(e, InputError) and e.loc is None:  # about the command line, not the input's text
        return f"tdsl-opt: {e.render()}"
    if isinstance(e, TdslError):
        return e.render() if e.loc is not None else f"{input_name}: {e.render()}"
    if isinstance(e, ParseError):
        return parse_error_text(e)
    if isinstance(e, DiagnosticException):
        return f"{input_name}: error: {first_line(e)}"
    return f"tdsl-opt: error: {first_line(e)}"


def main(argv: Sequence[str] | None = None) -> int:
    input_name = "tdsl-opt"
    try:
        tool = TdslOptMain(args=argv)
        input_name = tool.get_input_name()
        tool.run()
    except SystemExit as e:  # argparse: --help exits 0, a usage error 2
        return 0 if e.code in (0, None) else 1
    except DiagnosticsMismatch as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        n = len(e.problems)
        print(f"tdsl-opt: error: --verify-diagnostics: {n} diagnostic{'s' * (n != 1)} did not match "
              "the expected-* annotations", file=sys.stderr)
        return 1
    except (TdslError, ParseError, DiagnosticException) as e:
        print(render(e, input_name), file=sys.stderr)
        return 1
    except (ValueError, OSError, ArgSpecParseError) as e:  # bad extension, missing file
        print(f"tdsl-opt: error: {first_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
