"""One `deploy` for everything that can be deployed: the program and its weights come from the object.

    run = tdsl.deploy(model, "numba", device="cpu", act_quant="int8")
    run = model.deploy()                     # the same, as a method of each such object

`model` is a `FrozenModel` (`tdsl.quantize`, `CompiledModel.freeze`), a `LoadedPackage`
(`tdsl.load`, `tdsl.from_pretrained`) or a `CompiledModel` that carries weights
(`compiled.with_weights(state_dict)`). The program is lowered here (`tdsl.lowering`), then
handed to the backend, which runs no pass. Imports no torch: a call with torch tensors
(`Deployment`) finds torch already imported by the caller.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from tdsl.dialects.storage import FrozenProgram, Program
from tdsl.errors import TdslError

BACKENDS: tuple[str, ...] = ("numba",)
"""Deployment backends (torch runs through `.to_torch()`)."""


def program_and_weights(model: Any) -> tuple[Any, Mapping[str, Any]]:
    """(the compiled module, its weights keyed by frozen state-dict names) of a deployable object:
    a `Program` or `FrozenProgram` (`tdsl.dialects.storage`: CompiledModel, FrozenModel, a loaded
    package), each of which says it itself, so this layer names no class of the package layer above it."""
    if isinstance(model, Program | FrozenProgram):
        return model.program_and_weights()
    raise TdslError(f"cannot deploy a {type(model).__name__}: deploy a FrozenModel, a loaded package "
                    "or a compiled program with weights")


class Deployment:
    """What `deploy` returns: the backend's model, answering in the caller's array type.

    numpy in, numpy out; torch tensors in (any of the inputs), torch tensors out, on the
    device of the first tensor given, with the structure the backend returns (one array, a
    tuple, or a dict by output name). Everything else (`profile_table()`, `plan`, ...) is the
    backend model's (`DeployedModel`)."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, *inputs: Any) -> Any:
        torch = sys.modules.get("torch")  # a torch tensor exists only once its caller imported torch
        tensors = [x for x in inputs if torch is not None and isinstance(x, torch.Tensor)]
        out = self.model(*inputs)
        if not tensors:
            return out
        device = tensors[0].device
        return _map_arrays(out, lambda a: torch.from_numpy(a).to(device))

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"Deployment({self.model!r})"


def _map_arrays(out: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(out, dict):
        return {k: fn(v) for k, v in out.items()}
    if isinstance(out, tuple):
        return tuple(fn(v) for v in out)
    return fn(out)


def deploy(model: Any, backend: str = "numba", *, device: str = "cpu", act_quant: str = "int8",
           path: str | None = None, profile: bool = False, calibrate: Any = None) -> Deployment:
    """`model` on a deployment backend: a callable that answers in the type it is given
    (numpy in, numpy out; torch in, torch out: `Deployment`).

    device: "cpu" or "cuda"; act_quant: "int8" (per-token int8 activations into the packed
    ternary kernels), "float", or "int8-nhwc" (u8 NHWC activations between layers, per-tensor
    scales: dynamic per layer, or static once calibrated); path: force a CPU kernel path
    ("portable", "avx2", "vnni"; with "int8-nhwc" also an NHWC micro-kernel: "avx-vnni",
    "avx512-vnni", "amx"); profile: time every step (`run.profile_table()` shows where
    the time goes); calibrate: batches (arrays) whose activation ranges become the static
    scales of an "int8-nhwc" deployment (`DeployedModel.calibrate`)."""
    if not isinstance(backend, str):
        raise TdslError(f"deploy's first argument is the backend name ({', '.join(map(repr, BACKENDS))}), "
                        f"got a {type(backend).__name__}; the weights come from the model "
                        "(compiled.with_weights(arrays).deploy())")
    if backend not in BACKENDS:
        raise TdslError(f"unknown deployment backend {backend!r}; available: {', '.join(BACKENDS)} "
                        "(use .to_torch() for torch)")
    module, weights = program_and_weights(model)
    from tdsl.lowering import kernel_level

    try:
        from tdsl.backends.numba.executor import deploy_module
    except ModuleNotFoundError as e:
        if e.name not in ("numba", "tdsl.backends.numba", "tdsl.backends"):
            raise
        raise TdslError(f"the Numba backend is not available in this installation ({e.name} is missing): "
                        "install numba, or run the model with .to_torch()") from None

    return Deployment(deploy_module(kernel_level(module), weights, device=device, act_quant=act_quant,
                                    path=path, profile=profile, calibrate=calibrate))
