"""The Numba backend: kernel-level IR -> a plan of runtime kernel calls on numpy arrays.

    model = frozen.deploy()                    # or tdsl.deploy(frozen) / tdsl.load(p).deploy()
    y = model(x)                               # numpy in (or torch tensors), numpy out

The backend receives a module at the kernel level (`tdsl.lowering.kernel_level` runs the
passes; `deploy_module` runs none). Imports numpy, numba and xdsl only, never torch. `plan`
lowers the IR to steps, `executor` runs them on the CPU, `gpu` on a GPU with numba.cuda (not
named `cuda`: numba-cuda's import hook claims every module name containing "numba.cuda").
"""
from tdsl.backends.numba.executor import DeployedModel, deploy_module
from tdsl.backends.numba.plan import Kernel, Plan, Schedule, Step, build_plan

__all__ = ["deploy_module", "DeployedModel", "Kernel", "Plan", "Schedule", "Step", "build_plan"]
