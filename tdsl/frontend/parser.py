"""Source text -> `Program`: the lark LALR parser, its post-lexer and the AST builder.

The grammar (grammar.lark) needs explicit statement separators; `_StatementSeparators`
supplies them from the layout so that newlines end statements except inside () and [],
and so that the original one-line form `let a: int8 = 1 let b: int8 = 2` still parses.
Every lark failure becomes a `ParseError` with a location; no lark exception escapes.
"""
from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr
from lark.tree import Meta

from tdsl.errors import ParseError, SourceLoc, did_you_mean, register_source
from tdsl.frontend import ast as A
from tdsl.frontend import limits
from tdsl.frontend.checks import check_program

_GRAMMAR = Path(__file__).with_name("grammar.lark")

# Statement keywords: a `let` after other tokens on the same line starts a new statement.
_STMT_KEYWORDS = frozenset({"LET", "FN", "LAYER", "RETURN", "IF", "FOR"})
# After these (or at the start) a statement keyword needs no inserted separator.
_SEPARATED = frozenset({None, "_NL", "SEMICOLON", "LBRACE", "ELSE"})


class _StatementSeparators:
    """Post-lexer that turns layout into the separators the grammar requires.

    Drops newlines inside () and [], before `{` and between `}` and `else`; inserts a virtual `_VSEP`
    after a `}` (a block statement needs no newline after it) and before a statement
    keyword that follows other tokens on the same line. A `_VSEP` borrows the text and
    position of the token it precedes, so an error on it names that token.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        prev: str | None = None
        newline: Token | None = None
        for tok in stream:
            if tok.type == "_NL":
                if depth == 0 and newline is None:
                    newline = tok
                continue
            # `}` newline `else`, and Allman braces: the newline does not end a statement.
            continues = tok.type == "LBRACE" or (tok.type == "ELSE" and prev == "RBRACE")
            if newline is not None and not continues:
                yield newline
                prev = "_NL"
            newline = None
            after_block = prev == "RBRACE" and tok.type not in ("ELSE", "RBRACE", "SEMICOLON")
            joined_keyword = tok.type in _STMT_KEYWORDS and prev not in _SEPARATED
            if after_block or joined_keyword:
                yield Token.new_borrow_pos("_VSEP", tok.value, tok)
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(depth - 1, 0)
            yield tok
            prev = tok.type
        if newline is not None:
            yield newline


@functools.cache
def _lark() -> Lark:
    """The parser, built once per process (building the LALR tables is the slow part).

    The lexer is the basic one: the post-lexer holds a newline until it sees the next
    token, which a contextual lexer would lex in a stale parser state, and no two
    terminals here need the parser state to tell them apart.
    """
    return Lark(_GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="basic",
                propagate_positions=True, maybe_placeholders=True,
                postlex=_StatementSeparators())


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A str from `surrogateescape` decoding or a bad escape; it cannot be encoded, so cannot be shown."""


def parse_program(text: str, filename: str = "<input>") -> A.Program:
    """Parse tdsl source (both `.tri` dialects included) and run the static checks."""
    surrogate = _LONE_SURROGATE.search(text)
    if surrogate is not None:  # not Unicode: no message that quotes the source could be printed
        register_source(filename, _LONE_SURROGATE.sub("\ufffd", text))
        line = text.count("\n", 0, surrogate.start()) + 1
        col = surrogate.start() - (text.rfind("\n", 0, surrogate.start()) + 1) + 1
        raise ParseError(f"the source holds a lone surrogate U+{ord(surrogate.group()):04X}, which is not a "
                         "Unicode character", SourceLoc(filename, line, col))
    register_source(filename, text)
    if len(text) > limits.MAX_SOURCE_CHARS:
        raise limits.LimitError(f"the source has {len(text)} characters, more than the limit of "
                                f"{limits.MAX_SOURCE_CHARS}", SourceLoc(filename, 1, 1))
    parser = _lark()
    try:
        tree = parser.parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(err, text, filename, parser) from None
    _check_nesting(tree, filename)
    try:
        with limits.recursion_room():
            program = _ToAst(filename, text).transform(tree)
            check_program(program)
    except VisitError as err:
        raise err.orig_exc from None
    except RecursionError:  # the tree walks recurse; the LALR parse itself does not
        raise ParseError("program is nested too deeply", SourceLoc(filename, 1, 1)) from None
    return program


