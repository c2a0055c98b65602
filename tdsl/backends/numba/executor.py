"""Run a `Plan` on numpy arrays (CPU) or `numba.cuda` device arrays.

`deploy_module(module, arrays)` builds the plan of a kernel-level module (`tdsl.lowering`
lowers it; users call `tdsl.deploy` or `.deploy()` on a model) and returns a `DeployedModel`:
call it with numpy arrays (or torch tensors, read through `np.asarray(t.detach())` when torch
is already imported; this module never imports torch) and get numpy back. One runner per
`Kernel` (`CPU_RUNNERS`; the CUDA ones are `tdsl.backends.numba.gpu.CUDA_RUNNERS`).

Kept-precision float and int8 layers call numpy's BLAS. Numba's OpenMP workers spin for a
while after each parallel kernel, and on a small machine a multi-threaded BLAS call right
after one waits for cores they hold (measured on 2 cores: the ResNet-18 fp16 stem conv took
20 ms instead of 7.5). So a call whose plan has BLAS steps runs BLAS single-threaded
(`threadpoolctl`, about 30 us per call): the Numba kernels own the cores.

act_quant applies to the packed ternary kernels only: "int8" (the runtime's default, per-token
int8 activations, about 1e-2 relative error per layer) or "float" (fp32 activations, what the
torch backend computes). Kept-precision int8 layers always quantise their activations per
tensor at run time, exactly as the torch backend's `_rt.int8_linear` / `_rt.int8_conv2d`.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tdsl.backends.numba import nhwc
from tdsl.backends.numba.plan import Kernel, Plan, Schedule, Step, build_plan, dtype_of
from tdsl.errors import TdslError
from tdsl.signature import check_inputs
from tdsl.ops.composite import COMPOSITES
from tdsl.ops.elementwise import BINARY
from tdsl.quant.int8 import int8_activation
from tdsl.runtime import compile_stats, conv_float, conv_int8, gemm, lm_head, rows_int8
from tdsl.runtime import nchw_float as K
from tdsl.runtime.conv2d import depthwise_conv, im2col
from tdsl.runtime.cpu_features import kernel_path, requested_path
from tdsl.runtime.threads import RUNTIME_LOCK, threads_for_call

DEVICES = ("cpu", "cuda")
_BLAS_KERNELS = frozenset({Kernel.CONV2D_FLOAT, Kernel.CONV2D_INT8, Kernel.CONV_TRANSPOSE2D, Kernel.LINEAR_FLOAT,
                           Kernel.LINEAR_INT8, Kernel.MATMUL})
"""Kernels that call numpy's BLAS (see the module docstring)."""
_EMPTY2 = np.zeros((0, 0), np.float32)
_EMPTY3 = np.zeros((0, 0, 0), np.float32)
_EMPTY4 = np.zeros((0, 0, 0, 0), np.float32)
_EXACT_F32 = 2 ** 24


class _Ctx:
    """Per-call state the runners share: kernel path, act_quant, scratch arrays."""

    def __init__(self, act_quant: str, path: str, workspace: dict[str, np.ndarray],
                 panels: dict[int, np.ndarray] | None = None):
        self.act_quant = act_quant
        self.path = path
        self.workspace = workspace
        self.panels = {} if panels is None else panels
        """id(step) -> the step's weight in its kernel's layout (`conv_int8.conv_panels`, `linear_panels`,
        `conv_float.padded_weights`), built on first use."""


# --------------------------------------------------------------------------- CPU runners


