"""Every op of every dialect has a handler in each backend, or is in that backend's explicit
unsupported set with the message users get; and the elementwise families are complete."""
from __future__ import annotations

import pytest
from xdsl.ir import Operation

from tdsl.backends.numba import executor, gpu, plan
from tdsl.backends.onnx import emit as onnx_emit
from tdsl.backends.torch import emit as torch_emit
from tdsl.dialects import kern, tern
from tdsl.dialects import tdsl as t
from tdsl.frontend import ops as frontend
from tdsl.ops.elementwise import ACTIVATIONS, BINARY

DIALECTS = (t.TDSL, tern.TERN, kern.KERN)
STRUCTURE = {t.LayerOp, t.ParamOp, t.InstanceOp, t.ForwardOp, t.ReturnOp, tern.PackedParamOp}
"""Declarations and the forward's frame: every backend walks them, none dispatches on them."""
OPS = [op for dialect in DIALECTS for op in dialect.operations if op not in STRUCTURE]


def _onnx_handles(op: type[Operation]) -> bool:
    dispatcher = onnx_emit._GraphEmitter.__dict__["emit"].dispatcher
    return dispatcher.dispatch(op) is not dispatcher.dispatch(Operation)


BACKENDS = {
    "torch": (lambda op: op in torch_emit.HANDLERS, torch_emit.UNSUPPORTED),
    "onnx": (_onnx_handles, onnx_emit.UNSUPPORTED),
    "numba": (lambda op: op in plan.HANDLERS, plan.UNSUPPORTED),
}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_every_op_has_a_handler_or_a_stated_refusal(backend: str, op: type[Operation]) -> None:
    handles, unsupported = BACKENDS[backend]
    assert handles(op) != (op in unsupported), (
        f"{op.name}: the {backend} backend must either handle it or list it, with a reason, in UNSUPPORTED")
    if op in unsupported:
        assert len(unsupported[op]) > 20  # a reason a user can act on, not a placeholder


def test_unsupported_sets_name_only_real_ops() -> None:
    for _, unsupported in BACKENDS.values():
        assert set(unsupported) <= set(OPS)
    assert set(gpu.UNSUPPORTED) <= set(plan.Kernel)


@pytest.mark.parametrize("kernel", list(plan.Kernel), ids=str)
def test_every_kernel_runs_on_cpu_and_on_cuda_or_is_refused(kernel: plan.Kernel) -> None:
    if kernel is plan.Kernel.VIEW:  # a view step is the input's buffer, on both
        assert kernel not in executor.CPU_RUNNERS and kernel not in gpu.CUDA_RUNNERS
        return
    assert kernel in executor.CPU_RUNNERS
    assert (kernel in gpu.CUDA_RUNNERS) != (kernel in gpu.UNSUPPORTED)


@pytest.mark.parametrize("op", [op for op in t.TDSL.operations if issubclass(op, t.ValueOp) or op is t.CallOp],
                         ids=lambda op: op.name)
def test_every_tdsl_value_op_is_written_by_some_syntax(op: type[Operation]) -> None:
    assert (frontend.builtin_of(op) is not None) != (op in frontend.ELABORATED), op.name


def test_elementwise_families_are_complete() -> None:
    unary = {op for op in t.TDSL.operations if issubclass(op, t.ActivationOp)}
    binary = {op for op in t.TDSL.operations if issubclass(op, t.BinaryOp)}
    assert unary == set(ACTIVATIONS)
    assert binary == set(BINARY)
    assert len({row.code for row in ACTIVATIONS.values()}) == len(ACTIVATIONS)
    assert len({row.code for row in BINARY.values()}) == len(BINARY)
