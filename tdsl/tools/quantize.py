"""`tdsl quantize`: post-training quantisation from the command line, with memory and
sparsity reports (the quantisation is `tdsl.precision.quantize`)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tdsl.errors import TdslError
from tdsl.package.files import write_atomic
from tdsl.tools.common import (SEED, DEFAULT_PRECISION, PRECISION_DEFAULT, add_force_arg, add_model_arg, add_trit_format_arg,
                               command_main, no_package, params_from, read_weights_file, refuse_overwrite, resolve_model,
                               trit_format)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("quantize", help="quantise a model (fp32, fp16, int8, ternary, mixed) and report its memory")
    add_model_arg(p, "a zoo model name (see `tdsl models`), a .tdsl / .tri file, or - for DSL text on stdin")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a parameter of the entry layer (repeatable), e.g. --param num_classes=10")
    p.add_argument("--entry", help="the layer to build (default: the last one in the file)")
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=["fp32", "fp16", "int8", "ternary", "mixed"],
                   help=PRECISION_DEFAULT)
    p.add_argument("--policy", default="default", choices=["default", "all", "none"],
                   help="ternary policy: default keeps the first and last layers at fp16")
    p.add_argument("--override", default="", metavar="'GLOB=PREC ...'",
                   help="per-layer precisions, e.g. 'conv1=fp16 layer4.*=int8' (first match wins)")
    p.add_argument("--threshold", default="twn", help="twn, absmean, fixed=<delta> or sparsity=<fraction>")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                       help="one ternary scale per output channel (default)")
    group.add_argument("--per-tensor", dest="per_channel", action="store_false",
                       help="one ternary scale per weight tensor")
    add_trit_format_arg(p, "--format")
    p.add_argument("--weights", help="fp32 weights (.safetensors) to quantise; default: the model's initialisation")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the initialisation when no --weights")
    p.add_argument("--pipeline-all", action="store_true",
                   help="run fp32 -> fp16 -> int8 -> ternary -> mixed and print one memory row per precision")
    p.add_argument("--report", metavar="OUT.json", help="write the reports as JSON")
    p.add_argument("-o", "--output", metavar="OUT.safetensors", help="save the frozen state dict")
    add_force_arg(p)
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    import torch

    from tdsl.model.precision import PIPELINE_ALL, quantize, summary_table

    refuse_overwrite(args.output, args.force)
    refuse_overwrite(args.report, args.force, "--report")
    args.model = no_package(resolve_model(args), "quantize").value
    fmt = trit_format(args, "--format", "quantize")
    if args.output and not args.output.endswith(".safetensors"):
        raise TdslError(f"--output must be a .safetensors file, got '{args.output}'")
    params = params_from(args)
    torch.manual_seed(args.seed)
    weights: Any = args.weights and read_weights_file(args.weights)
    if weights is None:
        from tdsl.model.compiled import compile as compile_

        weights = compile_(args.model, entry=args.entry, params=params, pipeline="shape-infer").to_torch().state_dict()
    options = dict(policy=args.policy, override=args.override, threshold=args.threshold,
                   per_channel=args.per_channel, format=fmt, params=params, weights=weights,
                   entry=args.entry)
    stages = list(PIPELINE_ALL) if args.pipeline_all else [args.precision]
    frozen = {p: quantize(args.model, precision=p, **options) for p in stages}
    report: dict[str, Any] = {"model": args.model, "params": params, "trit_format": fmt}
    if args.pipeline_all:
        print(summary_table(frozen))
        print()
        report["pipeline"] = {p: f.memory_report().to_dict() for p, f in frozen.items()}
    chosen = frozen[args.precision if args.precision in frozen else stages[-1]]
    memory, sparsity = chosen.memory_report(), chosen.sparsity_report()
    print(f"memory ({chosen.precision}, {fmt}):")
    print(memory.table())
    print()
    print("sparsity:")
    print(sparsity.table())
    report.update(precision=chosen.precision, memory=memory.to_dict(), sparsity=sparsity.to_dict())
    if args.report:
        write_atomic(args.report, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.report}", file=sys.stderr)
    if args.output:
        chosen.save(args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
