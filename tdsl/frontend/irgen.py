"""IR generation: elaborate the entry layer of a program into `tdsl` dialect IR.

Layer bodies run at compile time (an interpreter over the AST: `if`/`for` unroll,
sub-layers are created, weights declared), once per distinct set of parameter values;
each such specialisation becomes one `tdsl.layer`. `forward` is traced symbolically:
tensors are SSA values, everything else is a compile-time value. Every op gets the
location of the DSL text it came from. Nothing after this module reads the AST.
"""
from __future__ import annotations

import math
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from tdsl.dialects import tdsl as d
from tdsl.errors import SourceLoc, TdslError, TdslTypeError, UnknownNameError, did_you_mean
from tdsl.frontend import ast, limits
from tdsl.frontend.builder import IRBuilder, tensor_type
from tdsl.frontend.checks import unknown_names
from tdsl.frontend.ops import BUILTINS, COMPILE_TIME_FNS, INIT_FNS, emit_tensor_op
from tdsl.frontend.values import (BuiltinFn, ConstTensor, FnValue, InitSpec, LayerDefValue,
                                  LayerInstance, ParamRef, Scope, Signature, TensorValue,
                                  TypedScalar, bind_args, check_scalar, compile_time_binop,
                                  describe, flatten_values, freeze_value, param_value, show_value)
from tdsl.ops.elementwise import BINARY

_COMPILE_TIME_TYPES = {"int", "float", "bool", "str", "list"}
_DTYPES = {"float32", "float16", "int8", "int32", "trit"}
_INFIX: dict[str, type[d.ValueOp]] = {**{row.symbol: row.op for row in BINARY.values()}, "@": d.MatmulOp}
"""The op class of each infix operator on tensors."""


class _Return(Exception):
    """Unwinds a traced function body at `return` (control flow is compile-time)."""

    def __init__(self, value: Any):
        self.value = value


class _LayerState:
    """What elaborating one layer body declares: weights, children, order of names."""

    def __init__(self, node: ast.LayerDef, sym: str, params: dict[str, Any]):
        self.node = node
        self.sym = sym
        self.params = params
        self.weights: dict[str, tuple[ParamRef, InitSpec, str, str | None, SourceLoc]] = {}
        self.order: list[str] = []
        self.child_names: dict[int, str] = {}
        """id(instance) -> the child name it is bound to, once the body has run."""


