"""One `deploy` for everything that can be deployed: the program and its weights come from the object.

    run = tdsl.deploy(model, "numba", device="cpu", act_quant="int8")
    run = model.deploy()                     # the same, as a method of each such object

`model` is a `FrozenModel` (`tdsl.quantize`, `CompiledModel.freeze`), a `LoadedPackage`
(`tdsl.load`, `tdsl.from_pretrained`) or a `CompiledModel` that carries weights
(`compiled.with_weights(state_dict)`). The program is lowered here (`tdsl.lowering`), then
handed to the backend, which runs no pass. Imports no torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tdsl.errors import TdslError

BACKENDS: tuple[str, ...] = ("numba",)
"""Deployment backends (torch runs through `.to_torch()`)."""


def program_and_weights(model: Any) -> tuple[Any, Mapping[str, Any]]:
    """(the compiled module, its weights keyed by frozen state-dict names) of a deployable object."""
    from tdsl.api import CompiledModel

    if isinstance(model, CompiledModel):
        if model.weights is None:
            raise TdslError("this compiled program has no weights to deploy: give them with "
                            "`compiled.with_weights(state_dict).deploy()`, or deploy a FrozenModel "
                            "(tdsl.quantize, compiled.freeze) or a package (tdsl.load)")
        return model.module, model.weights
    compiled = getattr(model, "compiled", None)
    if compiled is not None and hasattr(model, "arrays"):  # a LoadedPackage: numpy, no torch
        return compiled.module, model.arrays
    if compiled is not None and hasattr(model, "state_dict"):  # a FrozenModel
        return compiled.module, model.state_dict()
    raise TdslError(f"cannot deploy a {type(model).__name__}: deploy a FrozenModel, a loaded package "
                    "or a compiled program with weights")


def deploy(model: Any, backend: str = "numba", *, device: str = "cpu", act_quant: str = "int8",
           path: str | None = None, profile: bool = False) -> Any:
    """`model` on a deployment backend: a callable, numpy in, numpy out (`DeployedModel`).

    device: "cpu" or "cuda"; act_quant: "int8" (per-token int8 activations into the packed
    ternary kernels) or "float"; path: force a CPU kernel path ("portable", "vnni");
    profile: time every step (`run.profile_table()` shows where the time goes)."""
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

    return deploy_module(kernel_level(module), weights, device=device, act_quant=act_quant, path=path,
                         profile=profile)