def _conv_ternary(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    x = ins[0]
    a, w = step.attrs, step.weights
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), g = a["kernel"], a["stride"], a["padding"], a["dilation"], a["groups"]
    act = a["activation"]
    N, C = x.shape[:2]
    O, Ho, Wo = y.shape[1:]
    if g > 1 and g == C == O:  # depthwise: exact fp32, act_quant does not apply (runtime.reference)
        res = ins[1] if a["residual"] else _EMPTY4
        depthwise_conv(x, w["packed"], kh, kw, sh, sw, ph, pw, dh, dw, w["scale"], w["bias"], res, act, y)
        return
    Cg, Og, P = C // g, O // g, N * Ho * Wo
    if ctx.act_quant == "int8":  # the conv-shaped int8 kernel (tdsl.runtime.conv_int8)
        panels = ctx.panels.get(id(step))
        if panels is None:
            panels = ctx.panels[id(step)] = conv_int8.conv_panels(w["packed"], O, Cg, kh, kw, g)
        res = ins[1] if a["residual"] else _EMPTY4
        conv_int8.conv2d_int8_into(y, x, panels, (kh, kw), (sh, sw), (ph, pw), (dh, dw), g, w["scale"],
                                   w["bias"], res, act, ctx.path, ctx.workspace)
        return
    cols = ctx.workspace["cols"][:P * Cg * kh * kw].reshape(P, Cg * kh * kw)
    yg = ctx.workspace["gemm"][:P * Og].reshape(P, Og)
    y3 = y.reshape(N, O, Ho * Wo)
    res3 = ins[1].reshape(N, O, Ho * Wo) if a["residual"] else _EMPTY3
    for gi in range(g):
        rows = slice(gi * Og, (gi + 1) * Og)
        im2col(x, gi * Cg, Cg, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, cols)
        gemm.linear_into(yg, cols, w["packed"][rows], w["scale"][rows], w["bias"][rows], _EMPTY2, 0,
                         ctx.act_quant, ctx.path)
        K.scatter_epilogue(yg, gi * Og, res3, act, y3)


_BAND_MIN_FLOPS = 20_000_000
"""Below this a kept-precision conv runs its im2col + GEMM in one band (threads cost more)."""


@functools.cache
def _band_pool(workers: int) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers, thread_name_prefix="tdsl-conv")


def _conv_band(x: np.ndarray, w2: np.ndarray, n: int, gi: int, Cg: int, Og: int, geom: tuple,
               oy0: int, oy1: int, acc: np.ndarray, epilogue: tuple | None) -> None:
    """acc[n, group gi, rows oy0..oy1 of the output] = w2[group gi] @ im2col(those rows), then
    the float epilogue (bias, residual [N, O, L] or empty, activation) when given."""
    kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = geom
    cols = np.empty((Cg * kh * kw, (oy1 - oy0) * Wo), w2.dtype)
    conv_float.im2col_band(x, n, gi * Cg, Cg, kh, kw, sh, sw, ph, pw, dh, dw, oy0, oy1, Wo, cols)
    rows, span = slice(gi * Og, (gi + 1) * Og), slice(oy0 * Wo, oy1 * Wo)
    out = w2[rows] @ cols  # contiguous: the epilogue vectorises on it, not on the strided band of acc
    if epilogue is not None:
        bias, res, act = epilogue
        K.bias_residual_act_band(out, bias[rows], res[n, rows, span] if res.size else _EMPTY2, act)
    acc[n, rows, span] = out


