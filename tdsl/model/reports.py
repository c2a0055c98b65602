"""Memory and sparsity reports of a frozen model (docs/TERNARY.md, "Reports").

`memory_report` sums the bytes of every tensor of the frozen state dict
(`numel * element_size`), by layer and by kind, so its total is exactly what a saved
state dict holds (a safetensors file adds only its header). The fp32 baseline counts the
same model with every tensor in float32: a packed weight counts its unpacked shape at 4
bytes an element, scales count nothing (the fp32 model has none).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tdsl.model.frozen import FrozenModel

KINDS = ("packed", "scales", "weights", "biases", "batchnorm", "other")
"""Columns of the memory report: packed trits, scales (ternary and int8), kept-precision
weights (fp32 / fp16 / int8 values of convs and linears), biases, batch norm, other."""

_KIND_OF_ROLE = {"packed": "packed", "scale": "scales", "weight": "weights", "bias": "biases",
                 "batchnorm": "batchnorm", "other": "other"}


def _fmt_bytes(n: float) -> str:
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclass
class LayerMemory:
    """Bytes of one layer's tensors by kind, its precision(s) and its fp32 size."""

    layer: str
    precision: str
    bytes: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    fp32_bytes: int = 0

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


@dataclass
class MemoryReport:
    """Per-layer and total bytes of a frozen state dict, against the fp32 model."""

    layers: list[LayerMemory]
    precision: str = ""
    format: str = ""

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def fp32_total(self) -> int:
        return sum(layer.fp32_bytes for layer in self.layers)

    @property
    def ratio(self) -> float:
        """fp32 bytes / stored bytes (how many times smaller)."""
        return self.fp32_total / self.total if self.total else 0.0

    def layer_precisions(self) -> dict[str, int]:
        """How many weight layers are stored in each precision (e.g. {"ternary": 3, "fp16": 2});
        layers without a weight precision (batch norms: "-") are not counted."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            if layer.precision not in ("", "-"):
                counts[layer.precision] = counts.get(layer.precision, 0) + 1
        return counts

    @property
    def stored_precision(self) -> str:
        """The precision of every layer, or "mixed" when the policy kept some in another one."""
        kinds = self.layer_precisions()
        return next(iter(kinds)) if len(kinds) == 1 else ("mixed" if kinds else self.precision)

    def by_kind(self) -> dict[str, int]:
        return {k: sum(layer.bytes[k] for layer in self.layers) for k in KINDS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision, "format": self.format, "total_bytes": self.total,
            "fp32_bytes": self.fp32_total, "ratio": self.ratio, "by_kind": self.by_kind(),
            "stored_precision": self.stored_precision, "layer_precisions": self.layer_precisions(),
            "layers": [{"layer": layer.layer, "precision": layer.precision, "bytes": layer.total,
                        "fp32_bytes": layer.fp32_bytes, "by_kind": dict(layer.bytes)} for layer in self.layers],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        width = max([len("layer")] + [len(layer.layer or "(model)") for layer in self.layers])
        head = f"{'layer':<{width}}  {'precision':<12}" + "".join(f"{k:>11}" for k in KINDS)
        head += f"{'total':>11}{'fp32':>11}"
        lines = [head, "-" * len(head)]
        for layer in self.layers:
            lines.append(f"{layer.layer or '(model)':<{width}}  {layer.precision:<12}"
                         + "".join(f"{layer.bytes[k]:>11,}" for k in KINDS)
                         + f"{layer.total:>11,}{layer.fp32_bytes:>11,}")
        kinds = self.by_kind()
        lines.append("-" * len(head))
        lines.append(f"{'total':<{width}}  {self.stored_precision:<12}" + "".join(f"{kinds[k]:>11,}" for k in KINDS)
                     + f"{self.total:>11,}{self.fp32_total:>11,}")
        if self.stored_precision == "mixed":
            mix = ", ".join(f"{n} {p}" for p, n in self.layer_precisions().items())
            lines.append(f"mixed: {mix} layers (asked for {self.precision or 'a custom policy'}; the precision "
                         "policy keeps the layers it lists, by default the first and the last, in higher precision)")
        lines.append(f"{_fmt_bytes(self.total)} stored vs {_fmt_bytes(self.fp32_total)} in fp32: "
                     f"{self.ratio:.2f}x smaller ({100 / self.ratio if self.ratio else 0:.2f}% of fp32)")
        return "\n".join(lines)


def memory_report(frozen: FrozenModel) -> MemoryReport:
    """Bytes of every tensor of `frozen`'s state dict, per layer and kind, and the fp32 size."""
    layers: dict[str, LayerMemory] = {}
    precisions: dict[str, list[str]] = {}
    state = frozen.state_dict()
    for key, tensor in state.items():
        s = frozen.layout.get(key)
        layer_name = s.layer if s is not None else key.rpartition(".")[0]
        role = s.role if s is not None else "other"
        entry = layers.setdefault(layer_name, LayerMemory(layer_name, ""))
        entry.bytes[_KIND_OF_ROLE[role]] += tensor.numel() * tensor.element_size()
        if role == "scale":
            continue
        numel = 1
        for d in (s.shape if s is not None and role == "packed" else tensor.shape):
            numel *= int(d)
        entry.fp32_bytes += numel * 4 if (tensor.is_floating_point() or role in ("packed", "weight")) \
            else tensor.numel() * tensor.element_size()
        if role in ("packed", "weight") and s is not None:
            precisions.setdefault(layer_name, []).append(s.precision)
    for name, entry in layers.items():
        entry.precision = "/".join(dict.fromkeys(precisions.get(name, []))) or "-"
    return MemoryReport(list(layers.values()), frozen.precision, frozen.format)


@dataclass
class SparsityReport:
    """Fraction of zero trits per ternary weight and overall."""

    layers: list[tuple[str, int, int]]
    """(weight path, zero trits, trits)."""

    @property
    def zeros(self) -> int:
        return sum(z for _, z, _ in self.layers)

    @property
    def count(self) -> int:
        return sum(n for _, _, n in self.layers)

    @property
    def overall(self) -> float:
        return self.zeros / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "zeros": self.zeros, "trits": self.count,
                "layers": [{"weight": w, "zeros": z, "trits": n, "sparsity": z / n if n else 0.0}
                           for w, z, n in self.layers]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        if not self.layers:
            return "no ternary weights"
        width = max(len("weight"), *(len(w) for w, _, _ in self.layers))
        head = f"{'weight':<{width}}  {'trits':>11}  {'zeros':>11}  {'sparsity':>8}"
        lines = [head, "-" * len(head)]
        lines += [f"{w:<{width}}  {n:>11,}  {z:>11,}  {z / n if n else 0.0:>8.3f}" for w, z, n in self.layers]
        lines += ["-" * len(head), f"{'overall':<{width}}  {self.count:>11,}  {self.zeros:>11,}  {self.overall:>8.3f}"]
        return "\n".join(lines)


def sparsity_report(frozen: FrozenModel) -> SparsityReport:
    """Zero trits of every packed weight of `frozen`, unpacked from its state dict."""
    rows = []
    for path, (trits, _) in frozen.ternary_weights().items():
        rows.append((path, int((trits == 0).sum()), trits.numel()))
    return SparsityReport(rows)
