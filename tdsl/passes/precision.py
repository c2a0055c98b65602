"""`precision`: record fp32 / fp16 / int8 on every weight param, by policy and overrides."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from tdsl.errors import PassError
from tdsl.passes.precision_policy import check_choice, collect_sites, parse_overrides, resolve, specialise
from tdsl.passes.shape_infer import find_entry
from tdsl.passes.ternarize import apply_precisions

FLOAT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class PrecisionPass(ModulePass):
    """Set `precision` (fp32, fp16, int8) on the param of every weight-bearing op.

    The policy machinery of `ternarize` without ternary: each weight-bearing op reached
    from the `tdsl.entry` layer gets the first matching `override` (`glob=precision`,
    fnmatch on the dotted path, first match wins), else its param's DSL annotation, else
    `default`. The IR is not rewritten; backends read the precision (fp16 / int8 storage
    and fake-quant). Layers shared by instances that need different precisions are cloned.
    A `ternary` override or annotation is an error: use `ternarize`.
    """

    name = "precision"
    OPTION_CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"default": FLOAT_PRECISIONS}
    """The values `--help` lists and `apply` accepts, per option."""

    default: str = "fp16"
    override: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check_choice(self.name, "default", self.default, self.OPTION_CHOICES["default"])
        overrides = parse_overrides(self.override, self.name, FLOAT_PRECISIONS)
        entry = find_entry(op, self.name)
        sites = collect_sites(op, entry, self.name)
        precisions = resolve(sites, overrides, "none", self.default)
        for site in sites:
            if precisions[site.path] == "ternary":
                raise PassError(
                    f"{self.name}: {site.path} is annotated ternary; run ternarize for ternary weights", site.loc
                )
            if precisions[site.path] is None:
                precisions[site.path] = self.default
        apply_precisions(op, specialise(op, entry, precisions), quantiser=None)