def _conv_bands(x: np.ndarray, w2: np.ndarray, g: int, geom: tuple, acc: np.ndarray,
                epilogue: tuple | None = None) -> None:
    """im2col + GEMM of a kept-precision conv, in bands of output rows on Python threads.

    BLAS runs single-threaded inside a call (module docstring) and a Numba-parallel im2col
    leaves OpenMP workers spinning, which slow a GEMM on other threads that follows it (measured
    on the ResNet stem, 2 cores: im2col + GEMM 5.0 ms, + a 2-thread GEMM 6.5 ms). So each band
    does its own im2col (`conv_float.im2col_band`, serial, GIL released) and its own GEMM (numpy releases
    the GIL too), on `numba.get_num_threads()` threads."""
    import numba

    kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = geom
    N, Cg, Og = x.shape[0], x.shape[1] // g, w2.shape[0] // g
    workers = min(numba.get_num_threads(), Ho)
    flops = 2 * w2.size * Ho * Wo * N
    bands = 1 if workers < 2 or flops < _BAND_MIN_FLOPS else workers
    edges = [Ho * i // bands for i in range(bands + 1)]
    tasks = [(n, gi, lo, hi) for n in range(N) for gi in range(g) for lo, hi in zip(edges[:-1], edges[1:])]
    if bands == 1:
        for n, gi, lo, hi in tasks:
            _conv_band(x, w2, n, gi, Cg, Og, geom, lo, hi, acc, epilogue)
        return
    pool = _band_pool(workers)
    for job in [pool.submit(_conv_band, x, w2, n, gi, Cg, Og, geom, lo, hi, acc, epilogue)
                for n, gi, lo, hi in tasks]:
        job.result()


def _conv_columns(x: np.ndarray, weight: np.ndarray, a: dict[str, Any], acc: np.ndarray,
                  epilogue: tuple | None = None) -> bool:
    """acc [N, O, Ho*Wo] = conv(x, weight) with weight [O, C/g, kh, kw] (float32 or float64);
    True when it also applied `epilogue` (bias, residual, activation: the im2col path does,
    in its bands)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), g = a["kernel"], a["stride"], a["padding"], a["dilation"], a["groups"]
    N, C, H, W = x.shape
    O = weight.shape[0]
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    Cg = C // g
    w2 = weight.reshape(O, Cg * kh * kw)
    if a.get("depthwise"):
        K.depthwise_float(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, acc.reshape(N, O, Ho, Wo))
        return False
    if (kh, kw, sh, sw, ph, pw, g) == (1, 1, 1, 1, 0, 0, 1):
        xs = x.reshape(N, C, H * W)
        for n in range(N):
            np.matmul(w2, xs[n] if xs.dtype == w2.dtype else xs[n].astype(w2.dtype), out=acc[n])
        return False
    _conv_bands(x, w2, g, (kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo), acc, epilogue)
    return epilogue is not None


def _conv_float(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    a = step.attrs
    N, O = y.shape[:2]
    y3 = y.reshape(N, O, -1)
    res = ins[1].reshape(N, O, -1) if a["residual"] else _EMPTY3
    epilogue = (step.weights["bias"], res, a["activation"])
    weight = step.weights["weight"]
    im2col = not a.get("depthwise") and weight.shape[2:] != (1, 1)
    if im2col and weight.dtype == np.float32 and conv_float.available():
        # AVX-512: im2col + FMA micro-kernel on Numba's own threads (runtime/conv_float)
        wps = ctx.panels.get(id(step))
        if wps is None:
            wps = ctx.panels[id(step)] = conv_float.padded_weights(weight, a["groups"])
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["padding"], a["dilation"]
        conv_float.conv2d_float_into(y, np.ascontiguousarray(ins[0], np.float32), wps,
                                     (kh, kw, sh, sw, ph, pw, dh, dw), *epilogue)
        return
    if not _conv_columns(ins[0], weight, a, y3, epilogue):
        K.bias_residual_act(y3, *epilogue)


def _conv_transpose(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    """conv_transpose2d as `_conv_float` of the step (stride 1, flipped kernel: `plan._Builder.
    conv_transpose2d`) over x with stride - 1 zeros between its pixels, padded by
    dilation (k - 1) on each side plus output_padding at the end, then `crop` cut from each."""
    x, a = ins[0], step.attrs
    (kh, kw), (dh, dw), (sh, sw), (ph, pw), (eh, ew) = (a["kernel"], a["dilation"], a["upsample"], a["crop"],
                                                        a["output_padding"])
    N, C, H, W = x.shape
    fh, fw = dh * (kh - 1), dw * (kw - 1)
    full = np.zeros((N, C, (H - 1) * sh + 1 + 2 * fh + eh, (W - 1) * sw + 1 + 2 * fw + ew), np.float32)
    full[:, :, fh:fh + (H - 1) * sh + 1:sh, fw:fw + (W - 1) * sw + 1:sw] = x
    spread = np.ascontiguousarray(full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw])
    _conv_float(step, [spread, *ins[1:]], y, ctx)


def _int8_dtype(weight: np.ndarray) -> type:
    """float32 while every integer sum is exact in it (as the torch backend decides), else float64."""
    k = weight[0].size
    return np.float32 if 127 * 127 * k < _EXACT_F32 else np.float64


def _conv_int8(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    a, w = step.attrs, step.weights
    dtype = _int8_dtype(w["weight"])
    xq, sx = int8_activation(ins[0], dtype)
    N, O = y.shape[:2]
    acc = np.empty((N, O, y[0, 0].size), dtype)
    _conv_columns(xq, w["weight"].astype(dtype, copy=False), a, acc)
    res = ins[1].reshape(N, O, -1) if a["residual"] else _EMPTY3
    K.scale_bias_residual_act(acc, (w["scale"].astype(dtype) * dtype(sx)), w["bias"], res,
                              a["activation"], y.reshape(N, O, -1))


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])


def _linear_ternary(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    w, a = step.weights, step.attrs
    res = _rows(ins[1]) if a["residual"] else _EMPTY2
    x2 = _rows(ins[0])
    if ctx.act_quant == "int8" and rows_int8.runs(ctx.path, x2.shape[0]):
        # several rows, AVX2 or AVX-512 VNNI: the NHWC runtime's micro-kernel on s8 panels, built on first use
        panels = ctx.panels.get(id(step))
        if not isinstance(panels, rows_int8.RowPanels) or panels.path != ctx.path:  # none yet, or another path's
            panels = ctx.panels[id(step)] = rows_int8.row_panels(w["packed"], w["packed"].shape[0], x2.shape[1],
                                                                 ctx.path)
        rows_int8.linear_into(_rows(y), np.ascontiguousarray(x2), panels, w["scale"], w["bias"], res,
                              a["activation"], ctx.path, ctx.workspace)
        return
    min_rows = conv_int8.LINEAR_MIN_ROWS.get(ctx.path)
    if ctx.act_quant == "int8" and min_rows is not None and x2.shape[0] >= min_rows:
        # several rows: the conv micro-kernel on panels, built on first use (conv_int8.LINEAR_MIN_ROWS)
        panels = ctx.panels.get(id(step))
        if not isinstance(panels, np.ndarray):  # none yet, or rows_int8's of an earlier path
            N, K = w["packed"].shape[0], x2.shape[1]
            panels = ctx.panels[id(step)] = conv_int8.linear_panels(w["packed"], N, K)
        conv_int8.linear_int8_into(_rows(y), np.ascontiguousarray(x2), panels, w["scale"], w["bias"], res,
                                   a["activation"], ctx.path, ctx.workspace)
        return
    gemm.linear_into(_rows(y), _rows(ins[0]), w["packed"], w["scale"], w["bias"], res,
                     a["activation"], ctx.act_quant, ctx.path)


def _linear_epilogue(step: Step, ins: list[np.ndarray], y2: np.ndarray) -> None:
    a = step.attrs
    res = _rows(ins[1])[:, :, None] if a["residual"] else _EMPTY3
    K.bias_residual_act(y2[:, :, None], step.weights["bias"], res, a["activation"])


GEMV_ROWS = 2
"""A float linear of at most this many rows whose weights are all fp16 values (a head the
policy kept at fp16) reads them as fp16 in the parallel GEMV (`lm_head.Fp16Head`): half the
bytes of BLAS's float32 and every thread (MobileNetV2's 1280 x 1000 head at B=1, 2 threads:
0.35 ms in single-threaded BLAS). More rows go to BLAS in bands of rows, one per thread."""


def _linear_float(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    import numba

    y2, x2, wt = _rows(y), _rows(ins[0]), step.weights["weight_t"]
    head = ctx.panels.get(id(step))
    if head is None:
        head = ctx.panels[id(step)] = lm_head.Fp16Head.from_weight(wt.T) if lm_head.exact_in_fp16(wt) else False
    if head and x2.shape[0] <= GEMV_ROWS and "f16c" in lm_head.fp16_paths():
        head.into(y2, x2)
    else:
        lm_head.float_head_into(y2, x2, wt, numba.get_num_threads())
    _linear_epilogue(step, ins, y2)


def _linear_int8(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    w, a = step.weights, step.attrs
    dtype = _int8_dtype(w["weight_t"].T)
    xq, sx = int8_activation(_rows(ins[0]), dtype)
    acc = xq @ w["weight_t"].astype(dtype, copy=False)
    res = _rows(ins[1])[:, :, None] if a["residual"] else _EMPTY3
    K.scale_bias_residual_act(acc[:, :, None], w["scale"].astype(dtype) * dtype(sx), w["bias"], res,
                              a["activation"], _rows(y)[:, :, None])


def _pool(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    (kh, kw), (sh, sw), (ph, pw) = step.attrs["kernel"], step.attrs["stride"], step.attrs["padding"]
    fn = K.max_pool2d if step.kind is Kernel.MAX_POOL2D else K.avg_pool2d
    fn(ins[0], kh, kw, sh, sw, ph, pw, y)


def _adaptive_avg_pool2d(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    K.adaptive_avg_pool2d(ins[0], y)


def _activation(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    K.activation_map(ins[0].reshape(-1), step.attrs["activation"], y.reshape(-1))


def _softmax(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    dim = step.attrs["dim"]
    np.subtract(ins[0], ins[0].max(axis=dim, keepdims=True), out=y)
    np.exp(y, out=y)
    y /= y.sum(axis=dim, keepdims=True)


def operands_in_order(step: Step, ins: list[np.ndarray]) -> list[np.ndarray]:
    """The op's operands in operand order: step weights and activation inputs, per `order`."""
    operands = iter(ins)
    return [step.weights[o] if o != "in" else next(operands) for o in step.attrs["order"]]


