"""A frozen model in one of the export formats (a package, a torch.export program,
TorchScript or ONNX), reloaded and compared with the torch backend.

    frozen = quantize_model("resnet18", precision="ternary")
    path = write_export(frozen, "torch-export", "r18.pt2")
    verify_export(frozen, "torch-export", path)     # the largest |difference|, 0.0 here

What `tdsl export` (tdsl.tools.export) runs, and `benchmarks/size_table.py` too. torch is
imported only when a function runs.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from tdsl.errors import TdslError

FORMATS = ("package", "torch-export", "torchscript", "onnx", "gguf")
SUFFIXES = {"package": "", "torch-export": ".pt2", "torchscript": ".pt", "onnx": ".onnx", "gguf": ".gguf"}


def _precision_args(text: str) -> dict[str, str]:
    from tdsl.model.precision import PRECISIONS

    if text in PRECISIONS:
        return {"precision": text}
    if "=" in text:
        return {"precision": "fp32", "override": text}
    raise TdslError(f"--precision must be one of {', '.join(PRECISIONS)} or a policy like 'conv1=fp16', got '{text}'")


def is_package(path: str) -> bool:
    from tdsl.package import CONFIG_FILE

    return os.path.isdir(path) and os.path.exists(os.path.join(path, CONFIG_FILE))


def quantize_model(model: str, *, precision: str = "fp32", policy: str = "default", threshold: str = "twn",
                   packed_format: str = "2bit", params: dict[str, Any] | None = None, entry: str | None = None,
                   weights: Any = None, seed: int = 0) -> Any:
    """`tdsl.quantize` of a zoo name / file / source text at a precision or policy, from
    `weights` (state dict or .safetensors) or the model's random initialisation."""
    import torch

    from tdsl.model.compiled import compile as compile_
    from tdsl.model.precision import quantize

    untrained = weights is None
    if untrained:
        torch.manual_seed(seed)
        weights = compile_(model, entry=entry, params=params, pipeline="shape-infer").to_torch().state_dict()
    choice = _precision_args(precision)
    frozen = quantize(model, policy=policy, threshold=threshold, format=packed_format, params=params,
                      weights=weights, entry=entry, **choice)
    if untrained:  # said on stderr by `tdsl export` and in the package's model card
        frozen.weights_origin = f"a random initialisation (seed {seed}), not trained weights"
    return frozen


def write_export(frozen: Any, fmt: str, path: str | os.PathLike[str], calibrate: list[Any] | None = None) -> Path:
    """Write `frozen` (a FrozenModel) in format `fmt` to `path`; `calibrate` (input batches)
    makes an ONNX file the static int8 QDQ form (`export_onnx(..., calibrate=...)`)."""
    if calibrate is not None and fmt != "onnx":
        raise TdslError(f"calibration batches apply to --format onnx (its QDQ form), not to {fmt}")
    if fmt == "package":
        from tdsl.package.writer import save

        return save(frozen, path, source=getattr(frozen, "package_source", None), overwrite=True)
    if fmt == "torch-export":
        from tdsl.backends.torch.export import export_program

        return export_program(frozen, path)
    if fmt == "torchscript":
        import warnings

        from tdsl.backends.torch.export import export_torchscript

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return export_torchscript(frozen, path)
    if fmt == "onnx":
        try:
            from tdsl.backends.onnx import export_onnx
        except ImportError as e:
            if getattr(e, "name", None) not in ("tdsl.backends.onnx", None) and "export_onnx" not in str(e):
                raise
            raise TdslError("--format onnx needs the ONNX backend (tdsl.backends.onnx.export_onnx), "
                            "which this tdsl does not have yet") from None
        export_onnx(frozen, str(path), calibrate=calibrate)
        return Path(path)
    if fmt == "gguf":  # llama.cpp's bitnet architecture, TQ2_0 ternary blocks (tdsl.package.gguf)
        from tdsl.package.gguf import write_gguf

        return write_gguf(frozen, path)
    raise TdslError(f"unknown export format '{fmt}'; formats: {', '.join(FORMATS)}")