def parse_program_or_file(source_or_path: str, filename: str | None = None) -> A.Program:
    """Parse a `.tdsl`/`.tri` file if the argument names one, else treat it as source."""
    looks_like_path = "\n" not in source_or_path and source_or_path.endswith((".tdsl", ".tri"))
    if looks_like_path and os.path.isfile(source_or_path):
        text = decode_source(Path(source_or_path).read_bytes(), filename or source_or_path)
        return parse_program(text, filename or source_or_path)
    return parse_program(source_or_path, filename or "<input>")


def decode_source(data: bytes, filename: str) -> str:
    """The text of a source file (a UTF-8 BOM dropped); a byte that is not UTF-8 is a located error."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        col = len(data[start:err.start].decode("utf-8", "replace")) + 1
        register_source(filename, data.decode("utf-8", "replace"))
        raise ParseError(f"the file is not valid UTF-8 (byte 0x{data[err.start]:02x})",
                         SourceLoc(filename, line, col)) from None


_CHAINS = frozenset({"binop", "or_op", "and_op"})
"""Left-associative operator rules: `a + b + c` is `binop(binop(a, b), c)`, a chain, not nesting."""


def _check_nesting(tree: Tree, filename: str) -> None:
    """Refuse a parse tree that nests more than `MAX_NESTING` levels, or whose operator chains
    are longer than `MAX_CHAIN`, walking it without recursion.

    The tree walks after this one (AST building, checks, elaboration) recurse once per level
    of the tree. A left-associative chain (`a0 + a1 + ... + a999`) is as deep as it is long,
    but each of its links costs those walks about two Python frames, where a level of real
    nesting (a call, a bracket, a block) costs up to five; so a chain link does not count as
    nesting, the chain has its own bound, and `limits.recursion_room` gives the walks the
    frames that both bounds together can take.
    """
    stack: list[tuple[Tree, int, int]] = [(tree, 1, 0)]
    while stack:
        node, depth, chain = stack.pop()
        if depth > limits.MAX_NESTING or chain + 2 > limits.MAX_CHAIN:  # a chain of n links has n + 2 terms
            meta = node.meta
            loc = SourceLoc(filename, getattr(meta, "line", 1), getattr(meta, "column", 1))
            if chain + 2 > limits.MAX_CHAIN:
                raise limits.LimitError(f"an operator chain of more than {limits.MAX_CHAIN} terms", loc)
            raise limits.LimitError(f"the program nests more than {limits.MAX_NESTING} levels deep "
                                    "(calls, brackets, blocks and operators)", loc)
        for i, child in enumerate(node.children):
            if not isinstance(child, Tree):
                continue
            link = i == 0 and node.data in _CHAINS and child.data == node.data
            stack.append((child, depth if link else depth + 1, chain + 1 if link else 0))


# ---------------------------------------------------------------- syntax errors
# Terminals are classified by their text: lark names anonymous ones like '==' __ANON_n.
_EXPR_START = frozenset({"NAME", "INT", "FLOAT", "STRING", "true", "false", "...", "[", "(",
                         "-", "not"})
_STMT_START = frozenset({"let", "fn", "layer", "return", "if", "for", "@"})
_OPERATORS = frozenset({"or", "and", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/",
                        "%", "@", "(", "[", "."})
_SEPARATORS = frozenset({"a newline", "';'", "end of input"})
_WORDS = {"NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
          "_NL": "a newline", "_VSEP": "a newline", "$END": "end of input"}


def _syntax_error(err: UnexpectedInput, text: str, filename: str, parser: Lark) -> ParseError:
    """A human message and location for a lark failure."""
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream]
        what = "unterminated string" if char == '"' else f"unexpected character {char!r}"
        return ParseError(what, SourceLoc(filename, err.line, err.column))
    assert isinstance(err, UnexpectedToken), f"lark raised {type(err).__name__}"
    token = err.token
    if token.type == "$END":
        message = "unexpected end of input"
        loc = _end_of_input(text, filename, parser)
    else:
        message = "unexpected newline" if token.type == "_NL" else f"unexpected '{token.value}'"
        loc = SourceLoc(filename, token.line, token.column)
    expected = _describe_expected(err.accepts or err.expected, parser)
    return ParseError(f"{message}, expected {expected}" if expected else message, loc)


def _end_of_input(text: str, filename: str, parser: Lark) -> SourceLoc:
    """Just after the last real token: where the missing text should have been."""
    last = None
    for tok in parser.lex(text):
        if tok.type not in ("_NL", "_VSEP"):
            last = tok
    if last is None:
        return SourceLoc(filename, 1, 1)
    return SourceLoc(filename, last.end_line, last.end_column)


def _describe_expected(terminals: set[str], parser: Lark) -> str:
    """Readable words for the terminals lark would have accepted, most useful first.

    Statement and expression starts are summarised; operators and separators are left
    out when something else would do, since "expected '}'" says more than "expected
    '+', '-', ..., a newline or '}'".
    """
    texts = {_terminal_text(name, parser) for name in terminals}
    words: list[str] = []
    if {"let", "INT"} <= texts:
        words.append("a statement")
        texts -= _STMT_START | _EXPR_START
    if "INT" in texts:
        words.append("an expression")
        texts -= _EXPR_START
    if texts - _OPERATORS:
        texts -= _OPERATORS
    shown = {_WORDS.get(t, f"'{t}'") for t in texts}
    if words or shown - _SEPARATORS:
        words.extend(sorted(shown - _SEPARATORS))
    elif "a newline" in shown:
        words.extend(["a newline", "';'"])
    else:
        words.extend(sorted(shown))
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _terminal_text(name: str, parser: Lark) -> str:
    """The literal text of a keyword or punctuation terminal, else its name."""
    if name in _WORDS:
        return name
    pattern = parser.get_terminal(name).pattern
    return pattern.value if isinstance(pattern, PatternStr) else name


# ---------------------------------------------------------------- tree -> AST
_SCALAR_TYPES = frozenset({"int", "float", "bool", "str", "list", "trit", "int8", "int32",
                           "float16", "float32"})
_TENSOR_DTYPES = ("float32", "float16", "int8", "int32", "trit")
_ESCAPES = {"n": "\n", "t": "\t"}


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds the `tdsl.frontend.ast` nodes; each gets the location of its first token."""

    def __init__(self, file: str, source: str) -> None:
        super().__init__()
        self.file = file
        self.source = source

    def _loc(self, meta: Meta) -> SourceLoc:
        return SourceLoc(self.file, meta.line, meta.column)

    def _tok_loc(self, tok: Token) -> SourceLoc:
        return SourceLoc(self.file, tok.line, tok.column)

    # statements
    def start(self, meta: Meta, children: list) -> A.Program:
        return A.Program(SourceLoc(self.file, 1, 1), tuple(children), self.file, self.source)

    def block(self, meta: Meta, children: list) -> tuple[A.Stmt, ...]:
        return tuple(children)

    def let_stmt(self, meta: Meta, children: list) -> A.Let:
        *annotations, name, type_, value = children
        return A.Let(self._loc(meta), str(name), type_, value, tuple(annotations))

    def annotation(self, meta: Meta, children: list) -> A.Annotation:
        name, args = children
        return A.Annotation(self._loc(meta), str(name), args or ())

    def assign(self, meta: Meta, children: list) -> A.Assign:
        target, value = children
        if not isinstance(target, (A.Name, A.Index)):
            raise ParseError("can only assign to a name or an element `x[i]`", target.loc)
        return A.Assign(self._loc(meta), target, value)

    def return_stmt(self, meta: Meta, children: list) -> A.Return:
        return A.Return(self._loc(meta), children[0])

    def expr_stmt(self, meta: Meta, children: list) -> A.ExprStmt:
        return A.ExprStmt(self._loc(meta), children[0])

    def if_stmt(self, meta: Meta, children: list) -> A.If:
        cond, then, orelse = children
        if isinstance(orelse, A.If):
            orelse = (orelse,)
        return A.If(self._loc(meta), cond, then, orelse or ())

    def for_stmt(self, meta: Meta, children: list) -> A.For:
        var, iterable, body = children
        return A.For(self._loc(meta), str(var), iterable, body)

    def fn_def(self, meta: Meta, children: list) -> A.FnDef:
        name, params, ret, body = children
        return A.FnDef(self._loc(meta), str(name), params or (), ret, body)

    def layer_def(self, meta: Meta, children: list) -> A.LayerDef:
        name, params, ret, body = children
        return A.LayerDef(self._loc(meta), str(name), params or (), ret, body)

    def params(self, meta: Meta, children: list) -> tuple[A.Param, ...]:
        seen: set[str] = set()
        for param in children:
            if param.name in seen:
                raise ParseError(f"duplicate parameter '{param.name}'", param.loc)
            seen.add(param.name)
        return tuple(children)

    def param(self, meta: Meta, children: list) -> A.Param:
        name, type_, default = children
        return A.Param(self._loc(meta), str(name), type_, default)

    # types
    def type_name(self, meta: Meta, children: list) -> A.TypeExpr:
        (name,) = children
        loc = self._loc(meta)
        if name in _SCALAR_TYPES:
            return A.ScalarType(loc, str(name))
        if name == "TernaryTensor":
            return A.TensorTypeExpr(loc, "trit", None, ternary=True)
        if name == "Tensor":  # dtype and rank both left open
            return A.TensorTypeExpr(loc, "float32", None)
        if name == "tensor":
            raise ParseError("'tensor' needs a dtype and shape: tensor<float32, [B, 784]>", loc)
        known = [*_SCALAR_TYPES, "Tensor", "TernaryTensor"]
        raise ParseError(f"unknown type '{name}'{did_you_mean(str(name), known)}", loc)

    def type_index(self, meta: Meta, children: list) -> A.TensorTypeExpr:
        name, items = children
        loc = self._loc(meta)
        if name == "TernaryTensor":
            return A.TensorTypeExpr(loc, "trit", items, ternary=True)
        if name != "Tensor":
            raise ParseError(f"'{name}' takes no [...]: only Tensor and TernaryTensor do", loc)
        dtype = items[0]
        if not isinstance(dtype, A.Name) or dtype.id not in _TENSOR_DTYPES:
            raise ParseError(f"Tensor dtype must be one of {', '.join(_TENSOR_DTYPES)}",
                             dtype.loc)
        return A.TensorTypeExpr(loc, dtype.id, items[1:] or None)

    def type_angle(self, meta: Meta, children: list) -> A.TensorTypeExpr:
        name, dtype, dims = children
        loc = self._loc(meta)
        if name != "tensor":
            raise ParseError(f"'{name}<...>' is not a type; did you mean 'tensor<...>'?", loc)
        if dtype not in _TENSOR_DTYPES:
            raise ParseError(f"tensor dtype must be one of {', '.join(_TENSOR_DTYPES)}",
                             self._tok_loc(dtype))
        return A.TensorTypeExpr(loc, str(dtype), dims)

    # expressions
    def or_op(self, meta: Meta, children: list) -> A.BinOp:
        return A.BinOp(self._loc(meta), "or", children[0], children[1])

    def and_op(self, meta: Meta, children: list) -> A.BinOp:
        return A.BinOp(self._loc(meta), "and", children[0], children[1])

    def binop(self, meta: Meta, children: list) -> A.BinOp:
        lhs, op, rhs = children
        return A.BinOp(self._loc(meta), op, lhs, rhs)

    def not_op(self, meta: Meta, children: list) -> A.UnaryOp:
        return A.UnaryOp(self._loc(meta), "not", children[0])

    def neg(self, meta: Meta, children: list) -> A.UnaryOp:
        return A.UnaryOp(self._loc(meta), "-", children[0])

    def comp_op(self, meta: Meta, children: list) -> str:
        return str(children[0])

    add_op = mul_op = comp_op

    def call(self, meta: Meta, children: list) -> A.Call | A.TernaryLiteral:
        func, arguments = children
        args: list[A.Expr] = []
        kwargs: list[A.Keyword] = []
        for arg in arguments or ():
            if isinstance(arg, A.Keyword):
                if any(k.name == arg.name for k in kwargs):
                    raise ParseError(f"keyword argument '{arg.name}' given twice", arg.loc)
                kwargs.append(arg)
            elif kwargs:
                raise ParseError("positional argument after a keyword argument", arg.loc)
            else:
                args.append(arg)
        if (isinstance(func, A.Index) and isinstance(func.value, A.Name)
                and func.value.id == "TernaryTensor"):
            return self._ternary_literal(func, args, kwargs)
        return A.Call(self._loc(meta), func, tuple(args), tuple(kwargs))

    def _ternary_literal(self, func: A.Index, args: list[A.Expr],
                         kwargs: list[A.Keyword]) -> A.TernaryLiteral:
        """`TernaryTensor[shape](v, ...)` or `TernaryTensor[shape]([v, ...])`."""
        if kwargs:
            raise ParseError("a TernaryTensor literal takes no keyword arguments", kwargs[0].loc)
        values: tuple[A.Expr, ...] = tuple(args)
        if len(args) == 1 and isinstance(args[0], A.ListLit):
            if args[0].open_tail:
                raise ParseError("a TernaryTensor literal lists every value; '...' is not "
                                 "allowed", args[0].loc)
            values = args[0].items
        return A.TernaryLiteral(func.loc, func.indices, values)

    def args(self, meta: Meta, children: list) -> list[A.Expr | A.Keyword]:
        return children

    def kwarg(self, meta: Meta, children: list) -> A.Keyword:
        name, value = children
        return A.Keyword(self._loc(meta), str(name), value)

    def exprs(self, meta: Meta, children: list) -> tuple[A.Expr, ...]:
        return tuple(children)

    def index(self, meta: Meta, children: list) -> A.Index:
        value, indices = children
        return A.Index(self._loc(meta), value, indices)

    def attribute(self, meta: Meta, children: list) -> A.Attribute:
        value, name = children
        return A.Attribute(self._loc(meta), value, str(name))

    def name(self, meta: Meta, children: list) -> A.Name:
        return A.Name(self._loc(meta), str(children[0]))

    def int_lit(self, meta: Meta, children: list) -> A.IntLit:
        digits = str(children[0]).lstrip("0") or "0"
        loc = self._loc(meta)
        if len(digits) > 19:  # before int(): Python refuses to convert over 4,300 digits
            raise limits.LimitError(f"integer literal of {len(digits)} digits is out of the int64 "
                                    f"range (largest {limits.INT64_MAX})", loc)
        return A.IntLit(loc, limits.check_int(int(digits), loc, "integer literal"))

    def float_lit(self, meta: Meta, children: list) -> A.FloatLit:
        value = float(children[0])
        if not math.isfinite(value):
            raise limits.LimitError(f"float literal {children[0]} is out of the float64 range",
                                    self._loc(meta))
        return A.FloatLit(self._loc(meta), value)

    def str_lit(self, meta: Meta, children: list) -> A.StrLit:
        body = str(children[0])[1:-1]
        value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)
        return A.StrLit(self._loc(meta), value)

    def true_lit(self, meta: Meta, children: list) -> A.BoolLit:
        return A.BoolLit(self._loc(meta), True)

    def false_lit(self, meta: Meta, children: list) -> A.BoolLit:
        return A.BoolLit(self._loc(meta), False)

    def ellipsis(self, meta: Meta, children: list) -> A.Ellipsis_:
        return A.Ellipsis_(self._loc(meta))

    def list_lit(self, meta: Meta, children: list) -> A.ListLit:
        items = children[0] or ()
        loc = self._loc(meta)
        if items and isinstance(items[-1], A.Ellipsis_):
            if len(items) == 1:
                raise ParseError("'...' in a list must follow at least one element", loc)
            return A.ListLit(loc, items[:-1], open_tail=True)
        return A.ListLit(loc, items)
