"""Static checks on a parsed program that need no evaluation.

They catch literal mistakes (a trit `2`, a TernaryTensor literal with the wrong number
of values) at the literal itself, before elaboration would report them far from it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

from tdsl.errors import TdslError
from tdsl.frontend import ast as A

_TRITS = (-1, 0, 1)


def check_program(program: A.Program) -> None:
    """Raise a located `TdslError` for the first literal that cannot be what it claims."""
    for node in _walk(program):
        if isinstance(node, A.Let) and _is_trit(node.type) and node.value is not None:
            _check_trit(node.value)
        elif isinstance(node, A.Param) and _is_trit(node.type) and node.default is not None:
            _check_trit(node.default)
        elif isinstance(node, A.TernaryLiteral):
            _check_ternary_literal(node)


def _walk(node: A.Node) -> Iterator[A.Node]:
    yield node
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        children = value if isinstance(value, tuple) else (value,)
        for child in children:
            if isinstance(child, A.Node):
                yield from _walk(child)


def _is_trit(type_: A.TypeExpr | None) -> bool:
    return isinstance(type_, A.ScalarType) and type_.name == "trit"


def _literal(expr: A.Expr) -> tuple[bool, int | float | bool | str | None]:
    """(True, value) if `expr` is a literal, possibly negated; (False, None) otherwise."""
    if isinstance(expr, (A.IntLit, A.FloatLit, A.BoolLit, A.StrLit)):
        return True, expr.value
    if isinstance(expr, A.UnaryOp) and expr.op == "-":
        is_lit, value = _literal(expr.operand)
        if is_lit and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, -value
    return False, None


def _is_trit_value(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in _TRITS


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def _check_trit(expr: A.Expr) -> None:
    is_lit, value = _literal(expr)
    if is_lit and not _is_trit_value(value):
        raise TdslError(f"trit literal must be -1, 0 or 1, got {_show(value)}", expr.loc)


def _check_ternary_literal(node: A.TernaryLiteral) -> None:
    dims = [d.value for d in node.shape if isinstance(d, A.IntLit)]
    if len(dims) == len(node.shape):  # the shape is all integer literals
        count = math.prod(dims)
        if len(node.values) != count:
            shape = ", ".join(map(str, dims))
            raise TdslError(f"TernaryTensor[{shape}] needs {count} values, "
                            f"got {len(node.values)}", node.loc)
    for value_expr in node.values:
        is_lit, value = _literal(value_expr)
        if not is_lit:
            raise TdslError("TernaryTensor values must be the literals -1, 0 or 1",
                            value_expr.loc)
        if not _is_trit_value(value):
            raise TdslError(f"TernaryTensor values must be -1, 0 or 1, got {_show(value)}",
                            value_expr.loc)


def unknown_names(program: A.Program, globals_: set[str]) -> list[tuple[A.Name, set[str]]]:
    """Every name no scope could define, with the names visible there (for did-you-mean).

    Flow-insensitive (a name counts as defined if its layer or fn binds it anywhere, as a
    `let`, an assignment, a `for` variable or a parameter), so it only finds names that no
    parameter value could make valid: `tdsl-opt` runs it before refusing a layer whose
    parameters have no value, so that such a mistake is not hidden behind that refusal.
    Names inside type expressions (symbolic dims such as `N`) are not checked."""
    top = set(globals_) | _bound(program.body)
    found: list[tuple[A.Name, set[str]]] = []
    for stmt in program.body:
        if isinstance(stmt, A.LayerDef):
            layer = top | {p.name for p in stmt.params} | _bound(stmt.body)
            _check_block(stmt.body, layer, found)
            _check_params(stmt.params, top, found)
        elif isinstance(stmt, A.FnDef):
            _check_fn(stmt, top, found)
        else:
            _check_block((stmt,), top, found)
    return found


def _bound(body: tuple[A.Node, ...]) -> set[str]:
    """Names a block binds anywhere inside it (not inside nested fns)."""
    names: set[str] = set()
    for stmt in body:
        if isinstance(stmt, A.Let):
            names.add(stmt.name)
        elif isinstance(stmt, A.Assign) and isinstance(stmt.target, A.Name):
            names.add(stmt.target.id)
        elif isinstance(stmt, A.For):
            names.add(stmt.var)
            names |= _bound(stmt.body)
        elif isinstance(stmt, A.If):
            names |= _bound(stmt.then) | _bound(stmt.orelse)
    return names


def _check_fn(fn: A.FnDef, outer: set[str], found: list) -> None:
    """A fn sees its outer scope, its parameters and what its body binds."""
    scope = outer | {p.name for p in fn.params} | _bound(fn.body)
    _check_params(fn.params, outer, found)
    _check_block(fn.body, scope, found)


def _check_params(params: tuple[A.Param, ...], scope: set[str], found: list) -> None:
    for p in params:
        if p.default is not None:
            _check_expr(p.default, scope, found)


def _check_block(body: tuple[A.Node, ...], scope: set[str], found: list) -> None:
    for stmt in body:
        if isinstance(stmt, A.FnDef):
            _check_fn(stmt, scope, found)
        elif isinstance(stmt, (A.TensorTypeExpr, A.ScalarType, A.Annotation)):
            continue
        elif isinstance(stmt, A.Name):
            if stmt.id not in scope:
                found.append((stmt, scope))
        else:
            for f in dataclasses.fields(stmt):
                if f.name in ("loc", "type", "ret", "annotations"):
                    continue
                value = getattr(stmt, f.name)
                children = value if isinstance(value, tuple) else (value,)
                _check_block(tuple(c for c in children if isinstance(c, A.Node)), scope, found)


def _check_expr(e: A.Node, scope: set[str], found: list) -> None:
    _check_block((e,), scope, found)