def calibration_batches(frozen: Any, spec: str, *, batch: int = 8, seed: int = 0) -> list[Any]:
    """Input batches for `--calibrate`: N (a count) random batches of `batch` example inputs
    (`example_inputs`, seeds seed+1 …, not the verification input's), or an .npz file whose
    arrays are the model's inputs in order (one array for a one-input model), split into
    batches of `batch` along dim 0."""
    import zipfile

    import numpy as np

    from tdsl.backends.torch.export import example_inputs

    if spec.isdigit():
        count = int(spec)
        if not 1 <= count <= 1024:
            raise TdslError(f"--calibrate: the number of batches must be between 1 and 1024, got {count}")
        return [tuple(x.numpy() for x in example_inputs(frozen.compiled, batch=batch, seed=seed + 1 + i))
                for i in range(count)]
    if not spec.endswith(".npz"):
        raise TdslError(f"--calibrate takes a number of batches or an .npz file, got '{spec}'")
    try:
        with np.load(spec, allow_pickle=False) as z:
            arrays = [z[k] for k in z.files]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise TdslError(f"{spec}: cannot read calibration data: {e}") from None
    wanted = len(example_inputs(frozen.compiled, batch=1, seed=seed))
    if len(arrays) != wanted or any(a.ndim == 0 or len(a) != len(arrays[0]) for a in arrays) or not len(arrays[0]):
        raise TdslError(f"{spec}: calibration data needs {wanted} array(s) (one per model input) with the same "
                        f"non-empty dim 0, found shapes {[a.shape for a in arrays]}")
    return [tuple(a[i:i + batch] for a in arrays) for i in range(0, len(arrays[0]), batch)]


def verify_export(frozen: Any, fmt: str, path: str | os.PathLike[str], *, batch: int = 2, seed: int = 0,
                  relative: bool = False) -> float:
    """Reload the written file and return the largest |difference| of its output from the
    torch backend's (the frozen module) on one random batch (divided by the largest
    |reference| when `relative`: the measure of a file with int8 activations)."""
    if fmt == "gguf":  # GGUF holds weights, not a program to run: its decoded blocks must be the weights
        from tdsl.package.gguf import verify_gguf

        return verify_gguf(frozen, path)
    import numpy as np
    import torch

    from tdsl.backends.torch.export import example_inputs

    inputs = example_inputs(frozen.compiled, batch=batch, seed=seed)
    with torch.no_grad():
        reference = frozen.module(*inputs)
        if fmt == "package":
            from tdsl.package.reader import load

            got = load(path).to_torch()(*inputs)
        elif fmt == "torch-export":
            from tdsl.backends.torch.export import load_program

            got = load_program(path)(*inputs)
        elif fmt == "torchscript":
            from tdsl.backends.torch.export import load_torchscript

            got = load_torchscript(path)(*inputs)
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
            got = torch.from_numpy(np.asarray(session.run(None, feeds)[0]))
    if tuple(got.shape) != tuple(reference.shape):
        raise TdslError(f"{path}: the reloaded model gives shape {tuple(got.shape)}, the torch backend "
                        f"{tuple(reference.shape)}")
    diff = float((got.to(torch.float64) - reference.to(torch.float64)).abs().max()) if got.numel() else 0.0
    if relative and got.numel():
        diff /= max(float(reference.to(torch.float64).abs().max()), 1e-30)
    return diff


def size_of(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or of every file in a package folder."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.iterdir() if f.is_file()) if p.is_dir() else p.stat().st_size


def fp32_size(frozen: Any, fmt: str, source: str, params: dict[str, Any], entry: str | None) -> int:
    """Size of the same model at fp32 in the same format (written to a temporary folder)."""
    if fmt == "gguf":  # the same tensors at F32, counted (a BitNet GGUF of fp32 weights has no TQ blocks)
        from tdsl.package.gguf import fp32_nbytes

        return fp32_nbytes(frozen)
    baseline = quantize_model(source, precision="fp32", params=params, entry=entry)
    if fmt == "package":
        baseline.package_source = getattr(frozen, "package_source", None)
    with tempfile.TemporaryDirectory() as tmp:
        return size_of(write_export(baseline, fmt, Path(tmp) / f"fp32{SUFFIXES[fmt] or '.pkg'}"))
