"""Token generation on the Numba runtime: `prefill` and `decode_step` with a key/value cache,
greedy and sampled decoding, on a deployed decoder's plan (packed weights, no torch).

The plan is the whole-sequence forward (ids [N, T] -> logits [N, T, vocab]). `Generator`
runs its steps itself: every step as `DeployedModel` runs it, except the ones that depend on
a token's position or on earlier tokens: `tdsl.rope` and `tdsl.positions` get the position
offset, and each causal `tdsl.attention` appends its keys and values to the cache
(`tdsl.runtime.kv_cache`) and attends over all of them. Every other step must work token by
token; a plan with a step that mixes positions (a transpose, a non-causal attention, a
matmul between activations) is refused at construction, at that op's location.

RMSNorm, RoPE and the cached attention run as parallel Numba kernels
(`tdsl.runtime.llm_kernels`), tested against the numpy definitions the composite reference
runs, so a decode step computes what the full forward computes for that token.

While a step has fewer rows than the GEMM micro-kernels take (decode), an RMSNorm whose
output feeds ternary projections (or the int8 head) also writes that output's per-token int8
codes in the same pass (`llm_kernels.rms_norm_quant`), and the projections read them
(`llm_kernels.ternary_linear_quantized`): the codes are bit for bit those the projection
would have made itself. Sibling projections (ternary linears that read the same activation:
q/k/v, gate/up) run as one kernel call on their concatenated packed rows, one parallel
region over all of them; each member step then takes its slice and applies its own bias and
activation epilogue. The integers and scales are those of the separate calls. Prefill (as
many rows as the prompt has tokens) runs every projection on GEMM micro-kernels: on AVX2 and
AVX-512 VNNI the NHWC runtime's tile (`rows_int8`; siblings as one call there too, their rows
quantised once).

A decode step ([N, 1] ids on gemm's row kernels) runs one closure per plan step with its
arrays bound at the shape's first step (`Generator._prepare`): arena views, weights, int8
codes reused from step to step, the cache's transposed keys, the kernels called directly
(the handlers' checks, reshapes, allocations and dictionary look-ups cost ~10 us a step, and
a 700M step runs ~380 of them). Same kernels, same arguments: the same bits (tested).

The LM head (the plan's output projection, plain: no bias, residual or activation) is read
as `head` says (`tdsl.runtime.lm_head`): "float", as the plan holds it (float32); "fp16",
half the bytes, float32 arithmetic; "int8", int8 rows with a scale per row times the int8
codes of the final norm, a quarter of the bytes, changing the logits by both roundings
(perplexity cost in docs/results/bench_llm.md); "auto" (the default) is "fp16" when every
head weight is an fp16 value (as `tdsl import` and the b1.58 freeze store the head: then
nothing is rounded), else "float". Such an exact fp16 head runs a prompt of
FP16_HEAD_BLAS_ROWS tokens or more as the float32 BLAS product on the same values, one band
of the vocabulary per Numba thread (`lm_head.float_head_into`).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from tdsl.backends.numba.executor import (CPU_RUNNERS, DeployedModel, _Bound, _Ctx, _single_threaded_blas,
                                          _threads_for_this_call)
from tdsl.backends.numba.executor import operands_in_order
from tdsl.runtime import conv_int8, gemm, rows_int8
from tdsl.backends.numba.plan import Kernel, Step
from tdsl.dialects import tdsl as t
from tdsl.errors import TdslError
from tdsl.ops.elementwise import BINARY
from tdsl.runtime import llm_kernels as L
from tdsl.runtime import lm_head
from tdsl.runtime import nchw_float as K
from tdsl.runtime.activations import NONE as NO_ACTIVATION
from tdsl.runtime.cpu_features import kernel_path
from tdsl.runtime.kv_cache import KVCache
from tdsl.runtime.quant_act import plane_stride

_TOKENWISE_KERNELS = frozenset({Kernel.LINEAR_TERNARY, Kernel.LINEAR_FLOAT, Kernel.LINEAR_INT8,
                                Kernel.ACTIVATION, Kernel.BINARY})
"""Kernels that compute each token from that token alone."""
_TOKENWISE_COMPOSITES = (t.RmsNormOp, t.LayerNormOp, t.EmbeddingOp)
_NO_RESIDUAL = np.zeros((0, 0), np.float32)
_NO_RESIDUAL3 = np.zeros((0, 0, 0), np.float32)
_NO_INT = np.zeros((0, 0), np.int32)
FP16_HEAD_BLAS_ROWS = 8
"""From this many rows on (prefill) an fp16 head whose weights are exact fp16 values runs as the
plan's float32 BLAS product on those same values: the GEMV kernel converts and multiplies each
weight once per row of x, BLAS blocks for many rows (700M head, 64 rows: 164 ms on BLAS's one
thread against 565 ms for the GEMV on two; even at 8 rows on one thread each; the bands of
`lm_head.float_head_into` give BLAS every thread). Below it the
GEMV, reading half the bytes, is faster (1.6x at one row)."""
HEADS = ("auto", "float", "fp16", "int8")
"""How the LM head is read (module docstring)."""


@dataclass
class Generation:
    """What `Generator.generate` returns: the new token ids and how fast they came."""

    tokens: list[list[int]]
    """Per sequence of the batch, the generated ids (the prompt not included)."""
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens * len(self.tokens) / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Generated tokens after the first (which prefill gives) per second of decode steps."""
        steps = max(len(self.tokens[0]) - 1, 0) * len(self.tokens)
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


