"""Memory and sparsity reports of a frozen model, where users found them; they live in
`tdsl.model.reports`."""
from tdsl.model.reports import KINDS, LayerMemory, MemoryReport, SparsityReport, memory_report, sparsity_report

__all__ = ["KINDS", "LayerMemory", "MemoryReport", "SparsityReport", "memory_report", "sparsity_report"]
