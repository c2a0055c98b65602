"""The Numba backend: kernel-level IR -> a plan of runtime kernel calls on numpy arrays.

    model = tdsl.backends.numba.deploy(frozen)              # a FrozenModel
    model = tdsl.backends.numba.deploy_arrays(compiled, arrays, device="cuda")
    y = model(x)                                            # numpy in (or torch tensors), numpy out

Imports numpy, numba and xdsl only, never torch (docs: /work/shared/DESIGN.md, "Deployment
needs no torch"). `plan` lowers the IR, `executor` runs it on the CPU, `gpu` on a GPU with numba.cuda
(not named `cuda`: numba-cuda's import hook claims every module name containing "numba.cuda").
"""
from tdsl.backends.numba.executor import DeployedModel, deploy, deploy_arrays
from tdsl.backends.numba.plan import Plan, Schedule, Step, build_plan, kernel_module

__all__ = ["deploy", "deploy_arrays", "DeployedModel", "Plan", "Schedule", "Step", "build_plan",
           "kernel_module"]