class Elaborator:
    """Runs layer bodies, traces forwards and builds the module.

    `layers` maps every known layer name (prelude, then the program) to its definition.
    """

    def __init__(self, program: ast.Program, prelude: ast.Program | None):
        self.program = program
        self.ir = IRBuilder()
        self.globals = Scope()
        for name in set(COMPILE_TIME_FNS) | set(INIT_FNS) | set(BUILTINS) | {"Sequential"}:
            self.globals.vars[name] = BuiltinFn(name)
        self.globals.vars["none"] = None  # leaves an optional argument out: linear(x, w, b=none)
        self.layer_defs: dict[str, ast.LayerDef] = {}
        for prog in ([prelude] if prelude else []) + [program]:
            for stmt in prog.body:
                if isinstance(stmt, ast.LayerDef):
                    self.layer_defs[stmt.name] = stmt
                    self.globals.vars[stmt.name] = LayerDefValue(stmt)
                elif isinstance(stmt, ast.FnDef):
                    self.globals.vars[stmt.name] = FnValue(stmt)
        self.specialisations: dict[tuple, LayerInstance] = {}
        self.sym_counts: dict[str, int] = {}
        self.builder_stack: list[_LayerState] = []
        self.in_forward = False
        self.steps = 0
        """Work done so far, against `limits.MAX_STEPS`."""
        self.calls: list[tuple[str, SourceLoc]] = []
        """The layer instantiations and fn calls being evaluated, outermost first."""
        self.elaborating: set[tuple] = set()
        """Specialisations whose body is running: creating one again would nest it in itself."""

    # ------------------------------------------------------------ entry points
    def build(self, entry: str | None, params: dict[str, Any] | None) -> ModuleOp:
        """The module of the entry layer; a Python stack overflow becomes a located error."""
        try:
            return self._build(entry, params)
        except RecursionError:
            loc = self.calls[-1][1] if self.calls else self.program.loc
            raise limits.LimitError("compile-time evaluation nests too deeply (recursion through "
                                    "calls and nested expressions)", loc) from None

    def _build(self, entry: str | None, params: dict[str, Any] | None) -> ModuleOp:
        user_layers = self.program.layers
        top = [s for s in self.program.body if not isinstance(s, (ast.LayerDef, ast.FnDef))]
        if entry is None and not user_layers:
            return self._build_main(top, params)
        # Top-level statements of a file with layers define compile-time globals.
        self._run_globals(top)
        if entry is None:
            node = user_layers[-1]
        elif entry in self.layer_defs:
            node = self.layer_defs[entry]
        else:
            names = [ld.name for ld in user_layers] or list(self.layer_defs)
            raise UnknownNameError(f"no layer named '{entry}' to use as entry"
                                   f"{did_you_mean(entry, names)}")
        inst = self._instantiate_entry(node, params or {})
        return self.ir.finish(inst.sym, self.program.file)

    def _run_globals(self, stmts: list[ast.Stmt]) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.Return):
                continue  # a top-level return only means something in a layer-less file
            self.exec_stmt(stmt, self.globals, body_mode=False)

    def _build_main(self, top: list[ast.Stmt], params: dict[str, Any] | None) -> ModuleOp:
        if params:
            raise TdslError(f"the program has no layer, so it takes no parameters "
                            f"(got {', '.join(sorted(params))})")
        loc = self.program.loc
        state = _LayerState(ast.LayerDef(loc, "main", (), None, ()), "main", {})
        self.builder_stack.append(state)
        scope = Scope(self.globals)
        fwd = self.ir.begin_forward([], [], loc)
        self.in_forward = True
        ret: Any = None
        try:
            for stmt in top:
                self.exec_stmt(stmt, scope, body_mode=False)
        except _Return as r:
            ret = r.value
        self.in_forward = False
        if ret is not None:
            self.ir.emit_return([self._as_tensor(ret, loc)], None, loc)
        else:
            names = [n for n in scope.vars if not isinstance(scope.vars[n], (FnValue, LayerDefValue))]
            where = {s.name: (s.value or s).loc for s in top if isinstance(s, ast.Let)}
            self.ir.emit_return([self._as_tensor(scope.vars[n], where.get(n, loc)) for n in names],
                                names, loc)
        self.ir.end_forward(fwd)
        self.builder_stack.pop()
        self.ir.emit_layer("main", "main", {}, [], [], fwd, loc)
        return self.ir.finish("main", self.program.file)

    def _instantiate_entry(self, node: ast.LayerDef, params: dict[str, Any]) -> LayerInstance:
        ct_params = self._ct_params(node)
        known = {p.name for p in ct_params}
        for k in params:
            if k not in known:
                raise TdslError(f"layer '{node.name}' has no parameter '{k}'"
                                f"{did_you_mean(k, known)}"
                                + (f"; its parameters are: {', '.join(p.name for p in ct_params)}"
                                   if ct_params else "; it takes no parameters"), node.loc)
        args: dict[str, Any] = {}
        for p in ct_params:
            if p.name in params:
                args[p.name] = limits.check_value(params[p.name], p.loc, f"parameter '{p.name}'")
            elif p.default is None:
                for name, visible in unknown_names(self.program, set(self.globals.vars)):
                    # a mistake no parameter value can fix comes first (issue: it was hidden)
                    raise UnknownNameError(f"unknown name '{name.id}'{did_you_mean(name.id, visible)}", name.loc)
                raise TdslError(f"layer '{node.name}' needs a value for parameter '{p.name}' "
                                f"(pass params={{'{p.name}': ...}} or --param {p.name}=...)", p.loc)
        kw = {k: (v, node.loc) for k, v in args.items()}
        return self.instantiate(node, [], kw, node.loc)

    # ------------------------------------------------------------ layers
    def _layer_signature(self, node: ast.LayerDef) -> Signature:
        return Signature(f"layer '{node.name}'", tuple(p.name for p in self._ct_params(node)),
                         {p.name: p.default for p in self._ct_params(node) if p.default is not None})

    def _ct_params(self, node: ast.LayerDef) -> list[ast.Param]:
        """Compile-time parameters (all of them, unless the layer is function-like)."""
        if self._is_function_like(node):
            return [p for p in node.params if not self._is_tensor_param(p)]
        return list(node.params)

    @staticmethod
    def _is_function_like(node: ast.LayerDef) -> bool:
        """An original-syntax layer with no `fn forward` whose body returns a value."""
        has_forward = any(isinstance(s, ast.FnDef) and s.name == "forward" for s in node.body)
        has_return = any(isinstance(s, ast.Return) for s in node.body)
        return not has_forward and has_return

    @staticmethod
    def _is_tensor_param(p: ast.Param) -> bool:
        t = p.type
        if isinstance(t, ast.TensorTypeExpr):
            return True
        return isinstance(t, ast.ScalarType) and t.name in _DTYPES

    def instantiate(self, node: ast.LayerDef, args: list[Any],
                    kwargs: dict[str, tuple[Any, SourceLoc]], loc: SourceLoc) -> LayerInstance:
        """Create an instance of `node`, elaborating its specialisation on first use."""
        sig = self._layer_signature(node)
        bound = bind_args(sig, args, kwargs, loc)
        params: dict[str, Any] = {}
        for p in self._ct_params(node):
            value = bound[p.name]
            if isinstance(value, ast.Node):  # a default: evaluate in the global scope
                self._enter(f"the default of '{p.name}' of layer '{node.name}'", value.loc)
                try:
                    value = self.eval_expr(value, self.globals)
                finally:
                    self.calls.pop()
            if p.type is not None and isinstance(p.type, ast.ScalarType):
                value = check_scalar(p.type.name, value,
                                     f"parameter '{p.name}' of layer '{node.name}'", loc)
            params[p.name] = param_value(value, f"parameter '{p.name}' of layer '{node.name}'", loc)
        key = (node.name, freeze_value(params))
        if key in self.elaborating:
            raise limits.LimitError(f"layer '{node.name}' contains itself: "
                                    f"{self._show_call(node.name, params)} is created inside its own "
                                    "body", loc)
        spec = self.specialisations.get(key)
        if spec is None:
            sym = self._fresh_sym(node.name)
            spec = LayerInstance(node.name, sym, params, loc)
            self.specialisations[key] = spec
            self._enter(self._show_call(node.name, params), loc)
            self.elaborating.add(key)
            try:
                self._elaborate(node, sym, params)
            except TdslError as e:
                raise self._relocate(e, node, params, loc) from None
            finally:
                self.calls.pop()
                self.elaborating.discard(key)
        return LayerInstance(node.name, spec.sym, params, loc)

    @staticmethod
    def _show_call(name: str, params: dict[str, Any]) -> str:
        args = ", ".join(f"{k}={show_value(v)}" for k, v in params.items())
        return f"{name}({args})" if len(args) <= 60 else f"{name}(...)"

    def _enter(self, what: str, loc: SourceLoc) -> None:
        """Push a call, refusing one nested deeper than `MAX_CALL_DEPTH` (unbounded recursion)."""
        self.step(loc)
        if len(self.calls) >= limits.MAX_CALL_DEPTH:
            chain = " -> ".join(w for w, _ in self.calls[-3:])
            raise limits.LimitError(f"calls nest more than {limits.MAX_CALL_DEPTH} deep, through "
                                    f"{chain} -> {what}: is it recursive without end?", loc)
        self.calls.append((what, loc))

    def step(self, loc: SourceLoc, n: int = 1) -> None:
        """Count `n` units of compile-time work, refusing more than `MAX_STEPS` in all."""
        self.steps += n
        if self.steps > limits.MAX_STEPS:
            raise limits.LimitError(f"compile-time evaluation takes more than {limits.MAX_STEPS} "
                                    "steps (statements, loop iterations, calls and list elements)", loc)

    def _relocate(self, e: TdslError, node: ast.LayerDef, params: dict[str, Any],
                  loc: SourceLoc) -> TdslError:
        """An error inside a built-in layer is the caller's: report it at the call site."""
        if e.loc is None or e.loc.file != node.loc.file or node.loc.file == self.program.file:
            if e.loc is not None and loc not in (e.loc, node.loc):
                e.notes = e.notes + (f"in layer '{node.name}' created at {loc}",)
            return e
        args = ", ".join(f"{k}={show_value(v)}" for k, v in params.items())
        return type(e)(f"{node.name}({args}): {e.message}", loc, e.notes)

    def _fresh_sym(self, name: str) -> str:
        n = self.sym_counts.get(name, 0)
        self.sym_counts[name] = n + 1
        return name if n == 0 else f"{name}_{n}"

    def _elaborate(self, node: ast.LayerDef, sym: str, params: dict[str, Any]) -> None:
        state = _LayerState(node, sym, params)
        self.builder_stack.append(state)
        saved_forward = self.in_forward
        self.in_forward = False
        scope = Scope(self.globals)
        scope.vars.update(params)
        fns: dict[str, ast.FnDef] = {}
        body_stmts: list[ast.Stmt] = []
        for stmt in node.body:
            if isinstance(stmt, ast.FnDef):
                fns[stmt.name] = stmt
                scope.vars[stmt.name] = FnValue(stmt, scope)
            else:
                body_stmts.append(stmt)
        function_like = self._is_function_like(node)
        if not function_like:
            for stmt in body_stmts:
                if isinstance(stmt, ast.Return):
                    raise TdslError("'return' in a layer body: put the computation in "
                                    "'fn forward(...)'", stmt.loc)
                self.exec_stmt(stmt, scope, body_mode=True)
        children = self._collect_children(state, scope)
        param_ops = [self.ir.param_decl(*state.weights[n]) for n in state.weights]
        if function_like:
            fwd = self._trace_forward(node, None, scope, body_stmts)
        else:
            fwd_node = fns.get("forward")
            if fwd_node is None:
                raise TdslError(f"layer '{node.name}' has no 'fn forward(...)'", node.loc)
            fwd = self._trace_forward(node, fwd_node, scope, list(fwd_node.body))
        self.ir.emit_layer(sym, node.name, params, param_ops, children, fwd, node.loc)
        self.builder_stack.pop()
        self.in_forward = saved_forward

    def _collect_children(self, state: _LayerState, scope: Scope) -> list[tuple[str, str, SourceLoc]]:
        """Names whose final value is a layer instance (or a list of them) become children."""
        children: list[tuple[str, str, SourceLoc]] = []
        seen: dict[int, str] = {}
        for name in state.order:
            value = scope.vars.get(name)
            items: list[tuple[str, LayerInstance]] = []
            if isinstance(value, LayerInstance):
                items = [(name, value)]
            elif isinstance(value, list) and value and all(isinstance(v, LayerInstance) for v in value):
                items = [(f"{name}.{i}", v) for i, v in enumerate(value)]
            for child_name, inst in items:
                if id(inst) in seen:
                    raise TdslError(f"the same layer instance is bound to '{seen[id(inst)]}' and "
                                    f"'{child_name}'; create a second instance to use it twice",
                                    inst.loc)
                seen[id(inst)] = child_name
                state.child_names[id(inst)] = child_name
                children.append((child_name, inst.sym, inst.loc))
        return children

    # ------------------------------------------------------------ forward
    def _trace_forward(self, layer: ast.LayerDef, fn: ast.FnDef | None, layer_scope: Scope,
                       body: list[ast.Stmt]) -> Any:
        state = self.builder_stack[-1]
        params = fn.params if fn is not None else tuple(p for p in layer.params
                                                        if self._is_tensor_param(p))
        typed = [self._input_type(p, layer_scope) for p in params]
        types = [t for t, _ in typed]
        loc = fn.loc if fn is not None else layer.loc
        fwd = self.ir.begin_forward(types, [p.name for p in params], loc, [e for _, e in typed])
        scope = Scope(layer_scope)
        for p, arg in zip(params, fwd.args):
            scope.vars[p.name] = TensorValue(arg)
        self.in_forward = True
        self.param_cache: dict[str, TensorValue] = {}
        ret: Any = None
        try:
            self.exec_block(body, scope, body_mode=False)
        except _Return as r:
            ret = r.value
        if ret is None or ret == ():  # no `return`, or one of nothing (`return`, `return none`)
            raise TdslError(f"forward of layer '{layer.name}' returns nothing", loc)
        rets = ret if isinstance(ret, tuple) else (ret,)
        self.ir.emit_return([self._as_tensor(r, loc) for r in rets], None, loc)
        self.in_forward = False
        del state
        return self.ir.end_forward(fwd)

    def _input_type(self, p: ast.Param, scope: Scope) -> tuple[Any, list[int | None]]:
        """The argument's tensor type, and per dim its example size (None but for a dim declared
        `dynamic(example)`, which takes any size at run time; example inputs use `example`)."""
        t = p.type
        if t is None:
            return tensor_type("float32", None), []
        if isinstance(t, ast.ScalarType):
            if t.name in _DTYPES:
                return tensor_type(t.name, ()), []
            raise TdslTypeError(f"forward argument '{p.name}' must be a tensor, not {t.name}", t.loc)
        dims, examples = None, []
        if t.dims is not None:
            dims = []
            for d in t.dims:
                if isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "dynamic" \
                        and not scope.lookup("dynamic")[0]:
                    if len(d.args) != 1 or d.kwargs:
                        raise TdslTypeError("dynamic(example) takes one argument: the example size", d.loc)
                    dims.append(None)
                    examples.append(self._dim(d.args[0], scope, free_ok=False))
                    continue
                dims.append(self._dim(d, scope, free_ok=True))
                examples.append(None)
            limits.check_volume([x if x is not None else e for x, e in zip(dims, examples) if (x or e) is not None],
                                t.loc, f"input '{p.name}'")
            dims = tuple(dims)
        return tensor_type(t.dtype, dims), examples

    def _dim(self, d: ast.Expr, scope: Scope, free_ok: bool) -> int | None:
        """Evaluate a shape dimension; a free dimension name (`N`, `H`) is dynamic."""
        if isinstance(d, ast.Name):
            found, _ = scope.lookup(d.id)
            if not found:
                if free_ok:
                    return None
                raise UnknownNameError(f"unknown name '{d.id}' in a weight shape"
                                       f"{scope.suggest(d.id)}", d.loc)
        value = self.eval_expr(d, scope)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TdslTypeError(f"a shape dimension must be an integer, got {describe(value)}", d.loc)
        if value <= 0:
            raise TdslTypeError(f"a shape dimension must be positive, got {value}", d.loc)
        if value > limits.MAX_TENSOR_ELEMENTS:
            raise limits.LimitError(f"a shape dimension of {value} is larger than the limit of "
                                    f"{limits.MAX_TENSOR_ELEMENTS}", d.loc)
        return value

    # ------------------------------------------------------------ statements
    def exec_block(self, stmts: list[ast.Stmt] | tuple[ast.Stmt, ...], scope: Scope,
                   body_mode: bool) -> None:
        for stmt in stmts:
            self.exec_stmt(stmt, scope, body_mode)

    def exec_stmt(self, stmt: ast.Stmt, scope: Scope, body_mode: bool) -> None:
        self.step(stmt.loc)
        if isinstance(stmt, ast.Let):
            self._exec_let(stmt, scope, body_mode)
        elif isinstance(stmt, ast.Assign):
            if not isinstance(stmt.target, ast.Name):
                raise TdslError("only a name can be assigned to", stmt.target.loc)
            value = self.eval_expr(stmt.value, scope)
            if body_mode:
                self._bind_body(stmt.target.id, value, None, (), scope, stmt.loc)
            else:
                scope.assign(stmt.target.id, value)
        elif isinstance(stmt, ast.Return):
            value = None if stmt.value is None else self.eval_expr(stmt.value, scope)
            raise _Return(value if value is not None else ())
        elif isinstance(stmt, ast.ExprStmt):
            self.eval_expr(stmt.value, scope)
        elif isinstance(stmt, ast.If):
            cond = self._compile_time_bool(stmt.cond, scope)
            self.exec_block(stmt.then if cond else stmt.orelse, scope, body_mode)
        elif isinstance(stmt, ast.For):
            items = self.eval_expr(stmt.iterable, scope)
            if not isinstance(items, (list, range)):
                raise TdslTypeError(f"'for' needs a range or a list known at compile time, "
                                    f"got {describe(items)}", stmt.iterable.loc)
            try:
                count = len(items)
            except OverflowError:  # a range longer than sys.maxsize
                count = limits.MAX_UNROLL + 1
            if count > limits.MAX_UNROLL:
                raise limits.LimitError(f"a loop of more than {limits.MAX_UNROLL} iterations is too "
                                        "long to unroll", stmt.loc)
            for item in items:
                self.step(stmt.loc)
                if body_mode:
                    scope.vars[stmt.var] = item
                else:
                    scope.assign(stmt.var, item)
                self.exec_block(stmt.body, scope, body_mode)
        elif isinstance(stmt, ast.FnDef):
            scope.vars[stmt.name] = FnValue(stmt, scope)
        elif isinstance(stmt, ast.LayerDef):
            raise TdslError("a layer must be defined at the top level", stmt.loc)
        else:  # pragma: no cover - the parser produces no other statements
            raise TdslError(f"unsupported statement {type(stmt).__name__}", stmt.loc)

    def _compile_time_bool(self, expr: ast.Expr, scope: Scope) -> bool:
        cond = self.eval_expr(expr, scope)
        if isinstance(cond, (TensorValue, ParamRef)):
            raise TdslTypeError("an 'if' condition must be known at compile time "
                                "(it depends on a tensor here)", expr.loc)
        if not isinstance(cond, (bool, int, float, str, list)):
            raise TdslTypeError(f"an 'if' condition must be a bool, got {describe(cond)}", expr.loc)
        return bool(cond)

    def _exec_let(self, stmt: ast.Let, scope: Scope, body_mode: bool) -> None:
        value: Any
        if stmt.value is None:
            value = InitSpec("kaiming_uniform", None, (), stmt.loc) if self._is_weight_type(stmt.type) \
                else None
        elif isinstance(stmt.value, ast.Ellipsis_):
            value = InitSpec("kaiming_uniform", None, (), stmt.value.loc)
        else:
            value = self.eval_expr(stmt.value, scope)
        if body_mode:
            self._bind_body(stmt.name, value, stmt.type, stmt.annotations, scope, stmt.loc)
            return
        if stmt.annotations:
            raise TdslError(f"annotation '@{stmt.annotations[0].name}' only applies to a "
                            "declaration in a layer body", stmt.annotations[0].loc)
        if isinstance(value, InitSpec):
            raise TdslError(f"weights are declared in the layer body, not inside a function "
                            f"('{stmt.name}')", stmt.loc)
        if isinstance(value, TypedScalar):
            value = value.value if stmt.type is None or isinstance(stmt.type, ast.ScalarType) \
                else value
        if isinstance(stmt.type, ast.ScalarType) and not isinstance(value, (TensorValue, ParamRef)):
            value = check_scalar(stmt.type.name, value, f"'{stmt.name}'", stmt.value.loc
                                 if stmt.value is not None else stmt.loc)
            if stmt.type.name in _DTYPES:
                value = TypedScalar(value, stmt.type.name)
        scope.vars[stmt.name] = value

    @staticmethod
    def _is_weight_type(t: ast.TypeExpr | None) -> bool:
        return isinstance(t, ast.TensorTypeExpr)

    def _bind_body(self, name: str, value: Any, type_: ast.TypeExpr | None,
                   annotations: tuple[ast.Annotation, ...], scope: Scope, loc: SourceLoc) -> None:
        """A `let`/assignment in a layer body: declares weights; remembers binding order."""
        state = self.builder_stack[-1]
        if isinstance(value, ast.TernaryLiteral):  # pragma: no cover - evaluated earlier
            raise AssertionError
        if isinstance(value, InitSpec) or (isinstance(type_, ast.TensorTypeExpr)
                                           and isinstance(value, ConstTensor)):
            value = self._declare_weight(state, name, value, type_, annotations, scope, loc)
        elif annotations:
            raise TdslError(f"annotation '@{annotations[0].name}' needs a weight or layer "
                            f"declaration, but '{name}' is {describe(value)}", annotations[0].loc)
        elif isinstance(type_, ast.ScalarType):
            value = check_scalar(type_.name, value, f"'{name}'", loc)
        if name not in state.order:
            state.order.append(name)
        scope.vars[name] = value

    def _declare_weight(self, state: _LayerState, name: str, spec: Any,
                        type_: ast.TypeExpr | None, annotations: tuple[ast.Annotation, ...],
                        scope: Scope, loc: SourceLoc) -> ParamRef:
        if name in state.weights:
            raise TdslError(f"weight '{name}' is declared twice in layer '{state.node.name}'", loc)
        dtype = "float32"
        precision = None
        shape = None
        if isinstance(type_, ast.TensorTypeExpr):
            dtype = "float32" if type_.dtype in ("trit", None) else type_.dtype
            if type_.ternary or type_.dtype == "trit":
                precision = "ternary"
            if type_.dims is not None:
                shape = tuple(self._dim(d, scope, free_ok=False) for d in type_.dims)
        elif isinstance(type_, ast.ScalarType):
            raise TdslTypeError(f"'{name}' is declared {type_.name} but initialised with "
                                f"a tensor initialiser", loc)
        kind = "param"
        for a in annotations:
            if a.name == "buffer":
                kind = "buffer"
            elif a.name in ("fp32", "fp16", "int8", "ternary"):
                precision = a.name
            else:
                raise TdslError(f"unknown annotation '@{a.name}'"
                                f"{did_you_mean(a.name, ['buffer', 'fp32', 'fp16', 'int8', 'ternary'])}",
                                a.loc)
        if isinstance(spec, ConstTensor):
            init = InitSpec("constant", spec.shape, (("value", spec.values),), spec.loc)
        else:
            init = spec
        if init.shape is not None:
            limits.check_volume(init.shape, init.loc or loc, f"weight '{name}'")
        if init.shape is not None and shape is not None and tuple(init.shape) != shape:
            raise TdslError(f"'{name}' is declared with shape {list(shape)} but its initialiser "
                            f"makes {list(init.shape)}", init.loc or loc)
        shape = shape if shape is not None else init.shape
        if shape is None:
            raise TdslError(f"the shape of weight '{name}' is unknown: give it in the type "
                            f"(Tensor[float32, d0, d1]) or to the initialiser", loc)
        limits.check_volume(shape, loc, f"weight '{name}'")
        ref = ParamRef(name, tuple(shape), dtype)
        state.weights[name] = (ref, init, kind, precision, loc)
        return ref

    # ------------------------------------------------------------ expressions
    def eval_expr(self, e: ast.Expr, scope: Scope) -> Any:
        if isinstance(e, (ast.IntLit, ast.FloatLit, ast.BoolLit, ast.StrLit)):
            return e.value
        if isinstance(e, ast.Name):
            found, value = scope.lookup(e.id)
            if not found:
                raise UnknownNameError(f"unknown name '{e.id}'{scope.suggest(e.id)}",
                                       e.loc)
            if isinstance(value, TypedScalar) and not self.in_forward:
                return value.value
            return value
        if isinstance(e, ast.ListLit):
            items = [self.eval_expr(i, scope) for i in e.items]
            self.step(e.loc, limits.flat_size(items, e.loc))
            return items
        if isinstance(e, ast.Ellipsis_):
            return InitSpec("kaiming_uniform", None, (), e.loc)
        if isinstance(e, ast.UnaryOp):
            v = self.eval_expr(e.operand, scope)
            return self._unary(e, v)
        if isinstance(e, ast.BinOp):
            if e.op in ("and", "or"):
                lhs = self.eval_expr(e.lhs, scope)
                self._no_tensor(lhs, e.op, e.lhs.loc)
                if (e.op == "and") != bool(lhs):
                    return lhs
                rhs = self.eval_expr(e.rhs, scope)
                self._no_tensor(rhs, e.op, e.rhs.loc)
                return rhs
            return self._binary(e, self.eval_expr(e.lhs, scope), self.eval_expr(e.rhs, scope))
        if isinstance(e, ast.Call):
            return self._call(e, scope)
        if isinstance(e, ast.Index):
            return self._index(e, scope)
        if isinstance(e, ast.Attribute):
            raise TdslError(f"member access '.{e.name}' is not supported", e.loc)
        if isinstance(e, ast.TernaryLiteral):
            return self._ternary_literal(e, scope)
        raise TdslError(f"unsupported expression {type(e).__name__}", e.loc)  # pragma: no cover

    @staticmethod
    def _no_tensor(v: Any, op: str, loc: SourceLoc) -> None:
        if isinstance(v, (TensorValue, ParamRef)):
            raise TdslTypeError(f"'{op}' needs values known at compile time, not a tensor", loc)

    def _ternary_literal(self, e: ast.TernaryLiteral, scope: Scope) -> ConstTensor:
        shape: list[int] = []
        for s in e.shape:
            for v in flatten_values(self.eval_expr(s, scope)):
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise TdslTypeError(f"a TernaryTensor dimension must be a positive integer, "
                                        f"got {describe(v)}", s.loc)
                shape.append(v)
        limits.check_volume(shape, e.loc, "TernaryTensor literal")
        values: list[int] = []
        for item in e.values:
            values.extend(flatten_values(self.eval_expr(item, scope)))
        for v, node in zip(values, e.values):
            if v not in (-1, 0, 1) or isinstance(v, bool):
                raise TdslTypeError(f"trit value must be -1, 0 or 1, got {v}", node.loc)
        if math.prod(shape) != len(values):
            raise TdslTypeError(f"TernaryTensor{shape} needs {math.prod(shape)} values, "
                                f"got {len(values)}", e.loc)
        return ConstTensor(tuple(shape), tuple(values), "trit", e.loc)

    def _unary(self, e: ast.UnaryOp, v: Any) -> Any:
        if e.op == "not":
            self._no_tensor(v, "not", e.loc)
            return not v
        if isinstance(v, TypedScalar):
            v = v.value
        if isinstance(v, int) and not isinstance(v, bool):
            return limits.check_int(-v, e.loc)
        if isinstance(v, float):
            return -v
        if isinstance(v, (TensorValue, ParamRef, ConstTensor)):
            return self._neg(v, e.loc)
        raise TdslTypeError(f"cannot negate {describe(v)}", e.loc)

    def _neg(self, v: Any, loc: SourceLoc) -> Any:
        t = self._as_tensor(v, loc)
        zero = self.ir.constant_scalar(0, self.ir.element_of(t), loc)
        return TensorValue(self.ir.op(d.SubOp, [zero, t], {}, loc))

    def _binary(self, e: ast.BinOp, a: Any, b: Any) -> Any:
        tensors = (TensorValue, ParamRef, ConstTensor)
        if isinstance(a, tensors) or isinstance(b, tensors):
            kind = _INFIX.get(e.op)
            if kind is None:
                raise TdslTypeError(f"operator '{e.op}' is not defined on tensors", e.loc)
            return self._tensor_binop(kind, a, b, e.loc)
        a = a.value if isinstance(a, TypedScalar) else a
        b = b.value if isinstance(b, TypedScalar) else b
        result = compile_time_binop(e.op, a, b, e.loc)
        if isinstance(result, list):
            self.step(e.loc, limits.flat_size(result, e.loc))
        return result

    def _tensor_binop(self, kind: type[d.ValueOp], a: Any, b: Any, loc: SourceLoc) -> TensorValue:
        ta = self._as_tensor(a, loc, like=b)
        tb = self._as_tensor(b, loc, like=a)
        return TensorValue(self.ir.op(kind, [ta, tb], {}, loc))

    def _index(self, e: ast.Index, scope: Scope) -> Any:
        base = self.eval_expr(e.value, scope)
        idx = [self.eval_expr(i, scope) for i in e.indices]
        if isinstance(base, (list, str)):
            if len(idx) != 1 or not isinstance(idx[0], int) or isinstance(idx[0], bool):
                raise TdslTypeError("a list is indexed by one integer", e.loc)
            try:
                return base[idx[0]]
            except IndexError:
                raise TdslError(f"index {idx[0]} is out of range for a list of {len(base)}",
                                e.indices[0].loc) from None
        if isinstance(base, (TensorValue, ParamRef)):
            raise TdslError("indexing tensors is not supported; use reshape/flatten", e.loc)
        raise TdslTypeError(f"cannot index {describe(base)}", e.loc)

    def _call(self, e: ast.Call, scope: Scope) -> Any:
        fn = self.eval_expr(e.func, scope)
        args = [self.eval_expr(a, scope) for a in e.args]
        kwargs = {k.name: (self.eval_expr(k.value, scope), k.loc) for k in e.kwargs}
        if isinstance(fn, BuiltinFn):
            return self._call_builtin(fn.name, args, kwargs, e)
        if isinstance(fn, LayerDefValue):
            if self.in_forward:
                raise TdslError(f"layer '{fn.node.name}' must be created in the layer body "
                                f"(let name = {fn.node.name}(...)), then called in forward", e.loc)
            return self.instantiate(fn.node, args, kwargs, e.loc)
        if isinstance(fn, LayerInstance) or (isinstance(fn, list) and fn
                                              and all(isinstance(f, LayerInstance) for f in fn)):
            if kwargs:
                raise TdslError("a layer is called with positional tensor arguments only",
                                next(iter(kwargs.values()))[1])
            if not self.in_forward:
                raise TdslError("a layer can only be called inside forward", e.loc)
            out = args
            for inst in (fn if isinstance(fn, list) else [fn]):
                out = [self._call_instance(inst, out, e.loc)]
            return out[0]
        if isinstance(fn, FnValue):
            return self._call_fn(fn, args, kwargs, e.loc)
        raise TdslTypeError(f"{describe(fn)} is not callable", e.func.loc)

    def _call_instance(self, inst: LayerInstance, args: list[Any], loc: SourceLoc) -> Any:
        state = self.builder_stack[-1]
        child = state.child_names.get(id(inst))
        if child is None:
            raise TdslError(f"this {inst.layer} layer is not a declared sub-layer of "
                            f"'{state.node.name}' (bind it with let in the layer body)", loc)
        operands = [self._as_tensor(a, loc) for a in args]
        return TensorValue(self.ir.call(child, inst.sym, operands, loc))

    def _call_fn(self, fn: FnValue, args: list[Any], kwargs: dict[str, tuple[Any, SourceLoc]],
                 loc: SourceLoc) -> Any:
        node = fn.node
        sig = Signature(f"{node.name}()", tuple(p.name for p in node.params),
                        {p.name: p.default for p in node.params if p.default is not None})
        bound = bind_args(sig, args, kwargs, loc)
        scope = Scope(self.globals if fn.closure is None else fn.closure)
        self._enter(f"{node.name}()", loc)
        try:
            for p in node.params:
                v = bound[p.name]
                if isinstance(v, ast.Node):
                    v = self.eval_expr(v, self.globals)
                if isinstance(p.type, ast.ScalarType) and p.type.name in _COMPILE_TIME_TYPES:
                    v = check_scalar(p.type.name, v, f"argument '{p.name}' of {node.name}()", loc)
                scope.vars[p.name] = v
            self.exec_block(node.body, scope, body_mode=False)
        except _Return as r:
            return r.value if r.value != () else None
        finally:
            self.calls.pop()
        return None

    def _call_builtin(self, name: str, args: list[Any], kwargs: dict[str, tuple[Any, SourceLoc]],
                      e: ast.Call) -> Any:
        if name == "Sequential":
            if self.in_forward:
                raise TdslError("Sequential(...) must be created in the layer body", e.loc)
            items = args[0] if len(args) == 1 and isinstance(args[0], list) else args
            return self._sequential(items, kwargs, e.loc)
        if name in COMPILE_TIME_FNS:
            result = COMPILE_TIME_FNS[name](args, kwargs, e.loc)
            if isinstance(result, int) and not isinstance(result, bool):
                limits.check_int(result, e.loc)
            return result
        if name in INIT_FNS:
            return INIT_FNS[name](args, kwargs, e.loc)
        if not self.in_forward:
            raise TdslError(f"{name}() works on tensors: call it inside forward", e.loc)
        return emit_tensor_op(self, name, args, kwargs, e.loc)

    def _sequential(self, items: list[Any], kwargs: dict, loc: SourceLoc) -> LayerInstance:
        if kwargs:
            raise TdslError("Sequential() takes no keyword arguments", next(iter(kwargs.values()))[1])
        if not items:
            raise TdslError("Sequential() needs at least one layer", loc)
        for i, it in enumerate(items):
            if not isinstance(it, LayerInstance):
                raise TdslTypeError(f"Sequential() item {i} must be a layer, got {describe(it)}", loc)
        key = ("Sequential", tuple(i.sym for i in items))
        spec = self.specialisations.get(key)
        if spec is None:
            sym = self._fresh_sym("Sequential")
            spec = LayerInstance("Sequential", sym, {}, loc)
            self.specialisations[key] = spec
            children = [(str(i), it.sym, it.loc) for i, it in enumerate(items)]
            fwd = self.ir.begin_forward([tensor_type("float32", None)], ["x"], loc)
            value = fwd.args[0]
            for i, item in enumerate(items):
                value = self.ir.call(str(i), item.sym, [value], loc)
            self.ir.emit_return([value], None, loc)
            self.ir.end_forward(fwd)
            self.ir.emit_layer(sym, "Sequential", {}, [], children, fwd, loc)
        return LayerInstance("Sequential", spec.sym, {}, loc, list(items))

    # ------------------------------------------------------------ tensors
    def read_param(self, ref: ParamRef, loc: SourceLoc):
        cached = self.param_cache.get(ref.name)
        if cached is not None:
            return cached.value
        v = self.ir.get_param(ref.name, ref.shape, ref.dtype, loc)
        self.param_cache[ref.name] = TensorValue(v)
        return v

    def _as_tensor(self, v: Any, loc: SourceLoc, like: Any = None):
        """The SSA value for a tensor-like value; scalars become constants."""
        if isinstance(v, TensorValue):
            return v.value
        if isinstance(v, ParamRef):
            return self.read_param(v, loc)
        if isinstance(v, ConstTensor):
            return self.ir.constant_tensor(v.shape, v.values, v.dtype, loc)
        if isinstance(v, TypedScalar):
            return self.ir.constant_scalar(v.value, v.dtype, loc)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if like is not None and not isinstance(like, (int, float)):
                dtype = self.ir.element_of(self._as_tensor(like, loc))
            else:
                dtype = "float32" if isinstance(v, float) else "int32"
            return self.ir.constant_scalar(v, dtype, loc)
        raise TdslTypeError(f"expected a tensor, got {describe(v)}", loc)


def build_module(text: str, filename: str = "<input>", entry: str | None = None,
                 params: dict[str, Any] | None = None) -> ModuleOp:
    """Parse DSL text and elaborate it (with the prelude) into a `tdsl` module."""
    from tdsl.frontend.parser import parse_program
    from tdsl.frontend.prelude import prelude_program

    program = parse_program(text, filename)
    with limits.recursion_room():
        return Elaborator(program, prelude_program()).build(entry, params)
