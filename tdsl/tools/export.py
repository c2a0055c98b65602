"""`tdsl export`: a model (zoo name, .tdsl file or saved package) to a package, a
torch.export program, TorchScript or ONNX, each reloaded and compared with the torch
backend.

    tdsl export resnet18 --precision ternary --format torch-export -o r18.pt2

The summary gives the file's size against the same model exported at fp32 in the same
format, and the largest output difference of the reloaded file. The writing and checking
are `tdsl.package.export` (`write_export`, `verify_export`), which `benchmarks/size_table.py`
uses too. torch is imported only when the command runs.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tdsl.errors import TdslError
from tdsl.package.export import FORMATS
from tdsl.tools.common import (DEFAULT_PRECISION, SEED, PRECISION_DEFAULT, add_force_arg, add_model_arg, add_trit_format_arg,
                               command_main, int_option, params_from, read_weights_file, refuse_overwrite,
                               resolve_model, trit_format)

PRECISION_HELP = "fp32, fp16, int8, ternary, mixed, or a per-layer policy such as 'conv1=fp16 layer4.*=int8'"
CALIBRATION_BATCH = 8
QDQ_TOLERANCE = 0.25
"""max |diff| / max |reference| of a calibrated (int8 activations) ONNX file, as benchmarks/bench_models.py."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a model or package (package, torch-export, torchscript, onnx) "
                                      "and verify it against the torch backend")
    add_model_arg(p)
    p.add_argument("--format", required=True, choices=FORMATS, help="the file format to write")
    p.add_argument("-o", "--output", required=True, help="the file (or package folder) to write")
    p.add_argument("--precision", default=None, metavar="PRECISION",
                   help=f"{PRECISION_HELP}; {PRECISION_DEFAULT} (a package keeps its own)")
    p.add_argument("--policy", default="default", choices=["default", "all", "none"], help="ternary policy")
    p.add_argument("--threshold", default="twn", help="twn, absmean, fixed=<delta> or sparsity=<fraction>")
    add_trit_format_arg(p, "--packed-format")
    p.add_argument("--param", "--params", action="append", metavar="NAME=VALUE", dest="param",
                   help="a parameter of the entry layer (repeatable), e.g. --param num_classes=10")
    p.add_argument("--entry", help="the layer to build (default: the last one in the file)")
    p.add_argument("--weights", help="fp32 weights (.safetensors state dict) to quantise; default: random init")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the random initialisation and of the test input")
    p.add_argument("--batch", type=int_option(1, 4096, "a batch size"), default=2, help="batch size of the verification input")
    p.add_argument("--no-verify", action="store_true", help="skip reloading and comparing the written file")
    p.add_argument("--calibrate", metavar="N|FILE.npz",
                   help="--format onnx only: write the static int8 QDQ form that onnxruntime runs as QLinearConv/QGemm, "
                        f"its activation scales calibrated on N random batches of {CALIBRATION_BATCH} example inputs "
                        "or on the inputs stored in an .npz (one array per model input)")
    add_force_arg(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tdsl.package.export import fp32_size, quantize_model, size_of, verify_export, write_export

    if args.calibrate is not None and args.format != "onnx":
        raise TdslError(f"--calibrate applies to --format onnx, not {args.format}")
    refuse_overwrite(args.output, args.force, folder=args.format == "package")
    target = resolve_model(args)
    args.model = target.value
    packed_format = trit_format(args, "--packed-format", "export")
    precision = args.precision or DEFAULT_PRECISION
    params = params_from(args)
    steps = ["load" if target.package else f"quantize ({precision})", f"write {args.format}",
             "fp32 baseline"] + ([] if args.no_verify else ["verify"])
    bar = tqdm(steps, desc="export", unit="step", file=sys.stderr, disable=None, leave=False)
    step = iter(bar)
    next(step)
    bar.set_postfix_str(steps[0])
    if target.package:
        if params or args.weights:
            raise TdslError(f"{args.model} is a package: --param and --weights apply to models, not to a saved package")
        from tdsl.package.reader import load

        pkg = load(args.model)
        if args.precision is not None:  # an fp32 package (tdsl import) quantised as a model would be
            if pkg.precision not in ("fp32", ""):
                raise TdslError(f"{args.model} is a {pkg.precision} package: --precision re-quantises fp32 packages "
                                "only (export it as it is, or quantise the fp32 model it came from)")
            from tdsl.model.precision import quantize

            frozen = quantize(pkg, precision=precision, policy=args.policy, threshold=args.threshold,
                              format=packed_format)
        else:
            if args.trit_format or args.old_trit_format:
                raise TdslError(f"{args.model} is a package: --trit-format applies with --precision")
            frozen = pkg.to_frozen()
        frozen.package_source = pkg.config["model"]["source"]
        frozen.package_path = pkg.path  # GGUF reads the package's tokenizer.json
        source, params, entry = pkg.config["model"]["source"], pkg.config["model"]["params"], pkg.config["model"]["entry"]
    else:
        frozen = quantize_model(args.model, precision=precision, policy=args.policy, threshold=args.threshold,
                                packed_format=packed_format, params=params, entry=args.entry,
                                weights=args.weights and read_weights_file(args.weights), seed=args.seed)
        source, entry = args.model, args.entry
        if args.weights is None:
            print(f"warning: no --weights given: the export holds {frozen.weights_origin}", file=sys.stderr)
    next(step)
    bar.set_postfix_str(steps[1])
    if args.format == "torchscript":
        from tdsl.backends.torch.export import TORCHSCRIPT_DEPRECATION

        print(f"warning: {TORCHSCRIPT_DEPRECATION}", file=sys.stderr)
    calibration = None
    if args.calibrate is not None:
        from tdsl.package.export import calibration_batches

        calibration = calibration_batches(frozen, args.calibrate, batch=CALIBRATION_BATCH, seed=args.seed)
    path = write_export(frozen, args.format, args.output, calibrate=calibration)
    next(step)
    bar.set_postfix_str(steps[2])
    baseline = fp32_size(frozen, args.format, source, params, entry)
    diff = None
    if not args.no_verify:
        next(step)
        bar.set_postfix_str(steps[3])
        diff = verify_export(frozen, args.format, path, batch=args.batch, seed=args.seed,
                             relative=calibration is not None)
    bar.close()
    size = size_of(path)
    tolerance = 0.0 if args.format in ("package", "torch-export", "torchscript") else 1e-4
    measure = "max |diff|"
    if calibration is not None:
        tolerance, measure = QDQ_TOLERANCE, "max |diff| / max |ref| (int8 activations)"
    verdict = "skipped" if diff is None else (f"ok, {measure} {diff:.3g}" if diff <= tolerance
                                              else f"FAILED, {measure} {diff:.3g}")
    rows = [("format", "file", "size", "vs fp32", "verification"),
            (args.format, str(path), f"{size:,} B", f"{baseline / size:.2f}x smaller" if size else "-", verdict)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    return 0 if diff is None or diff <= tolerance else 1


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
