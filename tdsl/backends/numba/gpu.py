"""Run a `Plan` on a GPU with `numba.cuda`: the same steps, device arrays between them.

Each step kind has a runner here that launches runtime kernels: packed ternary steps call the
device entry points (`cuda_conv2d.ternary_conv2d_device`, `cuda_gemm.ternary_linear_device`),
the other kinds the one-thread-per-output-element kernels of `tdsl.runtime.cuda_steps`.
Weights are copied to the device once per deployed model; inputs are copied in and outputs
out, nothing else crosses the bus. A value's device array is dropped after its last reader,
so the allocator can reuse its memory (the liveness of `Plan.schedule`, without an arena).
Kernels without a runner here (`UNSUPPORTED`: kept-precision int8, softmax, matmul, the
batch-norm affine, broadcasting binary ops) are refused when the model is deployed, never run
on the host behind the caller's back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import cuda

from tdsl.backends.numba.plan import Kernel, Plan, Step
from tdsl.ops.elementwise import BINARY
from tdsl.runtime.cuda_conv2d import ternary_conv2d_device
from tdsl.runtime.cuda_gemm import ternary_linear_device
from tdsl.runtime.cuda_steps import (ACTIVATION_FN, TPB, adaptive_avg_kernel, blocks, conv_direct_kernel,
                                     elementwise_kernel, linear_kernel, pool_kernel)

if TYPE_CHECKING:
    from tdsl.backends.numba.executor import DeployedModel


def _none4() -> Any:
    return cuda.device_array((1, 1, 1, 1), np.float32)


def _conv_ternary(step: Step, ins: list, out_shape: tuple, w: dict, act_quant: str) -> Any:
    a = step.attrs
    res = ins[1] if a["residual"] else None
    return ternary_conv2d_device(ins[0], w["packed"], a["kernel"], a["stride"], a["padding"], a["dilation"],
                                 a["groups"], w["scale"], w["bias"], res, a["activation"],
                                 act_quant)


def _conv_float(step: Step, ins: list, out_shape: tuple, w: dict, act_quant: str) -> Any:
    a = step.attrs
    y = cuda.device_array(out_shape, np.float32)
    res = ins[1] if a["residual"] else _none4()
    conv_direct_kernel[blocks(y.size), TPB](ins[0], w["weight"], *a["stride"], *a["padding"], *a["dilation"],
                                            a["groups"], w["bias"], res, a["residual"],
                                            a["activation"], y)
    return y


def _rows(x: Any) -> Any:
    last = x.shape[len(x.shape) - 1]  # the simulator's shapes take no negative index
    return x.reshape(x.size // last, last)


def _linear_ternary(step: Step, ins: list, out_shape: tuple, w: dict, act_quant: str) -> Any:
    a = step.attrs
    res = _rows(ins[1]) if a["residual"] else None
    y = ternary_linear_device(_rows(ins[0]), w["packed"], w["scale"], w["bias"], res,
                              a["activation"], act_quant)
    return y.reshape(*out_shape)


def _linear_float(step: Step, ins: list, out_shape: tuple, w: dict, act_quant: str) -> Any:
    a = step.attrs
    x = _rows(ins[0])
    y = cuda.device_array((x.shape[0], out_shape[len(out_shape) - 1]), np.float32)
    res = _rows(ins[1]) if a["residual"] else cuda.device_array((1, 1), np.float32)
    linear_kernel[blocks(y.size), TPB](x, w["weight_t"], w["bias"], res, a["residual"],
                                       a["activation"], y)
    return y.reshape(*out_shape)


def _pool(step: Step, ins: list, out_shape: tuple, w: dict, act_quant: str) -> Any:
    y = cuda.device_array(out_shape, np.float32)
    a = step.attrs
    pool_kernel[blocks(y.size), TPB](ins[0], *a["kernel"], *a["stride"], *a["padding"],
                                     step.kind is Kernel.MAX_POOL2D, y)
    return y


def _adaptive_avg_pool2d(step: Step, ins: list, out_shape: tuple, w: dict, act_quant: str) -> Any:
    y = cuda.device_array(out_shape, np.float32)
    adaptive_avg_kernel[blocks(y.size), TPB](ins[0], y)
    return y


def _elementwise(step: Step, ins: list, out_shape: tuple, w: dict, act_quant: str) -> Any:
    y = cuda.device_array(out_shape, np.float32)
    flat = ins[0].reshape(ins[0].size)
    if step.kind is Kernel.ACTIVATION:
        fn, act, other = ACTIVATION_FN, step.attrs["activation"], flat
    else:
        fn, act, other = BINARY[type(step.op)].code, 0, ins[1].reshape(ins[1].size)
    elementwise_kernel[blocks(y.size), TPB](flat, other, fn, act, y.reshape(y.size))
    return y


CUDA_RUNNERS = {
    Kernel.CONV2D_TERNARY: _conv_ternary,
    Kernel.CONV2D_FLOAT: _conv_float,
    Kernel.LINEAR_TERNARY: _linear_ternary,
    Kernel.LINEAR_FLOAT: _linear_float,
    Kernel.MAX_POOL2D: _pool,
    Kernel.AVG_POOL2D: _pool,
    Kernel.ADAPTIVE_AVG_POOL2D: _adaptive_avg_pool2d,
    Kernel.ACTIVATION: _elementwise,
    Kernel.BINARY: _elementwise,
}
"""One runner per kernel; `Kernel.VIEW` steps reshape the device array."""

UNSUPPORTED: dict[Kernel, str] = {
    Kernel.CONV2D_INT8: "kept-precision int8 layers have no CUDA kernel",
    Kernel.LINEAR_INT8: "kept-precision int8 layers have no CUDA kernel",
    Kernel.CONV_TRANSPOSE2D: "conv_transpose2d has no CUDA kernel (it runs on the CPU)",
    Kernel.SOFTMAX: "softmax has no CUDA kernel",
    Kernel.AFFINE: "a batch norm that no conv or linear absorbed has no CUDA kernel",
    Kernel.MATMUL: "matmul between activations has no CUDA kernel",
    Kernel.REFERENCE: "ops the runtime runs by their numpy reference (tdsl.ops.composite) have no CUDA kernel",
}
"""Kernels refused on CUDA, with the reason users read."""


def check_cuda_plan(plan: Plan) -> None:
    """Refuse, at deploy time, a plan with a step this module has no kernel for."""
    for step in plan.steps:
        why = UNSUPPORTED.get(step.kind)
        if step.kind is Kernel.BINARY and step.attrs["order"] != ("in", "in"):
            why = "a binary op with a weight operand has no CUDA kernel"
        if why is not None:
            raise step.error(f"no CUDA kernel for step kind '{step.kind}': {why}; deploy it with device='cpu'")


def run_cuda(model: DeployedModel, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """One forward on the GPU: inputs in, every step on device arrays, outputs out."""
    plan = model.plan
    schedule = plan.schedule(tuple(a.shape for a in arrays))
    weights = _device_weights(model)
    last: dict[int, int] = {}
    for k, step in enumerate(plan.steps):
        for v in step.inputs:
            last[v] = k
    values: dict[int, Any] = {}
    for v, a in zip(plan.inputs, arrays):
        values[v] = cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))
    for k, step in enumerate(plan.steps):
        ins = [values[v] for v in step.inputs]
        shape = schedule.shapes[step.output]
        if step.is_view:
            values[step.output] = ins[0].reshape(*shape)
        else:
            if step.inputs and any(v in plan.consts for v in step.inputs):
                raise step.error("a weight as an activation operand has no CUDA kernel")
            values[step.output] = CUDA_RUNNERS[step.kind](step, ins, shape, weights[k], plan.act_quant)
        for v in step.inputs:
            if last.get(v) == k and v not in plan.outputs:
                values.pop(v, None)
    return [values[v].copy_to_host() if v in values else np.array(plan.consts[v]) for v in plan.outputs]


def _device_weights(model: DeployedModel) -> list[dict[str, Any]]:
    cached = getattr(model, "_cuda_weights", None)
    if cached is None:
        cached = [{k: cuda.to_device(np.ascontiguousarray(w)) for k, w in step.weights.items()}
                  for step in model.plan.steps]
        model._cuda_weights = cached
    return cached
