"""The AST of a tdsl program: what the parser produces and IR generation consumes.

Every node carries `loc` (file, line, column) so that any later error, in the type
checker, in IR generation or in a pass, can point at the user's text. Nodes are plain
frozen dataclasses; nothing downstream of IR generation ever reads them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tdsl.errors import SourceLoc


@dataclass(frozen=True)
class Node:
    loc: SourceLoc


# ---------------------------------------------------------------- types
@dataclass(frozen=True)
class ScalarType(Node):
    """`int`, `float`, `bool`, `str`, `list`, `trit`, `int8`, `int32`, `float16`, `float32`."""

    name: str


@dataclass(frozen=True)
class TensorTypeExpr(Node):
    """`Tensor[dtype, dims...]`, `TernaryTensor[dims...]`, `tensor<dtype, [dims]>`.

    `dims` is None when the rank is left open (`Tensor[float16]`, bare `TernaryTensor`).
    Each dim is an expression; a `Name` that is not a layer parameter is a free
    dimension name (stays dynamic until shape inference).
    `ternary` is true for `TernaryTensor`; its dtype is then "trit".
    """

    dtype: str
    dims: tuple[Expr, ...] | None
    ternary: bool = False


TypeExpr = ScalarType | TensorTypeExpr


# ---------------------------------------------------------------- expressions
@dataclass(frozen=True)
class IntLit(Node):
    value: int


@dataclass(frozen=True)
class FloatLit(Node):
    value: float


@dataclass(frozen=True)
class BoolLit(Node):
    value: bool


@dataclass(frozen=True)
class StrLit(Node):
    value: str


@dataclass(frozen=True)
class Ellipsis_(Node):
    """`...`: a placeholder initialiser, or the tail marker of a list literal."""


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class ListLit(Node):
    """`[a, b, c]`; `open_tail` is true for the original `[a, b, ...]` form."""

    items: tuple[Expr, ...]
    open_tail: bool = False


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str  # "-" | "not"
    operand: Expr


@dataclass(frozen=True)
class BinOp(Node):
    """Arithmetic, comparison and boolean operators: + - * / % @ == != < <= > >= and or."""

    op: str
    lhs: Expr
    rhs: Expr


@dataclass(frozen=True)
class Keyword(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Call(Node):
    """`func(args, k=v)`; `func` is any expression (usually a Name)."""

    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...] = ()


@dataclass(frozen=True)
class Index(Node):
    """`value[i]` or `value[i, j]`."""

    value: Expr
    indices: tuple[Expr, ...]


@dataclass(frozen=True)
class Attribute(Node):
    """`value.name`."""

    value: Expr
    name: str


@dataclass(frozen=True)
class TernaryLiteral(Node):
    """`TernaryTensor[2, 2](1, 0, -1, 1)` or `TernaryTensor[2, 2]([1, 0, -1, 1])`.

    `shape` items are expressions (nested lists are allowed by the original syntax and
    flattened by IR generation); `values` are the listed element expressions.
    """

    shape: tuple[Expr, ...]
    values: tuple[Expr, ...]


Expr = (IntLit | FloatLit | BoolLit | StrLit | Ellipsis_ | Name | ListLit | UnaryOp | BinOp
        | Call | Index | Attribute | TernaryLiteral)


# ---------------------------------------------------------------- statements
@dataclass(frozen=True)
class Annotation(Node):
    """`@fp16`, `@int8`, `@ternary`, `@fp32`, `@buffer`, or `@name(args)`."""

    name: str
    args: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class Let(Node):
    """`let name[: type] [= value]`, optionally preceded by annotations."""

    name: str
    type: TypeExpr | None
    value: Expr | None
    annotations: tuple[Annotation, ...] = ()


@dataclass(frozen=True)
class Assign(Node):
    """`target = value` where target is a Name (or an Index, kept for error reporting)."""

    target: Expr
    value: Expr


@dataclass(frozen=True)
class Return(Node):
    value: Expr | None


@dataclass(frozen=True)
class ExprStmt(Node):
    value: Expr


@dataclass(frozen=True)
class If(Node):
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class For(Node):
    """`for var in iterable { body }`; iterable is usually `range(n)` or a list."""

    var: str
    iterable: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Param(Node):
    """A layer or function parameter: `name: type [= default]` (type may be omitted in fn)."""

    name: str
    type: TypeExpr | None
    default: Expr | None = None


@dataclass(frozen=True)
class FnDef(Node):
    name: str
    params: tuple[Param, ...]
    ret: TypeExpr | None
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class LayerDef(Node):
    """`layer Name(params) [-> type] { body }`; `params` is () for `layer Name { ... }`."""

    name: str
    params: tuple[Param, ...]
    ret: TypeExpr | None
    body: tuple[Stmt, ...]


Stmt = Let | Assign | Return | ExprStmt | If | For | FnDef | LayerDef


@dataclass(frozen=True)
class Program(Node):
    """A whole file. `body` holds everything in source order (layers, fns, top-level stmts)."""

    body: tuple[Stmt, ...]
    file: str = field(default="<input>")
    source: str = field(default="", repr=False)

    @property
    def layers(self) -> tuple[LayerDef, ...]:
        return tuple(s for s in self.body if isinstance(s, LayerDef))

    @property
    def functions(self) -> tuple[FnDef, ...]:
        return tuple(s for s in self.body if isinstance(s, FnDef))