class Generator:
    """Prefill and decode on one deployed decoder; one cache, so one sequence batch at a time."""

    def __init__(self, model: DeployedModel, capacity: int = 256, head: str = "auto"):
        if head not in HEADS:
            raise TdslError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if model.device != "cpu":
            raise TdslError("generation runs on the CPU runtime; deploy the model with device='cpu'")
        plan = model.plan
        if len(plan.inputs) != 1 or len(plan.outputs) != 1:
            raise TdslError(f"@{plan.entry} must take token ids and return logits to generate, but it takes "
                            f"{len(plan.inputs)} input(s) and returns {len(plan.outputs)} value(s)")
        self.model = model
        self.plan = plan
        self.handlers: dict[int, Callable[[Step, list[np.ndarray], np.ndarray], None]] = {}
        attention_steps = 0
        self._attention_layer: dict[int, int] = {}
        for step in plan.steps:
            if step.is_view or step.kind in _TOKENWISE_KERNELS:
                continue
            op = step.op
            if step.kind is Kernel.REFERENCE and isinstance(op, t.AttentionOp) and op.is_causal:
                self.handlers[id(step)] = self._attention_handler(attention_steps)
                self._attention_layer[id(step)] = attention_steps
                attention_steps += 1
            elif step.kind is Kernel.REFERENCE and isinstance(op, t.RotaryOp):
                self.handlers[id(step)] = self._rope
            elif step.kind is Kernel.REFERENCE and isinstance(op, t.PositionsOp):
                self.handlers[id(step)] = self._positions
            elif step.kind is Kernel.REFERENCE and isinstance(op, t.RmsNormOp):
                self.handlers[id(step)] = self._rms_norm
            elif not (step.kind is Kernel.REFERENCE and isinstance(op, _TOKENWISE_COMPOSITES)):
                raise step.error("cannot decode token by token with a key/value cache: this step "
                                 f"({step.kind}) is not computed from each token alone")
        if attention_steps == 0:
            raise TdslError(f"@{plan.entry} has no causal attention: it is not a decoder to generate from")
        self._ctx: _Ctx | None = None
        self._fp16_head: lm_head.Fp16Head | None = None
        self._quantized: dict[int, L.QuantizedRows] = {}
        """Value -> its int8 codes, made by the norm that wrote it in this forward."""
        self.head = "float" if head == "auto" else head
        """The head storage in use ("float", "fp16" or "int8")."""
        self.head_bytes = 0
        """Bytes of the LM head's weight as this generator reads it (0 when not found)."""
        head_step = next((s for s in plan.steps if s.output == plan.outputs[0] and s.kind is Kernel.LINEAR_FLOAT), None)
        if head_step is not None:
            self.head_bytes = head_step.weights["weight_t"].nbytes
            exact = head in ("auto", "fp16") and lm_head.exact_in_fp16(head_step.weights["weight_t"])
            if head == "auto":
                self.head = "fp16" if exact and _plain(head_step) else "float"
            if self.head != "float":
                self.handlers[id(head_step)] = self._head_handler(head_step, exact)
        elif head in ("fp16", "int8"):
            raise TdslError(f"head={head!r}: @{plan.entry} returns no float output projection to read as {head}")
        self._head_step = head_step if self.head != "float" else None
        self._logits_step = head_step
        """The output projection, whatever its storage: `prefill(last_only=True)` runs it on each
        sequence's last row only."""
        self._quantizing_norms = self._find_quantizing_norms(plan, head_step)
        self._fused: list[dict] = []
        """Per group of sibling projections: the concatenated packed rows, scales, the output, and
        (from the first prefill on AVX2 / VNNI) their `rows_int8` panels."""
        self._siblings: dict[int, tuple[dict, int, bool, bool]] = {}
        """id(member step) -> (its group, its first row there, first member?, has an epilogue)."""
        self._fuse_siblings(plan)
        for step in plan.steps:
            if step.kind is Kernel.LINEAR_TERNARY and id(step) not in self.handlers \
                    and step.inputs[0] in self._quantizing_norms:
                self.handlers[id(step)] = self._quantized_linear
        self.cache = KVCache(attention_steps, capacity)
        self.offset = 0
        """The position of the next token fed (the cache's length)."""
        self._bound: dict[tuple, _Bound] = {}
        self._decode_calls: dict[tuple, list[Callable[[], None]]] = {}
        """Per decode input shape: one closure per plan step with its arrays bound (`_prepare`)."""
        self._own_handlers = dict(self.handlers)
        """The handlers as made here: a step whose handler was replaced since (a profiler's
        timer) runs that handler in decode too, not a closure of its own."""
        self.step_hook: Callable[[Step, Callable[[], None]], Callable[[], None]] | None = None
        """Set before the first decode step of a shape, it wraps each step's closure (profiling)."""

    # -- sibling projections as one call

    def _fuse_siblings(self, plan) -> None:
        """One fused handler per group of plain ternary linears reading the same value."""
        groups: dict[int, list[Step]] = {}
        for step in plan.steps:
            if step.kind is Kernel.LINEAR_TERNARY and not step.attrs["residual"] and id(step) not in self.handlers:
                groups.setdefault(step.inputs[0], []).append(step)
        for members in groups.values():
            if len(members) < 2 or len({m.weights["packed"].shape[1] for m in members}) != 1:
                continue
            rows = [m.weights["packed"].shape[0] for m in members]
            packed = np.ascontiguousarray(np.concatenate([m.weights["packed"] for m in members]))
            scale = np.concatenate([np.broadcast_to(np.asarray(m.weights["scale"], np.float32), (n,))
                                    for m, n in zip(members, rows)]).astype(np.float32)
            starts = np.cumsum([0, *rows])
            fused = {"packed": packed, "scale": scale, "bias": np.zeros(len(scale), np.float32), "out": None,
                     "rows": None, "biases": np.concatenate([m.weights["bias"] for m in members]).astype(np.float32)}
            self._fused.append(fused)
            for i, m in enumerate(members):
                epilogue = bool(np.any(m.weights["bias"])) or m.attrs["activation"] != NO_ACTIVATION
                self.handlers[id(m)] = self._sibling_handler(fused, int(starts[i]), int(starts[i + 1]), i == 0,
                                                             epilogue)
                self._siblings[id(m)] = (fused, int(starts[i]), i == 0, epilogue)

    def _sibling_handler(self, fused: dict, lo: int, hi: int, first: bool, epilogue: bool
                         ) -> Callable[[Step, list[np.ndarray], np.ndarray], None]:
        """`epilogue`: the member has a bias or an activation to apply to its slice (q/k/v and
        up of a b1.58 decoder have neither: a Numba call each saved per step). Over many rows
        (prefill on AVX2 / VNNI) the call adds every member's bias and the member applies its activation
        to its slice as one flat array: as `bias_residual_act` over [rows, outputs, 1] it took
        more than the projection (one parallel item per element: 125M, gate's SiLU, 64 rows)."""
        def run(step: Step, ins: list[np.ndarray], y: np.ndarray) -> None:
            ctx = self._ctx
            x2 = ins[0].reshape(-1, ins[0].shape[-1])
            min_rows = conv_int8.LINEAR_MIN_ROWS.get(ctx.path)
            many = ctx.act_quant == "int8" and rows_int8.runs(ctx.path, x2.shape[0])
            if not many and (ctx.act_quant != "int8" or (min_rows is not None and x2.shape[0] >= min_rows)):
                CPU_RUNNERS[step.kind](step, ins, y, ctx)  # a path without rows_int8: step by step
                return
            if first:
                out = fused["out"]
                if out is None or out.shape[0] != x2.shape[0]:
                    out = fused["out"] = np.empty((x2.shape[0], fused["packed"].shape[0]), np.float32)
            if first and many:  # prefill on AVX2 / VNNI: the rows quantised once, one call over all members' panels
                panels = fused["rows"]
                if panels is None or panels.path != ctx.path:
                    panels = fused["rows"] = rows_int8.row_panels(fused["packed"], fused["packed"].shape[0],
                                                                  x2.shape[1], ctx.path)
                rows_int8.linear_into(out, np.ascontiguousarray(x2, dtype=np.float32), panels, fused["scale"],
                                      fused["biases"], _NO_RESIDUAL, NO_ACTIVATION, ctx.path, ctx.workspace)
            elif first:
                q = self._quantized.get(step.inputs[0])
                if q is not None:
                    L.ternary_linear_quantized(out, q, fused["packed"], fused["scale"], fused["bias"], _NO_RESIDUAL,
                                               NO_ACTIVATION, ctx.path)
                else:
                    gemm.linear_into(out, np.ascontiguousarray(x2, dtype=np.float32), fused["packed"],
                                     fused["scale"], fused["bias"], _NO_RESIDUAL, NO_ACTIVATION, "int8", ctx.path)
            y2 = y.reshape(-1, hi - lo)
            y2[...] = fused["out"][:, lo:hi]
            if epilogue and many:  # the bias was added in the call: the activation on the flat slice
                if step.attrs["activation"] != NO_ACTIVATION:
                    K.activation_map(y2.reshape(-1), step.attrs["activation"], y2.reshape(-1))
            elif epilogue:
                K.bias_residual_act(y2[:, :, None], step.weights["bias"], _NO_RESIDUAL3, step.attrs["activation"])
        return run

    # -- the position-dependent steps

    def _rope(self, step: Step, ins: list[np.ndarray], y: np.ndarray) -> None:
        (x,) = operands_in_order(step, ins)
        op = step.op
        L.rope(x, op.heads.value.data, op.base.value.data, self.offset, out=_writable(y, x.shape))

    def _rms_norm(self, step: Step, ins: list[np.ndarray], y: np.ndarray) -> None:
        x, weight = operands_in_order(step, ins)
        rows = x.size // x.shape[-1]
        if step.output in self._quantizing_norms and self._row_kernels(rows):
            _, self._quantized[step.output] = L.rms_norm_quant(x, weight, step.op.eps.value.data, out=y,
                                                               batch_multiple=L.batch_multiple(self._ctx.path, rows))
        else:
            L.rms_norm(x, weight, step.op.eps.value.data, out=y)

    # -- projections that read int8 codes

    def _row_kernels(self, rows: int) -> bool:
        """True when `rows` run on gemm's row kernels (int8, fewer rows than the micro-kernels take)."""
        min_rows = conv_int8.LINEAR_MIN_ROWS.get(self._ctx.path)
        return self._ctx.act_quant == "int8" and (min_rows is None or rows < min_rows)

    def _find_quantizing_norms(self, plan, head_step: Step | None) -> frozenset[int]:
        """Outputs of RMSNorms that a ternary projection (or the int8 head) reads as its input."""
        norms = {s.output for s in plan.steps if id(s) in self.handlers and self.handlers[id(s)] == self._rms_norm}
        readers = {s.inputs[0] for s in plan.steps if s.kind is Kernel.LINEAR_TERNARY}
        if head_step is not None and self.head == "int8":
            readers.add(head_step.inputs[0])
        return frozenset(norms & readers)

    def _quantized_linear(self, step: Step, ins: list[np.ndarray], y: np.ndarray) -> None:
        q = self._quantized.get(step.inputs[0])
        if q is None:  # prefill: the norm did not quantise
            CPU_RUNNERS[step.kind](step, ins, y, self._ctx)
            return
        w, a = step.weights, step.attrs
        y2 = y.reshape(-1, y.shape[-1])
        res = ins[1].reshape(y2.shape) if a["residual"] else _NO_RESIDUAL
        L.ternary_linear_quantized(y2, q, w["packed"], w["scale"], w["bias"], res, a["activation"], self._ctx.path)

    def _head_handler(self, step: Step, exact: bool) -> Callable[[Step, list[np.ndarray], np.ndarray], None]:
        """`exact`: every head weight is an fp16 value (checked once: 1.3 GB of float32 at 2B-4T)."""
        if not _plain(step):
            raise step.error(f"head={self.head!r} takes a plain output projection (no bias, residual or activation)")
        weight = step.weights["weight_t"].T
        if self.head == "fp16":
            fp16 = self._fp16_head = lm_head.Fp16Head.from_weight(weight)
            self.head_bytes = fp16.nbytes
            blas_rows = FP16_HEAD_BLAS_ROWS if exact else None

            def run_fp16(step: Step, ins: list[np.ndarray], y: np.ndarray) -> None:
                if blas_rows is not None and ins[0].size >= blas_rows * ins[0].shape[-1]:
                    # the same numbers, as float32 BLAS, one band of the vocabulary per thread
                    x2 = ins[0].reshape(-1, ins[0].shape[-1])
                    lm_head.float_head_into(y.reshape(x2.shape[0], -1), x2, step.weights["weight_t"],
                                            numba.get_num_threads())
                else:
                    y[...] = fp16(ins[0])
            return run_fp16
        int8 = lm_head.Int8Head.from_weight(weight)
        self.head_bytes = int8.nbytes

        def run_int8(step: Step, ins: list[np.ndarray], y: np.ndarray) -> None:
            q = self._quantized.get(step.inputs[0])
            if q is None:
                y[...] = int8(ins[0])
            else:
                int8.apply_quantized(q.xq, q.xs, y.reshape(q.xs.shape[0], -1))
        return run_int8

    def _positions(self, step: Step, ins: list[np.ndarray], y: np.ndarray) -> None:
        (ids,) = operands_in_order(step, ins)
        y[...] = np.arange(self.offset, self.offset + ids.shape[-1], dtype=np.int32)

    def _attention_handler(self, layer: int) -> Callable[[Step, list[np.ndarray], np.ndarray], None]:
        def run(step: Step, ins: list[np.ndarray], y: np.ndarray) -> None:
            q, k, v = operands_in_order(step, ins)
            keys, values = self.cache.append(layer, self.offset, k, v)
            op = step.op
            L.attention(q, keys, values, op.heads.value.data, op.kv_heads.value.data, True, out=_writable(y, q.shape))
        return run

    # -- a decode step with its arrays bound

    def _prepare(self, bound: _Bound, ctx: _Ctx) -> list[Callable[[], None]]:
        """One closure per step of a decode shape ([N, 1] ids, rows on gemm's row kernels): the
        step's arrays (arena views, weights, reused int8 codes) bound once, the kernels called
        directly without the wrappers' checks, reshapes and allocations (a 700M step runs ~380
        steps: the wrappers took several ms of it). The same kernels and arguments as the
        handlers, hence the same bits; a step with no closure of its own runs its handler.
        `handlers` are read here, at a shape's first decode step."""
        views, calls = bound.views, []
        codes: dict[int, L.QuantizedRows] = {}
        for step in self.plan.steps:
            if step.is_view:
                continue
            ins, y = [views[v] for v in step.inputs], views[step.output]
            call = self._bind(step, ins, y, ctx, codes)
            if call is None:
                handler = self.handlers.get(id(step))
                if handler is not None:
                    call = functools.partial(handler, step, ins, y)
                else:
                    call = functools.partial(CPU_RUNNERS[step.kind], step, ins, y, ctx)
            calls.append(call if self.step_hook is None else self.step_hook(step, call))
        return calls

    def _bind(self, step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx,
              codes: dict[int, L.QuantizedRows]) -> Callable[[], None] | None:
        """A closure computing `step` as its handler would, or None (the handler runs)."""
        handler = self.handlers.get(id(step))
        if handler is not self._own_handlers.get(id(step)):
            return None
        op = step.op
        if handler == self._rms_norm and step.output in self._quantizing_norms:
            x, weight = operands_in_order(step, ins)
            d = x.shape[-1]
            x2, y2 = x.reshape(-1, d), y.reshape(-1, d)
            rows, k4p = x2.shape[0], plane_stride(d)
            q = codes[step.output] = L.QuantizedRows(
                np.zeros((-(-rows // L.batch_multiple(ctx.path, rows)) * L.batch_multiple(ctx.path, rows), 4 * k4p),
                         np.int8), np.empty(rows, np.float32), np.empty(rows, np.int32))
            w, eps, quantized, out = np.ascontiguousarray(weight, np.float32), float(op.eps.value.data), \
                self._quantized, step.output

            def norm() -> None:
                L.rms_norm_quant_into(x2, w, eps, y2, q.xq, q.xs, q.sums, k4p)
                quantized[out] = q
            return norm
        if step.kind is Kernel.LINEAR_TERNARY and step.inputs[0] in codes:
            q = codes[step.inputs[0]]
            kernel = gemm.row_kernel(ctx.path, q.xs.shape[0])
            sibling = self._siblings.get(id(step))
            if sibling is None:
                if handler != self._quantized_linear:
                    return None
                w, a = step.weights, step.attrs
                y2 = y.reshape(-1, y.shape[-1])
                res = ins[1].reshape(y2.shape) if a["residual"] else _NO_RESIDUAL
                packed, scale, bias, act = w["packed"], w["scale"], w["bias"], a["activation"]
                return lambda: kernel(q.xq, q.sums, q.xs, packed, scale, bias, res, act, y2, _NO_INT)
            fused, lo, first, epilogue = sibling
            if fused["out"] is None or fused["out"].shape[0] != q.xs.shape[0]:
                fused["out"] = np.empty((q.xs.shape[0], fused["packed"].shape[0]), np.float32)
            out = fused["out"]
            y2 = y.reshape(out.shape[0], -1)
            bias, act = step.weights["bias"], step.attrs["activation"]
            if first:
                packed, scale, zero = fused["packed"], fused["scale"], fused["bias"]

                def first_member() -> None:
                    kernel(q.xq, q.sums, q.xs, packed, scale, zero, _NO_RESIDUAL, NO_ACTIVATION, out, _NO_INT)
                    L.member_slice(out, lo, bias, act, epilogue, y2)
                return first_member
            return lambda: L.member_slice(out, lo, bias, act, epilogue, y2)
        if handler == self._rope:
            (x,) = operands_in_order(step, ins)
            heads, base, dh = op.heads.value.data, float(op.base.value.data), x.shape[-1] // op.heads.value.data
            if x.shape[-1] % heads or dh % 2:
                return None
            yw = _writable(y, x.shape)
            return lambda: L._rope_serial(x, *L._tables(self.offset, 1, dh, base), heads, yw)
        if id(step) in self._attention_layer:
            q, k, v = operands_in_order(step, ins)
            layer, heads, kv_heads = self._attention_layer[id(step)], op.heads.value.data, op.kv_heads.value.data
            yw, cache = _writable(y, q.shape), self.cache
            if heads % kv_heads or q.shape[2] % heads or k.shape[2] != kv_heads * (q.shape[2] // heads):
                return None
            scale = np.float32(1.0 / np.sqrt(q.shape[2] // heads))

            def attend() -> None:
                cache.append(layer, self.offset, k, v)
                L.attention_cached(q, cache.keys_t[layer], cache.values[layer], heads, kv_heads, self.offset + 1,
                                   scale, yw)
            return attend
        if step.kind is Kernel.REFERENCE and isinstance(op, t.EmbeddingOp) and handler is None:
            ids, table = operands_in_order(step, ins)
            flat, rows = ids.reshape(-1), table.shape[0]
            y2 = y.reshape(flat.size, -1)
            runner = functools.partial(CPU_RUNNERS[step.kind], step, ins, y, ctx)

            def embed() -> None:  # the composite's numpy took ~70 us for one row of the 700M table
                for i in range(flat.size):
                    if not 0 <= flat[i] < rows:
                        runner()  # raises the composite's located error naming the id
                    y2[i] = table[flat[i]]
            return embed
        if step.kind is Kernel.BINARY and handler is None:
            a, b = operands_in_order(step, ins)
            ufunc = BINARY[type(op)].ufunc
            return lambda: ufunc(a, b, out=y)
        if step is self._head_step and self._fp16_head is not None and handler is not None:
            head, x2 = self._fp16_head, ins[0].reshape(-1, ins[0].shape[-1])
            y2 = y.reshape(x2.shape[0], -1)
            return lambda: head.into(y2, x2)
        return None

    # -- running the plan

    def _last_rows_only(self, step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx, n: int) -> None:
        """The head on the last row of each sequence (`prefill(last_only=True)`): n rows of
        vocabulary logits instead of n * T; the other rows of y are left as they were."""
        d = ins[0].shape[-1]
        t = ins[0].size // (n * d)
        x = np.ascontiguousarray(ins[0].reshape(n, t, d)[:, -1])
        q = self._quantized.get(step.inputs[0])
        if q is not None:  # the norm's codes of those rows (an int8 head reads them)
            rows = np.arange(n) * t + t - 1
            self._quantized[step.inputs[0]] = L.QuantizedRows(np.ascontiguousarray(q.xq[rows]), q.xs[rows].copy(),
                                                              q.sums[rows].copy())
        out = np.empty((n, y.shape[-1]), np.float32)
        self._run_step(step, [x], out, ctx)
        y.reshape(n, t, -1)[:, -1] = out

    def _run_step(self, step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
        """One step outside a prepared decode: its handler, else the executor's runner."""
        handler = self.handlers.get(id(step))
        if handler is not None:
            handler(step, ins, y)
        else:
            CPU_RUNNERS[step.kind](step, ins, y, ctx)

    def _forward(self, ids: np.ndarray, last_only: bool = False) -> np.ndarray:
        ids = np.ascontiguousarray(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise TdslError(f"token ids must be an integer array [batch, tokens], got {ids.dtype} {ids.shape}")
        plan, key = self.plan, (ids.shape,)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = _Bound(plan, plan.schedule(key))
        views = bound.views
        np.copyto(views[plan.inputs[0]], ids, casting="unsafe")
        ctx = self._ctx = _Ctx(plan.act_quant, kernel_path(self.model.path), bound.workspace, self.model._panels)
        self._quantized.clear()
        calls = self._decode_calls.get(key)
        if calls is None and ids.shape[1] == 1 and self._row_kernels(ids.size):
            calls = self._decode_calls[key] = self._prepare(bound, ctx)
        # fewer threads while other processes hold cores, as a deployment call does: a 2-thread
        # parallel region beside a busy process waits a time slice for its descheduled thread
        with _single_threaded_blas(self.model._uses_blas), _threads_for_this_call():
            if calls is not None:
                for call in calls:
                    call()
            else:
                last = last_only and self._logits_step is not None and len(self._logits_step.inputs) == 1
                for step in plan.steps:
                    if step.is_view:
                        continue
                    ins, y = [views[v] for v in step.inputs], views[step.output]
                    if last and step is self._logits_step:
                        self._last_rows_only(step, ins, y, ctx, ids.shape[0])
                    else:
                        self._run_step(step, ins, y, ctx)
        self.offset += ids.shape[1]
        self.cache.length = self.offset
        out = views[plan.outputs[0]]
        return np.array(out[:, -1:] if last_only else out)

    def prefill(self, ids: np.ndarray, last_only: bool = False) -> np.ndarray:
        """Start a sequence: the logits [N, T, vocab] of prompt `ids` [N, T]; fills the cache.
        last_only: the logits of each sequence's last token only, [N, 1, vocab], what generation
        needs (the head runs on N rows instead of N * T, as transformers' generate keeps one)."""
        self.cache.reset()
        self.offset = 0
        return self._forward(ids, last_only)

    def decode_step(self, ids: np.ndarray) -> np.ndarray:
        """The logits [N, 1, vocab] of the next token `ids` [N, 1], attending over the cache."""
        if self.offset == 0:
            raise TdslError("decode_step before prefill: start a sequence with prefill(prompt)")
        if np.ndim(ids) != 2 or np.shape(ids)[1] != 1:
            raise TdslError(f"decode_step takes one token per sequence, ids [N, 1], got shape {np.shape(ids)}")
        return self._forward(ids)

    def generate(self, prompt: Sequence[Sequence[int]] | np.ndarray, max_new_tokens: int, *,
                 temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                 stop: int | None = None) -> Generation:
        """Continue each prompt by `max_new_tokens` ids: greedy when `temperature` is 0, else
        sampled from softmax(logits / temperature), among the `top_k` likeliest if given.
        `stop`: an id that ends the generation when every sequence has produced it."""
        ids = np.asarray(prompt, dtype=np.int32)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise TdslError(f"the prompt must be token ids [batch, tokens] with at least one token, got {ids.shape}")
        if max_new_tokens < 1:
            raise TdslError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if temperature < 0 or (top_k is not None and top_k < 1):
            raise TdslError(f"temperature must be >= 0 and top_k >= 1, got {temperature} and {top_k}")
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        logits = self.prefill(ids, last_only=True)[:, -1]
        prefill_seconds = time.perf_counter() - start
        out: list[list[int]] = [[] for _ in range(len(ids))]
        start = time.perf_counter()
        for i in range(max_new_tokens):
            nxt = _choose(logits, temperature, top_k, rng)
            for row, token in zip(out, nxt):
                row.append(int(token))
            if (stop is not None and all(stop in row for row in out)) or i == max_new_tokens - 1:
                break
            logits = self.decode_step(nxt[:, None].astype(np.int32))[:, -1]
        return Generation(out, int(ids.shape[1]), prefill_seconds, time.perf_counter() - start)


def _writable(y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`y` itself where a kernel can write it in place (so no copy of its result follows)."""
    if y.shape != shape or y.dtype != np.float32 or not y.flags.c_contiguous:
        raise TdslError(f"internal: step output {y.dtype} {y.shape} is not the kernel's {shape} float32 layout")
    return y


def _plain(step: Step) -> bool:
    """A projection with no bias, residual or activation (what the head kernels compute)."""
    a = step.attrs
    return not a["residual"] and a["activation"] == NO_ACTIVATION and not np.any(step.weights["bias"])


def _choose(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> np.ndarray:
    """The next id per row of logits [N, vocab]."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(len(row), p=row) for row in p])
