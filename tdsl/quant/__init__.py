"""Ternary quantisers shared by compiler passes, emitted torch modules and the runtime.

Importing this package loads numpy only (the runtime has no torch); the torch pieces
live in `tdsl.quant.torch_ste` (straight-through estimators, TTQ) and
`tdsl.quant.calibration` (output-error threshold search), imported explicitly.
"""
from tdsl.quant.ternary import ROUNDINGS, SCALES, TernaryWeight, ternarize
from tdsl.quant.thresholds import METHODS, compute_threshold

__all__ = ["METHODS", "ROUNDINGS", "SCALES", "TernaryWeight", "compute_threshold", "ternarize"]