def _binary(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    a, b = operands_in_order(step, ins)
    BINARY[type(step.op)].ufunc(a, b, out=y)


def _reference(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    np.copyto(y, COMPOSITES[type(step.op)].reference(step.op, *operands_in_order(step, ins)), casting="unsafe")


def _affine(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    x = ins[0]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    np.multiply(x, step.weights["scale"].reshape(shape), out=y)
    y += step.weights["shift"].reshape(shape)


def _matmul(step: Step, ins: list[np.ndarray], y: np.ndarray, ctx: _Ctx) -> None:
    np.matmul(*operands_in_order(step, ins), out=y)


CPU_RUNNERS: dict[Kernel, Callable[[Step, list[np.ndarray], np.ndarray, _Ctx], None]] = {
    Kernel.CONV2D_TERNARY: _conv_ternary,
    Kernel.CONV2D_FLOAT: _conv_float,
    Kernel.CONV2D_INT8: _conv_int8,
    Kernel.CONV_TRANSPOSE2D: _conv_transpose,
    Kernel.LINEAR_TERNARY: _linear_ternary,
    Kernel.LINEAR_FLOAT: _linear_float,
    Kernel.LINEAR_INT8: _linear_int8,
    Kernel.MAX_POOL2D: _pool,
    Kernel.AVG_POOL2D: _pool,
    Kernel.ADAPTIVE_AVG_POOL2D: _adaptive_avg_pool2d,
    Kernel.ACTIVATION: _activation,
    Kernel.SOFTMAX: _softmax,
    Kernel.BINARY: _binary,
    Kernel.AFFINE: _affine,
    Kernel.MATMUL: _matmul,
    Kernel.REFERENCE: _reference,
}
"""One runner per kernel; `Kernel.VIEW` steps have none (their value is a view of the input)."""


# --------------------------------------------------------------------------- binding


class _Bound:
    """A schedule made concrete on the CPU: the arena, a view per value, the scratch arrays."""

    def __init__(self, plan: Plan, schedule: Schedule):
        self.schedule = schedule
        self.arena = [np.empty(n, np.uint8) for n in schedule.buffer_bytes]
        self.views: list[np.ndarray | None] = [None] * len(plan.value_types)
        for v, c in plan.consts.items():
            self.views[v] = c
        for v, shape in enumerate(schedule.shapes):
            b = schedule.buffer_of[v]
            if b is None or shape is None:
                continue
            dtype = dtype_of(plan.value_types[v])
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self.views[v] = self.arena[b][:nbytes].view(dtype).reshape(shape)
        self.workspace = {k: np.empty(n, np.float32) for k, n in schedule.workspace.items()}
        self.program: Any = None
        """act_quant="int8-nhwc": the `nhwc.Program` of this input shape."""


# --------------------------------------------------------------------------- the callable


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return np.asarray(x.detach().cpu())
    return np.asarray(x)


class DeployedModel:
    """The plan bound to a device: call it like the model's forward, get numpy back."""

    def __init__(self, plan: Plan, device: str, path: str | None, profile: bool = False):
        self.plan = plan
        self.device = device
        self._nhwc_kernel = microkernel_for(path)
        self.path = None if path in NHWC_PATHS else path
        """The kernel path of the steps outside the NHWC micro-kernels (auto for an NHWC-only path)."""
        self.profiling = profile
        """Time every step of every CPU call (`profile()` summarises them)."""
        self._uses_blas = any(step.kind in _BLAS_KERNELS for step in plan.steps)
        self._bound: dict[tuple, Any] = {}
        self._panels: dict[int, np.ndarray] = {}
        self._timings: dict[tuple, list[list[float]]] = {}
        self.static_scales: dict[int, tuple[float, int]] | None = None
        """act_quant="int8-nhwc": (scale, zero point) of every u8 value once `calibrate` ran."""
        self._out_dtypes: list[np.dtype] | None = None
        self._analysis = nhwc.analyse(plan) if plan.act_quant == "int8-nhwc" else None
        self._input_limits = None if self._analysis is None or device != "cpu" else nhwc.checks_inputs(plan, self._analysis)
        """{input: limit} where the NHWC program checks the inputs for NaN and Inf as it
        quantises them (`nhwc.checks_inputs`), so a call skips `check_inputs`' own pass."""

    def calibrate(self, batches: Any) -> DeployedModel:
        """act_quant="int8-nhwc": run `batches` (arrays, or tuples of arrays for several inputs)
        with dynamic scales and make the ranges they reach the static scales of every u8
        activation (the epilogues then write u8 directly). Returns self."""
        if self.plan.act_quant != "int8-nhwc":
            raise TdslError("calibrate() sets the static activation scales of act_quant='int8-nhwc' deployments; "
                            f"this one was deployed with act_quant={self.plan.act_quant!r}")
        if self.device != "cpu":
            raise TdslError("calibrate() runs on the CPU runtime; deploy with device='cpu'")
        batches = [b if isinstance(b, tuple) else (b,) for b in batches]
        if not batches:
            raise TdslError("calibrate() needs at least one batch")
        with RUNTIME_LOCK:
            merged: dict[int, tuple[float, float]] = {}
            for batch in batches:
                arrays = [_to_numpy(x) for x in batch]
                check_inputs(self.plan.signature, arrays)
                program = self._program(tuple(a.shape for a in arrays))
                program.calibrate([lambda arrays=arrays, program=program: self._run_program(program, arrays)])
                for v, (lo, hi) in program.ranges().items():
                    a, b = merged.get(v, (np.inf, -np.inf))
                    merged[v] = (min(a, lo), max(b, hi))
            from tdsl.runtime.nhwc_int8 import qparams

            self.static_scales = {v: qparams(lo, hi) for v, (lo, hi) in merged.items()}
            for bound in self._bound.values():
                bound.program.static = self.static_scales
        return self

    def _program(self, key: tuple) -> Any:
        bound = self._bind(key)
        return bound.program

    def _bind(self, key: tuple) -> _Bound:
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = _Bound(self.plan, self.plan.schedule(key))
            if self.plan.act_quant == "int8-nhwc":
                ctx = _Ctx("int8", kernel_path(self.path), bound.workspace, self._panels)
                views = bound.views

                def float_step(step: Step) -> None:
                    CPU_RUNNERS[step.kind](step, [views[v] for v in step.inputs], views[step.output], ctx)

                bound.program = nhwc.Program(self.plan, self._analysis, bound.schedule.shapes, views,
                                             self._nhwc_kernel.code, self._panels, self.static_scales, float_step,
                                             self._input_limits)
        return bound

    def _run_program(self, program: Any, arrays: list[np.ndarray]) -> None:
        views = self._bind(tuple(a.shape for a in arrays)).views
        for v, a in zip(self.plan.inputs, arrays):
            np.copyto(views[v], a, casting="unsafe")
        with _single_threaded_blas(self._uses_blas):
            program.run()

    def profile(self, *, skip_first: bool = True) -> list[Any]:
        """Per-step times of the profiled calls with the most recent input shapes (`StepTime`
        rows, `tdsl.backends.numba.profile`); the first call (compilation) is left out."""
        from tdsl.backends.numba.profile import summarise

        if not self.profiling:
            raise TdslError("this deployment does not profile: deploy it with profile=True")
        if not self._timings:
            raise TdslError("no call has been profiled yet: call the model first")
        shapes, calls = list(self._timings.items())[-1]
        kept = calls[1:] if skip_first and len(calls) > 1 else calls
        path = self._nhwc_kernel.name if self.plan.act_quant == "int8-nhwc" else kernel_path(self.path)
        return summarise(self.plan, kept, shapes, path)

    def profile_table(self, top: int | None = None) -> str:
        """`profile()` as a text table (the `top` slowest steps, or all in plan order)."""
        from tdsl.backends.numba.profile import format_table

        return format_table(self.profile(), top)

    @property
    def compile_seconds(self) -> float:
        return self.plan.compile_seconds

    def schedule(self, *shapes: tuple[int, ...]) -> Schedule:
        """The schedule (shapes, buffers, peak memory) for inputs of these shapes."""
        return self.plan.schedule(tuple(tuple(int(d) for d in s) for s in shapes))

    def __call__(self, *inputs: Any) -> Any:
        plan = self.plan
        check_inputs(plan.signature, inputs, finite=self._input_limits is None)  # rank, shape, dtype, values
        if len(inputs) != len(plan.inputs):
            raise TdslError(f"@{plan.entry} takes {len(plan.inputs)} input(s), got {len(inputs)}")
        arrays = [_to_numpy(x) for x in inputs]
        first = plan.first_call_seconds is None
        start, compiled_before = time.perf_counter(), compile_stats.compile_seconds()
        if self.device == "cuda":
            from tdsl.backends.numba.gpu import run_cuda

            outs = run_cuda(self, arrays)
        else:
            try:
                outs = self._run_cpu(arrays)
            except nhwc.NonFiniteInput:  # found by the input quantiser: name the input and index
                check_inputs(plan.signature, inputs)
                raise TdslError("an input holds NaN or Inf; tdsl refuses non-finite inputs") from None
        if first:
            plan.first_call_seconds = time.perf_counter() - start
            plan.compile_seconds = compile_stats.compile_seconds() - compiled_before
        return self._pack_outputs(outs)

    def _run_cpu(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        # The whole call holds the lock: the bound arena is shared by every call of this input
        # shape, and the workqueue layer takes one parallel region at a time (runtime.threads).
        with RUNTIME_LOCK:
            plan = self.plan
            key = tuple(a.shape for a in arrays)
            bound = self._bind(key)
            views = bound.views
            with np.errstate(over="ignore"):  # a float64 beyond float32's range: the input check names it
                for v, a in zip(plan.inputs, arrays):
                    np.copyto(views[v], a, casting="unsafe")
            with _single_threaded_blas(self._uses_blas), _threads_for_this_call():
                if bound.program is not None:
                    times = [0.0] * bound.program.steps if self.profiling else None
                    bound.program.run(times)
                    if times is not None:
                        self._timings.setdefault(key, []).append(times)
                else:
                    ctx = _Ctx(plan.act_quant, kernel_path(self.path), bound.workspace, self._panels)
                    self._run_steps(key, views, ctx)
            return [np.array(views[v]) for v in plan.outputs]

    def _run_steps(self, key: tuple, views: list, ctx: _Ctx) -> None:
        times = []
        for step in self.plan.steps:
            if not step.is_view:
                start = time.perf_counter()
                CPU_RUNNERS[step.kind](step, [views[v] for v in step.inputs], views[step.output], ctx)
                times.append(time.perf_counter() - start)
        if self.profiling:
            self._timings.setdefault(key, []).append(times)

    def _pack_outputs(self, outs: list[np.ndarray]) -> Any:
        plan = self.plan
        if self._out_dtypes is None:  # once: printing the IR types took ~20 us a call
            self._out_dtypes = [_output_dtype(plan.value_types[v]) for v in plan.outputs]
        typed = [o.astype(dt, copy=False) for dt, o in zip(self._out_dtypes, outs)]
        if plan.output_names is not None:
            return dict(zip(plan.output_names, typed))
        return typed[0] if len(typed) == 1 else tuple(typed)


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, made once (it takes milliseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def _threads_for_this_call() -> Any:
    """Numba threads for one call: fewer when other processes hold cores now (runtime.threads)."""
    import numba

    configured = numba.get_num_threads()
    n = threads_for_call(configured)
    if n == configured:
        yield
        return
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(configured)


@contextlib.contextmanager
def _one_blas_thread() -> Any:
    libs = _blas_controller().select(user_api="blas").lib_controllers
    before = [lib.num_threads for lib in libs]
    for lib, n in zip(libs, before):
        if n != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, before):
            if n != 1:
                lib.set_num_threads(n)


def _single_threaded_blas(active: bool) -> Any:
    """A context in which numpy's BLAS uses one thread (a no-op when `active` is false): each
    library's own setter, ~5 us a call where threadpoolctl's `limit` takes ~20 us."""
    return _one_blas_thread() if active else contextlib.nullcontext()


def _output_dtype(ty: Any) -> np.dtype:
    """The IR's element type for a returned value (f16 outputs come back as float16)."""
    element = str(ty.get_element_type()) if hasattr(ty, "get_element_type") else "f32"
    return np.dtype(np.float16) if element == "f16" else dtype_of(ty)


# --------------------------------------------------------------------------- entry points


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise TdslError(f"unknown device {device!r}: valid are " + ", ".join(f"'{d}'" for d in DEVICES))


NHWC_PATHS: tuple[str, ...] = ("avx-vnni", "avx512-vnni", "amx")
"""`path=` values that name an NHWC micro-kernel with no kernel path of its own elsewhere: the
NHWC convs run on it, every other step on the auto path."""


def microkernel_for(path: str | None) -> Any:
    """The NHWC micro-kernel (`tdsl.runtime.microkernels` row) for a kernel path argument: the
    row of a forced path ("portable", "avx2", "vnni": avx512-vnni, or a row name of NHWC_PATHS),
    else the fastest available."""
    from tdsl.runtime import microkernels

    if path in NHWC_PATHS:
        return microkernels.select(path)
    chosen = kernel_path(path)  # an unavailable forced path fails here
    if requested_path(path) == "auto":
        return microkernels.select()  # the fastest row (AVX-VNNI on a CPU with it and no AVX-512)
    return microkernels.select({"vnni": "avx512-vnni"}.get(chosen, chosen))


def deploy_module(module: Any, arrays: Mapping[str, Any], *, device: str = "cpu", act_quant: str = "int8",
                  path: str | None = None, profile: bool = False, calibrate: Any = None) -> DeployedModel:
    """Deploy a kernel-level module (`tdsl.lowering.kernel_level`) with weights keyed by frozen
    state-dict names (numpy arrays, or torch tensors when torch is already imported)."""
    _check_device(device)
    plan = build_plan(module, {k: _to_numpy(v) for k, v in arrays.items()}, act_quant=act_quant)
    if path in NHWC_PATHS:
        if act_quant != "int8-nhwc":
            raise TdslError(f"path {path!r} is a micro-kernel of the NHWC int8 runtime: deploy with "
                            "act_quant='int8-nhwc'")
        microkernel_for(path)  # unavailable here: a TdslError naming what the CPU lacks
    elif path is not None:
        kernel_path(path)  # an unknown or unavailable path fails here, not at the first call
    if device == "cuda":
        from numba import cuda

        from tdsl.backends.numba.gpu import check_cuda_plan

        if profile:
            raise TdslError("profile=True times the CPU runtime; deploy with device='cpu' to profile")
        check_cuda_plan(plan)
        if not cuda.is_available():
            raise TdslError("device='cuda' was asked for, but Numba finds no usable CUDA GPU and driver here "
                            "(NUMBA_ENABLE_CUDASIM=1 runs the simulator); deploy with device='cpu'")
    model = DeployedModel(plan, device, path, profile)
    if calibrate is not None:
        model.calibrate(calibrate)
    return model
