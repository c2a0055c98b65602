"""The state-dict keys of an emitted torch module's stored tensors: the one storage layout
(`tdsl.dialects.storage.storage_layout`, whose docstring has the table of what each
precision stores) under the names the emitter gives attributes. `tdsl.model.frozen.freeze`
fills the frozen module from the trained module's latent weights by this layout.
"""
from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp

from tdsl.backends.torch.plan import ModulePlan, int8_scale_key
from tdsl.dialects import tdsl as t
from tdsl.dialects.storage import Stored
from tdsl.dialects.storage import storage_layout as _layout


class _TorchNames:
    """The emitted module's attribute names (`names.py_ident`, ModuleLists, inlined
    `nn.Sequential` chains) as a storage `Naming`: keys are state-dict keys."""

    def __init__(self, plan: ModulePlan):
        self.plan = plan

    def child(self, layer: t.LayerOp, instance: str) -> str:
        if layer.sym_name.data in self.plan.inline:
            return instance  # nn.Sequential children are `0`, `1`, ..., as the chain's instances
        attr = self.plan.plan_of(layer).member_expr(instance).removeprefix("self.")
        return attr.replace("[", ".").replace("]", "")

    def tensor(self, layer: t.LayerOp, param: str, packed: bool) -> str:
        return self.plan.plan_of(layer).members[param].ident

    def int8_scale(self, layer: t.LayerOp, param: str) -> str:
        return self.plan.plan_of(layer).members[int8_scale_key(param)].ident


def storage_layout(module: ModuleOp, frozen: bool = True) -> dict[str, Stored]:
    """Every tensor of the module emitted from `module` (frozen form by default), by
    state-dict key: the one storage layout (`tdsl.dialects.storage`) under the emitted
    module's names."""
    return _layout(module, frozen, _TorchNames(ModulePlan(module, frozen)))
