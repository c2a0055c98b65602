"""The ONNX file published next to a package (`tdsl publish ... --with-onnx`): the package
loaded and checked, then exported (tdsl.backends.onnx) as `model.onnx` in a temporary folder."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def exported_onnx(package_dir: str | os.PathLike[str]) -> Iterator[Any]:
    """Export the package at `package_dir` to `model.onnx` in a temporary folder, removed on
    exit; yields the export's result (`.path`, `.opset`, `.nbytes`)."""
    from tdsl.backends.onnx import export_onnx
    from tdsl.package import load
    from tdsl.publish.archive import check_package

    frozen = load(check_package(package_dir)).to_frozen()
    with tempfile.TemporaryDirectory(prefix="tdsl-onnx-") as tmp:
        yield export_onnx(frozen, Path(tmp) / "model.onnx")
