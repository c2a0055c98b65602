"""File sizes of ResNet-18 and MobileNetV2 (ImageNet variants) in every export format and
precision, with each file's largest output difference from the torch backend.

    python benchmarks/size_table.py            # writes docs/results/sizes.md

Every file is written by `tdsl export`'s own functions (`tdsl.package.export.write_export`),
reloaded and run on one random 1x3x224x224 batch (`verify_export`). All precisions start
from the same random fp32 weights, so the sizes compare like with like. ONNX rows appear
when `tdsl.backends.onnx` is installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"resnet18": {}, "mobilenetv2": {}}
PRECISIONS = [("fp32", "2bit"), ("fp16", "2bit"), ("int8", "2bit"), ("ternary", "2bit"), ("ternary", "base3")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "sizes.md"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from tdsl.api import compile as compile_
    from tdsl.package.export import quantize_model, size_of, verify_export, write_export

    formats = ["package", "torch-export", "torchscript"]
    if importlib.util.find_spec("tdsl.backends.onnx") is not None:
        formats.append("onnx")
    suffix = {"package": "", "torch-export": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}
    lines = [
        "# Model file sizes by format and precision",
        "",
        f"Made by `python benchmarks/size_table.py` on {time.strftime('%Y-%m-%d')} (torch {torch.__version__}, "
        f"Python {platform.python_version()}). ImageNet variants (1000 classes, 224x224), random weights "
        "(sizes do not depend on the values). *ratio*: the fp32 file of the same format divided by this file. "
        "*max diff*: largest |output difference| of the reloaded file from the torch backend on one random batch. "
        "Ternary models use the default policy (first conv and last linear kept at fp16).",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            torch.manual_seed(args.seed)
            weights = compile_(model, params=MODELS[model], pipeline="shape-infer").to_torch().state_dict()
            lines += [f"## {model}", "", "| precision | format | bytes | ratio | max diff |", "|---|---|---:|---:|---:|"]
            fp32_bytes: dict[str, int] = {}
            for precision, fmt in PRECISIONS:
                frozen = quantize_model(model, precision=precision, packed_format=fmt, params=MODELS[model],
                                        weights=weights)
                label = precision if precision != "ternary" else f"ternary ({fmt})"
                for form in formats:
                    t0 = time.perf_counter()
                    path = write_export(frozen, form, Path(tmp) / f"{model}-{precision}-{fmt}{suffix[form]}")
                    diff = verify_export(frozen, form, path, batch=1, seed=args.seed)
                    size = size_of(path)
                    fp32_bytes.setdefault(form, size)
                    lines.append(f"| {label} | {form} | {size:,} | {fp32_bytes[form] / size:.2f}x | {diff:.3g} |")
                    print(f"{model:12s} {label:16s} {form:13s} {size:>12,} B  max diff {diff:.3g}  "
                          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
            lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
