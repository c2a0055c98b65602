"""`tdsl`: the main jobs (compile, run, models) from the command line.

A thin layer over the Python API. User errors print one diagnostic and exit 1; output
files are written to a temporary name and renamed, so a failure never leaves half a file.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from tdsl.errors import TdslError
from tdsl.tools.common import parse_param, write_atomic


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    return dict(parse_param(p) for p in (args.param or []))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a zoo model name (see `tdsl models`), or a .tdsl / .tri file")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a parameter of the entry layer (repeatable), e.g. --param num_classes=10")
    p.add_argument("--entry", help="the layer to build (default: the last one in the file)")
    p.add_argument("-p", "--pipeline", default=None,
                   help="pass pipeline, e.g. 'shape-infer,canonicalize' (default)")
    p.add_argument("--print-ir-after-all", action="store_true",
                   help="print the IR after IR generation and after every pass")


def _compile(args: argparse.Namespace):
    from tdsl.api import compile as compile_, print_ir

    def show(name: str, module: Any) -> None:
        if args.print_ir_after_all:
            print(f"// -----// IR after {name} //----- //")
            print(print_ir(module))

    return compile_(args.model, entry=args.entry, params=params_from(args),
                    pipeline=args.pipeline, after_pass=show)


def cmd_compile(args: argparse.Namespace) -> int:
    model = _compile(args)
    if args.emit == "torch":
        text = model.torch_source
    elif args.emit == "generic":
        text = model.generic_ir()
    else:
        text = model.ir
    if args.output:
        write_atomic(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    elif not args.print_ir_after_all or args.emit != "mlir":
        sys.stdout.write(text)
    return 0


def input_shape_for(model: Any, batch: int, override: str | None) -> list[int]:
    """The entry forward's input shape, with dynamic dims (the batch) set to `batch`."""
    from tdsl.dialects.tdsl import dims_of, entry_layer

    if override:
        try:
            return [int(x) for x in override.split(",")]
        except ValueError:
            raise TdslError(f"--input-shape expects integers like 1,3,32,32, got '{override}'") from None
    fwd = entry_layer(model.module).forward
    inputs = fwd.function_type.inputs.data
    if len(inputs) != 1:
        raise TdslError(f"the entry layer takes {len(inputs)} inputs; `tdsl run` feeds one")
    dims = dims_of(inputs[0])
    if dims is None:
        raise TdslError("the input's rank is not known: give --input-shape, e.g. --input-shape 2,8")
    return [batch if d is None or d < 0 else d for d in dims]


def input_dtype(model: Any) -> Any:
    """The torch dtype of the entry forward's (first) input, as the program declares it."""
    import torch

    from tdsl.dialects.tdsl import element_type_of, entry_layer

    t = entry_layer(model.module).forward.function_type.inputs.data[0]
    return {"f16": torch.float16, "i8": torch.int8, "i32": torch.int32}.get(
        str(element_type_of(t)), torch.float32)


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    model = _compile(args)
    t0 = time.perf_counter()
    net = model.to_torch().eval()
    n_params = sum(p.numel() for p in net.parameters())
    from tdsl.dialects.tdsl import entry_layer

    n_inputs = len(entry_layer(model.module).forward.function_type.inputs.data)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        if n_inputs == 0:
            out = net()
            shape_txt = "()"
        else:
            shape = input_shape_for(model, args.batch, args.input_shape)
            x = torch.randn(*shape, dtype=input_dtype(model))
            out = net(x)
            shape_txt = "x".join(map(str, shape))
    elapsed = (time.perf_counter() - t0) * 1e3
    print(f"model: {model.entry} ({model.filename})")
    print(f"parameters: {n_params:,}")
    print(f"input: {shape_txt}")
    if isinstance(out, dict):
        for k, v in out.items():
            print(f"output {k}: {v.tolist()}")
    else:
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            print(f"output: shape {list(o.shape)}, dtype {str(o.dtype).replace('torch.', '')}, "
                  f"mean {o.float().mean().item():.6g}, std {o.float().std().item() if o.numel() > 1 else 0.0:.6g}")
    print(f"build + forward: {elapsed:.1f} ms")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tdsl.models import list_models, zoo_path

    for name in list_models():
        first = zoo_path(name).read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
        print(f"{name:14s} {first}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdsl", description="tdsl: ternary neural network compiler")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a model and print its IR or emitted PyTorch code")
    _add_model_args(p)
    p.add_argument("--emit", choices=["mlir", "generic", "torch"], default="mlir")
    p.add_argument("-o", "--output", help="write the output here instead of stdout")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="compile a model, build it in PyTorch and run one forward pass")
    _add_model_args(p)
    p.add_argument("--batch", type=int, default=2, help="batch size for the dynamic batch dim")
    p.add_argument("--input-shape", help="full input shape, e.g. 1,3,32,32")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("models", help="list the shipped zoo models")
    p.set_defaults(func=cmd_models)

    from tdsl.train.cli import add_train_parser
    add_train_parser(sub)
    from tdsl.publish.cli import add_publish_parsers
    add_publish_parsers(sub)
    from tdsl.precision_cli import add_quantize_parser
    add_quantize_parser(sub)
    from tdsl.tools.bench import add_bench_parser
    add_bench_parser(sub)
    from tdsl.package.cli import add_export_parser
    add_export_parser(sub)
    return parser


def run_main(fn: Callable[[], int]) -> int:
    """Run a CLI body: user errors print one diagnostic and give exit status 1."""
    try:
        return fn()
    except TdslError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code in (0, None) else 1
    return run_main(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
