"""Where a deployed model's time goes: per-step wall times, shown as a table a user can act on.

`deploy(..., profile=True)` times every step of every call (`time.perf_counter` around the
runner; the kernels run to completion before they return, so no synchronisation is missing);
`DeployedModel.profile()` summarises the calls so far: per step the op, input and output
shapes, weight precision, kernel path, median ms, share of the total, and the rate it reached
(GOPS for conv/linear/matmul, GB/s of activations in and out for the rest). The kernel path
says which code ran: "vnni", "avx2" or "portable" (the packed ternary kernels, with "/int8" or
"/float" activations), "float" (an fp32 weight, or an fp16 one kept in precision:
"fp16-kept"), "int8-kept" (a kept int8 weight), "numba" (pools, activations) or "numpy"
(softmax, binary ops, an unfused batch norm, matmul, composite references).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tdsl.backends.numba.nhwc import is_int8_conv, takes_amx
from tdsl.backends.numba.plan import Kernel, Plan, Step
from tdsl.runtime import microkernels as mk

_OWN_DRIVERS = ("amx",)
"""NHWC micro-kernels with their own conv driver: the convs it does not take run on the k2x32 row."""

_TERNARY = (Kernel.CONV2D_TERNARY, Kernel.LINEAR_TERNARY)
_NUMBA = (Kernel.MAX_POOL2D, Kernel.AVG_POOL2D, Kernel.ADAPTIVE_AVG_POOL2D, Kernel.ACTIVATION)


@dataclass(frozen=True)
class StepTime:
    """One step's summary over the profiled calls."""

    index: int
    kernel: str
    op: str
    location: str
    inputs: tuple[tuple[int, ...], ...]
    output: tuple[int, ...]
    precision: str
    path: str
    ms: float
    share: float
    rate: float
    rate_unit: str


def precision_of(step: Step) -> str:
    """The weight precision of a step ("-" for a step without weights)."""
    prec = getattr(step.op, "precision", None)
    if prec is not None:
        return prec.data
    return "ternary" if step.kind in _TERNARY else "-"


def path_of(step: Step, cpu_path: str, act_quant: str) -> str:
    """Which code runs the step (see the module docstring)."""
    if step.kind in _TERNARY:
        depthwise = step.kind is Kernel.CONV2D_TERNARY and step.attrs["groups"] > 1 \
            and step.attrs["groups"] == step.attrs["out_channels"]
        if act_quant == "int8-nhwc" and step.kind is Kernel.CONV2D_TERNARY:
            if cpu_path in _OWN_DRIVERS and not depthwise and not takes_amx(step):
                cpu_path = mk.k2x32_row().name  # the stem: on the k2x32 kernel of the same CPU
            return f"{'depthwise' if depthwise else cpu_path}/nhwc-u8"
        if act_quant == "int8-nhwc":
            act_quant = "int8"
        return "depthwise/float" if depthwise else f"{cpu_path}/{act_quant}"
    if act_quant == "int8-nhwc" and step.kind in (Kernel.MAX_POOL2D, Kernel.ADAPTIVE_AVG_POOL2D):
        return "numba/nhwc-u8"
    if act_quant == "int8-nhwc" and step.kind in (Kernel.CONV2D_FLOAT, Kernel.CONV2D_INT8):
        if is_int8_conv(step):  # int16 weights on u8 activations
            row = mk.k2x32_row() if cpu_path in _OWN_DRIVERS else mk.by_name(cpu_path)
            return f"{mk.int16_row(row).name}/nhwc-u8"
    if step.kind in (Kernel.CONV2D_INT8, Kernel.LINEAR_INT8):
        return "int8-kept"
    if step.kind in (Kernel.CONV2D_FLOAT, Kernel.LINEAR_FLOAT):
        return "fp16-kept" if precision_of(step) == "fp16" else "float"
    return "numba" if step.kind in _NUMBA else "numpy"


def flops_of(step: Step, x: tuple[int, ...], out: tuple[int, ...]) -> int:
    """Multiply-adds x 2 of a conv/linear/matmul step (0 for the others); `x` is the shape of
    the op's first operand (its input, or a matmul's lhs), a weight or not."""
    if step.kind in (Kernel.CONV2D_TERNARY, Kernel.CONV2D_FLOAT, Kernel.CONV2D_INT8):
        (kh, kw), g = step.attrs["kernel"], step.attrs["groups"]
        return 2 * math.prod(out) * (x[1] // g) * kh * kw
    if step.kind in (Kernel.LINEAR_TERNARY, Kernel.LINEAR_FLOAT, Kernel.LINEAR_INT8, Kernel.MATMUL):
        return 2 * math.prod(out) * x[-1]
    return 0


def summarise(plan: Plan, calls: list[list[float]], input_shapes: tuple[tuple[int, ...], ...],
              cpu_path: str) -> list[StepTime]:
    """Per-step medians over `calls` (seconds per step, in plan order, views excluded)."""
    schedule = plan.schedule(input_shapes)
    steps = [s for s in plan.steps if not s.is_view]
    medians = np.median(np.asarray(calls), axis=0) if calls else np.zeros(len(steps))
    total = float(medians.sum()) or 1.0
    rows = []
    for i, (step, seconds) in enumerate(zip(steps, medians)):
        ins = tuple(schedule.shapes[v] for v in step.inputs)
        out = schedule.shapes[step.output]
        flops = flops_of(step, schedule.shapes[next(iter(step.operands.values()))], out)
        if flops:
            rate, unit = flops / seconds / 1e9 if seconds > 0 else 0.0, "GOPS"
        else:
            nbytes = 4 * (sum(math.prod(s) for s in ins) + math.prod(out))
            rate, unit = nbytes / seconds / 1e9 if seconds > 0 else 0.0, "GB/s"
        rows.append(StepTime(i, str(step.kind), step.op_name, str(step.loc) if step.loc else "", ins, out,
                             precision_of(step), path_of(step, cpu_path, plan.act_quant), 1e3 * float(seconds),
                             float(seconds) / total, rate, unit))
    return rows


def format_table(rows: list[StepTime], top: int | None = None) -> str:
    """The rows as an aligned text table, slowest first when `top` is given, with a total line."""
    shown = sorted(rows, key=lambda r: -r.ms)[:top] if top else rows
    head = f"{'#':>3} {'op':<18} {'kernel':<15} {'in -> out':<34} {'prec':<8} {'path':<17} " \
           f"{'ms':>8} {'%':>6} {'rate':>11}"
    lines = [head, "-" * len(head)]
    for r in shown:
        shapes = f"{'x'.join(map(str, r.inputs[0])) if r.inputs else ''} -> {'x'.join(map(str, r.output))}"
        lines.append(f"{r.index:>3} {r.op:<18} {r.kernel:<15} {shapes:<34} {r.precision:<8} {r.path:<17} "
                     f"{r.ms:>8.3f} {100 * r.share:>5.1f}% {r.rate:>6.1f} {r.rate_unit}")
    total = sum(r.ms for r in rows)
    per_step = 1e3 * total / len(rows) if rows else 0.0  # at a tiny input size: the per-step overhead
    lines.append(f"total {total:.3f} ms over {len(rows)} steps, {per_step:.1f} us a step"
                 + (f" (the {top} slowest shown)" if top else ""))
    return "\n".join(lines)
