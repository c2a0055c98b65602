"""`tdsl run`: compile a model, build it in PyTorch and run one forward pass on random input."""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from tdsl.errors import TdslError
from tdsl.signature import check_memory, check_shapes, forward_signature
from tdsl.tools.common import BATCH, SEED, add_model_args, command_main, compile_model, resolve_model


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="compile a model (or load a package), build it in PyTorch and run one "
                                   "forward pass")
    add_model_args(p)
    p.add_argument("--batch", type=BATCH, default=2, help="batch size for the dynamic batch dim")
    p.add_argument("--input-shape", help="full input shape, e.g. 1,3,32,32")
    p.add_argument("--seed", type=SEED, default=0)
    p.set_defaults(func=cmd_run)


def input_shape_for(model: Any, batch: int, override: str | None) -> list[int]:
    """The entry forward's input shape, with dynamic dims (the batch) set to `batch`."""
    from tdsl.dialects.tdsl import entry_layer
    from tdsl.package.layout import example_shapes

    if override:
        dims = override.split(",")
        if not all(d.strip().isdigit() and len(d.strip()) <= 12 and int(d) >= 1 for d in dims):
            raise TdslError(f"--input-shape expects positive integers like 1,3,32,32, got '{override[:80]}'")
        return [int(d) for d in dims]
    fwd = entry_layer(model.module).forward
    inputs = fwd.function_type.inputs.data
    if len(inputs) != 1:
        raise TdslError(f"the entry layer takes {len(inputs)} inputs; `tdsl run` feeds one")
    dims = example_shapes(model.module)[0]  # a `dynamic(example)` dim at its example
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

    target = resolve_model(args)
    model = compile_model(args, target)
    t0 = time.perf_counter()
    if target.package:  # its stored weights, not a fresh initialisation
        from tdsl.package import load

        net = load(target.value).to_torch().eval()
    else:
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
            dtype = input_dtype(model)
            # refused before the input exists: filling a random input of a wrong huge shape took minutes
            check_shapes(forward_signature(model.module), [shape], str(dtype).removeprefix("torch."))
            check_memory(math.prod(shape) * dtype.itemsize, f"the random input of shape {shape}")
            x = torch.randn(*shape, dtype=dtype) if dtype.is_floating_point else torch.randint(-1, 2, shape, dtype=dtype)
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


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
