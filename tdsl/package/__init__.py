"""The tdsl model package: a folder that holds one frozen model, torch-free to load.

    model.safetensors  the frozen state dict: packed trits (uint8, docs/PACKED_FORMAT.md),
                       their scales, fp16 / int8 (+ scale) / fp32 weights, biases, batch norm
    config.json        format version, tdsl version, the DSL source (and zoo name), entry,
                       parameters, pass pipeline, precision policy, inputs and outputs,
                       packed format, SHA-256 of the weights file (docs/PACKAGE.md)
    README.md          the model card (tdsl.package.card)

`tdsl.save(frozen, path)` writes one (atomically: a temporary folder renamed into place);
`tdsl.load(path)` checks it and rebuilds the model by compiling the stored source. Loading
never unpickles and never runs code from the package, and this package imports numpy,
safetensors and the compiler only: torch is imported by `LoadedPackage.to_torch()` alone.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tdsl.package.reader import LoadedPackage

PACKAGE_FORMAT = "tdsl-package"
PACKAGE_FORMAT_VERSION = 1
"""The newest package format this tdsl writes and reads; a newer one is refused."""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"

__all__ = ["save", "load", "PACKAGE_FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE", "CARD_FILE"]


def save(model: Any, path: Any, **kwargs: Any) -> Any:
    """Write `model` (a FrozenModel, or a CompiledModel with `module=`) as a package; see
    `tdsl.package.writer.save`."""
    from tdsl.package.writer import save as _save

    return _save(model, path, **kwargs)


def load(path: Any) -> LoadedPackage:
    """Check and load a package folder (`tdsl.package.reader.load`); imports no torch."""
    from tdsl.package.reader import load as _load

    return _load(path)
