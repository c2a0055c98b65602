"""`tdsl export`: a model (zoo name, .tdsl file or saved package) to a package, a
torch.export program, TorchScript or ONNX, each reloaded and compared with the torch
backend (registered in `tdsl.tools.tdsl_cli` by `add_export_parser`).

    tdsl export resnet18 --precision ternary --format torch-export -o r18.pt2

The summary gives the file's size against the same model exported at fp32 in the same
format, and the largest output difference of the reloaded file. `write_export` and
`verify_export` are what `benchmarks/size_table.py` uses too. torch is imported only when
the command runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tdsl.errors import TdslError

FORMATS = ("package", "torch-export", "torchscript", "onnx")
SUFFIXES = {"package": "", "torch-export": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}
PRECISION_HELP = "fp32, fp16, int8, ternary, mixed, or a per-layer policy such as 'conv1=fp16 layer4.*=int8'"


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a model or package (package, torch-export, torchscript, onnx) "
                                      "and verify it against the torch backend")
    p.add_argument("model", help="a zoo model name (see `tdsl models`), a .tdsl / .tri file, or a saved package folder")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("-o", "--output", required=True, help="the file (or package folder) to write")
    p.add_argument("--precision", default="fp32", metavar="PRECISION", help=PRECISION_HELP + " (default fp32)")
    p.add_argument("--policy", default="default", choices=["default", "all", "none"], help="ternary policy")
    p.add_argument("--threshold", default="twn", help="twn, absmean, fixed=<delta> or sparsity=<fraction>")
    p.add_argument("--packed-format", default="2bit", choices=["2bit", "base3"], help="packed trit format")
    p.add_argument("--param", "--params", action="append", metavar="NAME=VALUE", dest="param",
                   help="a parameter of the entry layer (repeatable), e.g. --param num_classes=10")
    p.add_argument("--entry", help="the layer to build (default: the last one in the file)")
    p.add_argument("--weights", help="fp32 weights (.safetensors state dict) to quantise; default: random init")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation and of the test input")
    p.add_argument("--batch", type=int, default=2, help="batch size of the verification input")
    p.add_argument("--no-verify", action="store_true", help="skip reloading and comparing the written file")
    p.set_defaults(func=cmd_export)


def _precision_args(text: str) -> dict[str, str]:
    from tdsl.precision import PRECISIONS

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

    from tdsl.api import compile as compile_
    from tdsl.precision import quantize

    if weights is None:
        torch.manual_seed(seed)
        weights = compile_(model, entry=entry, params=params, pipeline="shape-infer").to_torch().state_dict()
    choice = _precision_args(precision)
    frozen = quantize(model, policy=policy, threshold=threshold, format=packed_format, params=params,
                      weights=weights, entry=entry, **choice)
    return frozen


def write_export(frozen: Any, fmt: str, path: str | os.PathLike[str]) -> Path:
    """Write `frozen` (a FrozenModel) in format `fmt` to `path`."""
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
        export_onnx(frozen, str(path))
        return Path(path)
    raise TdslError(f"unknown export format '{fmt}'; formats: {', '.join(FORMATS)}")


def verify_export(frozen: Any, fmt: str, path: str | os.PathLike[str], *, batch: int = 2, seed: int = 0) -> float:
    """Reload the written file and return the largest |difference| of its output from the
    torch backend's (the frozen module) on one random batch."""
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
    return float((got.to(torch.float64) - reference.to(torch.float64)).abs().max()) if got.numel() else 0.0


def size_of(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or of every file in a package folder."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.iterdir() if f.is_file()) if p.is_dir() else p.stat().st_size


def fp32_size(frozen: Any, fmt: str, source: str, params: dict[str, Any], entry: str | None) -> int:
    """Size of the same model at fp32 in the same format (written to a temporary folder)."""
    baseline = quantize_model(source, precision="fp32", params=params, entry=entry)
    if fmt == "package":
        baseline.package_source = getattr(frozen, "package_source", None)
    with tempfile.TemporaryDirectory() as tmp:
        return size_of(write_export(baseline, fmt, Path(tmp) / f"fp32{SUFFIXES[fmt] or '.pkg'}"))


def cmd_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tdsl.tools.common import parse_param

    params = dict(parse_param(p) for p in (args.param or []))
    steps = ["load" if is_package(args.model) else f"quantize ({args.precision})", f"write {args.format}",
             "fp32 baseline"] + ([] if args.no_verify else ["verify"])
    bar = tqdm(steps, desc="export", unit="step", file=sys.stderr, disable=None, leave=False)
    step = iter(bar)
    next(step)
    bar.set_postfix_str(steps[0])
    if is_package(args.model):
        if params or args.precision != "fp32" or args.weights:
            raise TdslError(f"{args.model} is a package: --precision, --param and --weights apply to models, "
                            "not to a saved package")
        from tdsl.package.reader import load

        pkg = load(args.model)
        frozen = pkg.to_frozen()
        frozen.package_source = pkg.config["model"]["source"]
        source, params, entry = pkg.config["model"]["source"], pkg.config["model"]["params"], pkg.config["model"]["entry"]
    else:
        frozen = quantize_model(args.model, precision=args.precision, policy=args.policy, threshold=args.threshold,
                                packed_format=args.packed_format, params=params, entry=args.entry,
                                weights=args.weights, seed=args.seed)
        source, entry = args.model, args.entry
    next(step)
    bar.set_postfix_str(steps[1])
    if args.format == "torchscript":
        from tdsl.backends.torch.export import TORCHSCRIPT_DEPRECATION

        print(f"warning: {TORCHSCRIPT_DEPRECATION}", file=sys.stderr)
    path = write_export(frozen, args.format, args.output)
    next(step)
    bar.set_postfix_str(steps[2])
    baseline = fp32_size(frozen, args.format, source, params, entry)
    diff = None
    if not args.no_verify:
        next(step)
        bar.set_postfix_str(steps[3])
        diff = verify_export(frozen, args.format, path, batch=args.batch, seed=args.seed)
    bar.close()
    size = size_of(path)
    tolerance = 0.0 if args.format in ("package", "torch-export", "torchscript") else 1e-4
    verdict = "skipped" if diff is None else (f"ok, max |diff| {diff:.3g}" if diff <= tolerance
                                              else f"FAILED, max |diff| {diff:.3g}")
    rows = [("format", "file", "size", "vs fp32", "verification"),
            (args.format, str(path), f"{size:,} B", f"{baseline / size:.2f}x smaller" if size else "-", verdict)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    return 0 if diff is None or diff <= tolerance else 1
