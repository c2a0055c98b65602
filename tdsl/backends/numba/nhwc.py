"""The NHWC int8 execution of a plan (`act_quant="int8-nhwc"`): activations stay u8 NHWC
between the layers that can take them, quantised once where they enter and dequantised
where a float step reads them (`tdsl.runtime.nhwc_int8` has the numerics).

`analyse(plan)` decides, step by step, which steps run on u8 NHWC (ternary convs, depthwise
included; max pooling and additions of u8 values; global average pooling out of them) and
which values need a u8 copy (a float value an int8 step reads) or a float copy (a u8 value a
float step, a view or the caller reads). `Program` binds that to one input shape: the u8
buffers, the indirection buffers of the convs, and one prepared call per action, so a call
runs a flat list of compiled kernels with their arguments already resolved.

Scales are dynamic (per layer and per call: the producer's float range) until
`Program.calibrate` records the ranges of calibration batches; then they are static and
every int8 producer writes u8 directly.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from tdsl.backends.numba.plan import Kernel, Plan, Step
from tdsl.dialects import tdsl as t
from tdsl.runtime import amx, amx_conv
from tdsl.runtime import microkernels as mk
from tdsl.runtime import nhwc_int8 as q8
from tdsl.runtime.packing import unpack

GATHER_MAX_CHANNELS = 8
"""Convs whose input rows are at most this many bytes (the 3-channel stem) gather each pixel's
taps into one row per task (`nhwc_int8.gather_pixel`): a 4-byte tap is too short a run for the
indirect kernel."""
_NO_OFFS = np.zeros(0, np.int64)
_EMPTY_U8 = np.zeros(0, np.uint8)


def compiled_entry(dispatcher: Any, args: tuple) -> Callable[..., Any]:
    """The compiled overload of `dispatcher` for exactly these arguments' types, called without
    Numba's dispatch (typing ~24 arguments costs ~6 us a call, ~3.5 us more than the call);
    the dispatcher itself where no such overload exists. Only for arguments whose types never
    change (a step's cached tuple: the same buffers, the same scalar types)."""
    try:
        overload = dispatcher.overloads.get(tuple(numba.typeof(a) for a in args))
    except (ValueError, TypeError):
        return dispatcher
    return dispatcher if overload is None else overload.entry_point


class _Lazy:
    """A float32 buffer made on first use: a calibrated plan never needs its producers' float
    outputs (ResNet-18 at B=8: ~90 MB it would otherwise hold)."""

    def __init__(self, shape: tuple[int, int]):
        self.shape, self.array = shape, None

    def get(self) -> np.ndarray:
        if self.array is None:
            self.array = np.empty(self.shape, np.float32)
        return self.array
_NO_FLOAT = np.zeros((0, 0), np.float32)


@dataclass
class Analysis:
    """Which steps run on u8 NHWC and which values need which copies."""

    int8_steps: set[int] = field(default_factory=set)
    """Indices of steps that read and write u8 NHWC."""
    resident: set[int] = field(default_factory=set)
    """Values produced in u8 NHWC."""
    needs_u8: set[int] = field(default_factory=set)
    """Float values an int8 step reads: quantised where they are produced."""
    needs_float: set[int] = field(default_factory=set)
    """u8 values a float step, a view or an output reads: dequantised where they are produced."""


KEPT_MIN_LEVELS = {Kernel.CONV2D_FLOAT: 1023, Kernel.CONV2D_INT8: 127}
"""A conv the precision policy kept at fp16 / fp32 (or int8) runs on u8 activations with int16
weights per output channel (`microkernels.int16_weights`, the "-w16" micro-kernels) when its
sum is short enough for at least this many levels a side (float: 11 bits, finer than float16
near each channel's largest weight; int8: its own values, exactly); longer sums stay float."""


def is_int8_conv(step: Step) -> bool:
    """A conv the NHWC kernels run: ternary (ungrouped or depthwise), or an ungrouped kept conv
    (`KEPT_MIN_LEVELS`)."""
    if step.kind is not Kernel.CONV2D_TERNARY and step.kind not in KEPT_MIN_LEVELS:
        return False
    g, dims = step.attrs["groups"], step.op.weight_dims()
    if step.kind is Kernel.CONV2D_TERNARY:
        return g == 1 or (g == dims[0] and dims[1] == 1)
    k = dims[2] * dims[3] * mk.padded_channels(dims[1])
    return g == 1 and mk.int16_levels(mk.padded_channels(k)) >= KEPT_MIN_LEVELS[step.kind]


def analyse(plan: Plan) -> Analysis:
    """The int8 region of `plan` (module docstring)."""
    an = Analysis()
    for k, step in enumerate(plan.steps):
        ins = step.inputs
        if is_int8_conv(step):
            an.int8_steps.add(k)
            an.resident.add(step.output)
        elif step.kind is Kernel.MAX_POOL2D and ins[0] in an.resident:
            an.int8_steps.add(k)
            an.resident.add(step.output)
        elif (step.kind is Kernel.ADAPTIVE_AVG_POOL2D and ins[0] in an.resident
              and step.attrs["output_size"] == (1, 1)):
            an.int8_steps.add(k)
        elif (step.kind is Kernel.BINARY and isinstance(step.op, t.AddOp) and len(ins) == 2
              and all(v in an.resident for v in ins)):
            an.int8_steps.add(k)
            an.resident.add(step.output)
    for k, step in enumerate(plan.steps):
        if k in an.int8_steps:
            reads_u8 = step.inputs if step.kind is not Kernel.ADAPTIVE_AVG_POOL2D else step.inputs[:1]
            an.needs_u8.update(v for v in reads_u8 if v not in an.resident)
        else:
            an.needs_float.update(v for v in step.inputs if v in an.resident)
    an.needs_float.update(v for v in plan.outputs if v in an.resident)
    return an


def takes_amx(step: Step) -> bool:
    """Whether a program on the AMX micro-kernel runs this conv on it: a ternary conv that is not
    depthwise and not a stem of few input channels (gathered per task or read by kernel rows
    on the k2x32 kernels: `GATHER_MAX_CHANNELS`)."""
    a = step.attrs
    if step.kind is not Kernel.CONV2D_TERNARY or a["groups"] > 1:
        return False
    few = mk.padded_channels(step.op.weight_dims()[1]) <= GATHER_MAX_CHANNELS
    return not (few and a["kernel"][0] * a["kernel"][1] > 1)


def padded_stems(plan: Plan, an: Analysis) -> dict[int, tuple[int, int]]:
    """{value: (ph, pw)} for the float values quantised for one conv alone that has few input
    channels (the stem: `GATHER_MAX_CHANNELS`), a kernel wider than 1 and no dilation along
    the width: quantised as the image padded by that conv's padding, the conv reads each kernel
    row as one run (`nhwc_int8.row_indirection`) instead of gathering its taps per pixel."""
    readers: dict[int, list[Step]] = {}
    for step in plan.steps:
        for v in step.inputs:
            readers.setdefault(v, []).append(step)
    padded = {}
    for k, step in enumerate(plan.steps):
        if k not in an.int8_steps or step.kind not in (Kernel.CONV2D_TERNARY, *KEPT_MIN_LEVELS):
            continue
        v, a = step.inputs[0], step.attrs
        kw, dw = a["kernel"][1], a["dilation"][1]
        few = mk.padded_channels(step.op.weight_dims()[1]) <= GATHER_MAX_CHANNELS
        if (v in an.needs_u8 and v not in an.resident and len(readers.get(v, [])) == 1 and a["groups"] == 1
                and few and kw > 1 and dw == 1):
            padded[v] = a["padding"]
    return padded


@dataclass
class _Value:
    """A u8 NHWC activation: its buffer, logical NCHW shape and quantisation."""

    buf: np.ndarray
    shape: tuple[int, int, int, int]
    scale: float = 1.0
    zp: int = 0
    lo: float = np.inf
    """The float range seen while calibrating."""
    hi: float = -np.inf


class NonFiniteInput(Exception):
    """A program input held NaN, Inf or a value beyond its type (found while quantising it):
    the caller re-checks the user's inputs to raise the `InputMismatch` that names it."""

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value


def checks_inputs(plan: Plan, an: Analysis) -> dict[int, float] | None:
    """{input: limit} when every input of `plan` is a float the program quantises (so its
    quantiser can check each value as it reads it), else None (the caller checks them)."""
    from tdsl.signature import finite_limit

    sig = plan.signature
    if sig is None or len(sig.inputs) != len(plan.inputs):
        return None
    limits = {v: finite_limit(spec) for v, spec in zip(plan.inputs, sig.inputs)}
    if any(limit is None or v not in an.needs_u8 for v, limit in limits.items()):
        return None
    return limits


class Program:
    """One input shape's NHWC int8 execution: a flat list of prepared kernel calls."""

    def __init__(self, plan: Plan, an: Analysis, shapes: list, views: list, kind: int,
                 panels: dict[int, Any], static: dict[int, tuple[float, int]] | None,
                 float_step: Callable[[Step], None], input_limits: dict[int, float] | None = None):
        self.plan = plan
        self.an = an
        row = next(r for r in mk.TABLE if r.code == kind)
        self.amx = row.panel == "vnni4x16"
        """AMX: ternary convs with an indirection run on `amx_conv.conv`, the rest on `kind`."""
        conv_row = mk.k2x32_row() if self.amx else row
        self.kind = conv_row.code
        """The micro-kernel of `nhwc_int8.conv`'s ternary convs (k2x32 or k4x32 panels)."""
        self.panels = mk.panels_of(self.kind)
        self.kind16 = mk.int16_row(conv_row).code
        """The micro-kernel of kept convs (int16 weights): the same ISA as `kind`'s where it has one."""
        self.static = static
        self.input_limits = {} if input_limits is None else input_limits
        """{plan input: the largest magnitude it may hold}: the inputs this program checks for
        NaN and Inf as it quantises them (`checks_inputs`), raising `NonFiniteInput`."""
        self.calibrating = False
        self._lazy: list[_Lazy] = []
        self._generation = 0
        self.workers = 1
        self.values: dict[int, _Value] = {}
        self.padded = padded_stems(plan, an)
        """Quantised inputs of a stem, kept as images padded by the stem's padding: {value: (ph, pw)}."""
        for v in an.resident | an.needs_u8:
            n, c, h, w = shapes[v]
            ph, pw = self.padded.get(v, (0, 0))
            size = q8.buffer_size(n, h + 2 * ph, w + 2 * pw, c)
            self.values[v] = _Value(np.empty(size, np.uint8), (n, c, h, w))
        self.actions: list[tuple[int, Callable[[], None]]] = []
        """(index of the step among the plan's non-view steps, call): quantising an input counts
        with the first step, a copy of a value with the step that produced it."""
        for v in plan.inputs:
            if v in an.needs_u8:
                self.actions.append((0, self._quantizer(v, views[v])))
        index = -1
        for k, step in enumerate(plan.steps):
            if step.is_view:
                continue
            index += 1
            if k in an.int8_steps:
                self.actions.append((index, self._int8_action(step, shapes, views, panels)))
            else:
                self.actions.append((index, (lambda s=step: float_step(s))))
            if step.output in an.needs_u8:
                self.actions.append((index, self._quantizer(step.output, views[step.output])))
            if step.output in an.needs_float:
                self.actions.append((index, self._dequantizer(step.output, views[step.output])))
        self.steps = index + 1

    # -- scales

    def _out_qparams(self, v: int) -> tuple[float, int] | None:
        """The static (scale, zp) of value v, or None while scales are dynamic."""
        if self.static is None or self.calibrating:
            return None
        return self.static[v]

    def _record(self, v: int, lo: float, hi: float) -> None:
        val = self.values[v]
        val.scale, val.zp = q8.qparams(lo, hi)
        if self.calibrating:
            val.lo, val.hi = min(val.lo, lo), max(val.hi, hi)

    def ranges(self) -> dict[int, tuple[float, float]]:
        return {v: (val.lo, val.hi) for v, val in self.values.items() if val.lo <= val.hi}

    # -- actions

    def _quantizer(self, v: int, x: np.ndarray) -> Callable[[], None]:
        val = self.values[v]
        limit = self.input_limits.get(v)

        def run() -> None:
            qp = self._out_qparams(v)
            if qp is None:
                lo, hi = q8.minmax(x)
                self._record(v, float(lo), float(hi))
            else:
                val.scale, val.zp = qp
            if limit is None:
                q8.quantize_nchw_padded(x, val.scale, val.zp, val.buf, *pads)
            elif q8.quantize_input(x, val.scale, val.zp, val.buf, *pads, limit):
                raise NonFiniteInput(v)

        pads = self.padded.get(v, (0, 0))
        return run

    def _dequantizer(self, v: int, y: np.ndarray) -> Callable[[], None]:
        val = self.values[v]
        return lambda: q8.dequantize_nchw(val.buf, val.scale, val.zp, y)

    def _float_buffer(self, shape: tuple[int, int]) -> _Lazy:
        buf = _Lazy(shape)
        self._lazy.append(buf)
        return buf

    def _finish(self, v: int, yf: np.ndarray, lohi: np.ndarray, O: int) -> None:
        """Dynamic scales: the producer wrote float32 [P, O]; quantise it by its range."""
        lo, hi = float(lohi[:, 0].min()), float(lohi[:, 1].max())
        self._record(v, lo, hi)
        val = self.values[v]
        q8.quantize_rows(yf, O, val.scale, val.zp, val.buf)

    def _int8_action(self, step: Step, shapes: list, views: list, panels: dict[int, Any]) -> Callable[[], None]:
        if step.kind in (Kernel.CONV2D_TERNARY, *KEPT_MIN_LEVELS):
            return self._conv_action(step, shapes, panels)
        if step.kind is Kernel.MAX_POOL2D:
            return self._max_pool_action(step, shapes)
        if step.kind is Kernel.ADAPTIVE_AVG_POOL2D:
            x = self.values[step.inputs[0]]
            y = views[step.output]
            n, c, h, w = x.shape
            return lambda: q8.global_avg_pool(x.buf, n, h * w, c, x.scale, x.zp, y)
        return self._add_action(step, shapes)

    def _conv_action(self, step: Step, shapes: list, panels: dict[int, Any]) -> Callable[[], None]:
        a, wts = step.attrs, step.weights
        x, out = self.values[step.inputs[0]], self.values[step.output]
        res = self.values[step.inputs[1]] if a["residual"] else None
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["padding"], a["dilation"]
        N, C, H, W = x.shape
        _, O, Ho, Wo = out.shape
        cp = mk.padded_channels(C)
        P = N * Ho * Wo
        depthwise = a["groups"] > 1
        ntaps = kh * kw
        by_rows = step.inputs[0] in self.padded  # kernel rows read as runs from the padded image
        gather = not by_rows and not depthwise and ntaps > 1 and cp <= GATHER_MAX_CHANNELS
        on_amx = self.amx and takes_amx(step)
        kp = amx_conv.k_bytes(ntaps, cp) if on_amx else mk.padded_channels(ntaps * cp)
        # a gathering conv finds its rows by arithmetic (geom); the others read an indirection
        if by_rows:
            offs = q8.row_indirection(N, H + 2 * ph, W + 2 * pw, cp, kh, sh, sw, dh, Ho, Wo)
        else:
            offs = _NO_OFFS if gather else q8.indirection(N, H, W, cp, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo)
        geom = np.array([N, H, W, cp, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo] if gather else [0] * 14, np.int64)
        prepared = panels.get(id(step))
        if prepared is None:
            if step.kind is Kernel.CONV2D_TERNARY:
                ints = unpack(wts["packed"], (O, C // a["groups"], kh, kw)).astype(np.int8)
                s = wts["scale"]
            elif step.kind is Kernel.CONV2D_INT8:  # int8 values, exactly
                ints, s = wts["weight"].astype(np.int16), wts["scale"]
            else:  # a float weight (bn folded): integers per output channel
                ints, s = mk.int16_weights(wts["weight"], kp if gather else ntaps * cp)
            wsum = ints.reshape(O, -1).sum(axis=1).astype(np.int32)
            build = self.panels if step.kind is Kernel.CONV2D_TERNARY else mk.panels_of(self.kind16)
            if on_amx:
                w = amx_conv.panels(ints, cp)
            elif depthwise:
                w = np.ascontiguousarray(ints.reshape(O, ntaps).T)
            elif by_rows:  # kh taps of kw*cp channels in (column, channel) order: one kernel row's run
                rows = np.zeros((O, kh, kw, cp), ints.dtype)
                rows[..., :C] = ints.transpose(0, 2, 3, 1)
                w = build(np.ascontiguousarray(rows.reshape(O, kh, kw * cp, 1).transpose(0, 2, 1, 3)))
                w = w.reshape(-1)
            elif gather:  # one tap of kp channels in (tap, channel) order: the gathered row's
                rows = np.zeros((O, kh, kw, cp), ints.dtype)
                rows[..., :C] = ints.transpose(0, 2, 3, 1)
                full = np.zeros((O, kp, 1, 1), ints.dtype)
                full[:, :ntaps * cp, 0, 0] = rows.reshape(O, -1)
                w = build(full).reshape(-1)
            else:
                w = build(ints).reshape(-1)
            prepared = panels[id(step)] = (w, wsum, np.asarray(s, np.float32))
        w, wsum, s = prepared
        kind = self.kind if step.kind is Kernel.CONV2D_TERNARY else self.kind16
        bias, act = wts["bias"], a["activation"]
        nblocks = -(-O // mk.NR)
        tasks = N * Ho if depthwise else amx_conv.max_tasks(P, O) if on_amx else q8.conv_tasks(P, nblocks)
        lohi = np.empty((tasks, 2), np.float32)
        yf = self._float_buffer((P, O))  # float32 outputs: only while scales are dynamic (calibration, uncalibrated)
        v = step.output
        amx_cfg = amx.tile_config()

        calls: dict[tuple, list] = {}
        """(scales and zero points, generation, workers) -> [arguments, the float outputs they write,
        the kernel compiled for them]: made once per set of static scales and thread count."""
        small = P * O * ntaps * (1 if depthwise else C) < (q8.SERIAL_MACS_DEPTHWISE if depthwise else q8.SERIAL_MACS)
        parallel, serial = ((q8.depthwise_prepared, q8.depthwise_prepared_serial) if depthwise
                            else (amx_conv.conv, amx_conv.conv) if on_amx
                            else (q8.conv_prepared, q8.conv_prepared_serial))

        def arguments(qp: tuple[float, int] | None, workers: int) -> tuple[tuple, np.ndarray]:
            se = (np.float32(x.scale) * s).astype(np.float32)
            rbuf, rs, rzp = (res.buf, np.float32(res.scale), res.zp) if res is not None else (_EMPTY_U8, np.float32(0), 0)
            if qp is None:
                dst, inv, zpy, f = _EMPTY_U8, 1.0, 0, yf.get()
            else:
                dst, inv, zpy, f = out.buf, 1.0 / qp[0], qp[1], _NO_FLOAT
            if on_amx:  # the AMX block's address, then `amx_conv.conv`'s arguments (it makes its own terms)
                return (amx_conv.block_address(), amx_cfg, x.buf, offs, ntaps, cp, kp, w, P, O, wsum, x.zp, se, bias,
                        rbuf, rs, rzp, act, dst, inv, zpy, f, lohi, workers), f
            m, c, rsi, qlo, qhi = q8.epilogue_terms(wsum, x.zp, se, bias, inv, zpy, act, rbuf, rs, rzp)
            terms = (m, c, np.float32(rsi), np.float32(qlo), np.float32(qhi))
            if depthwise:
                return (x.buf, offs, kh * kw, C, Wo, w, wsum, x.zp, se, bias, rbuf, rs, rzp, act, dst, inv, zpy, f,
                        lohi) + terms, f
            # gathering: one tap of kp bytes a pixel
            taps, pairs = (1, kp // 2) if gather else (kh, kw * cp // 2) if by_rows else (ntaps, cp // 2)
            return (kind, x.buf, offs, taps, pairs, w, nblocks, P, O, wsum, x.zp, se, bias, rbuf, rs, rzp, act, dst,
                    inv, zpy, f, lohi, workers, geom) + terms, f

        def run() -> None:
            qp = self._out_qparams(v)
            if qp is not None:
                out.scale, out.zp = qp
            workers = self.workers
            scales = (x.scale, x.zp, qp, None if res is None else (res.scale, res.zp), self._generation)
            call = calls.get(scales + (workers,))
            if call is None:  # static scales: made once per thread count, then every call reuses them
                if calls and next(iter(calls))[:-1] != scales:
                    calls.clear()  # new scales (dynamic, or calibrated since)
                call = calls[scales + (workers,)] = [*arguments(qp, workers), None]
            args, f, compiled = call
            kernel = serial if workers == 1 or small else parallel
            (compiled or kernel)(*args)
            if compiled is None:  # compiled now: call it directly next time
                call[2] = compiled_entry(kernel, args)
            if qp is None:
                self._finish(v, f, lohi, O)  # the float outputs the kernel wrote

        return run

    def _max_pool_action(self, step: Step, shapes: list) -> Callable[[], None]:
        a = step.attrs
        x, out = self.values[step.inputs[0]], self.values[step.output]
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
        N, C, H, W = x.shape
        Ho, Wo = out.shape[2:]

        def run() -> None:
            out.scale, out.zp = x.scale, x.zp
            if self.calibrating:
                out.lo, out.hi = x.lo, x.hi
            q8.max_pool(x.buf, N, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, x.zp, out.buf)

        return run

    def _add_action(self, step: Step, shapes: list) -> Callable[[], None]:
        a, b, out = (self.values[v] for v in (*step.inputs, step.output))
        N, C, H, W = out.shape
        P = N * H * W
        lohi = np.empty((P, 2), np.float32)
        yf = self._float_buffer((P, C))
        v = step.output

        def run() -> None:
            qp = self._out_qparams(v)
            if qp is None:
                q8.add(a.buf, np.float32(a.scale), a.zp, b.buf, np.float32(b.scale), b.zp, 0, C, _EMPTY_U8, 1.0, 0,
                       yf.get(), lohi)
                self._finish(v, yf.get(), lohi, C)
            else:
                out.scale, out.zp = qp
                q8.add(a.buf, np.float32(a.scale), a.zp, b.buf, np.float32(b.scale), b.zp, 0, C, out.buf,
                       1.0 / qp[0], qp[1], _NO_FLOAT, lohi)

        return run

    def run(self, times: list[float] | None = None) -> None:
        """One call; with `times` (zeros, one per non-view step) each action's seconds are added
        to its step's."""
        self.workers = numba.get_num_threads()  # read once: ~3 us a read, 54 steps in MobileNetV2
        if times is None:
            for _, action in self.actions:
                action()
            return
        for index, action in self.actions:
            start = time.perf_counter()
            action()
            times[index] += time.perf_counter() - start

    def calibrate(self, batches: list[Callable[[], None]]) -> None:
        """Run `batches` (each a call that fills the plan's inputs and runs `run`) with dynamic
        scales, recording every u8 value's range (`ranges`); the deployment merges the ranges of
        its programs into static scales (`DeployedModel.calibrate`)."""
        self.calibrating = True
        for val in self.values.values():
            val.lo, val.hi = np.inf, -np.inf
        try:
            for batch in batches:
                batch()
        finally:
            self.calibrating = False
            for buf in self._lazy:  # calibrated scales make them unused; dynamic ones remake them
                buf.array = None
            self._generation += 1  # and the kernel arguments that held them are made anew
