"""`tdsl train`: compile a model, train it on a dataset, write checkpoints, metrics and a plot.

Training options left unset take `TrainConfig`'s defaults, or, with `--resume`, the values
stored in the checkpoint (so a resumed run continues the same schedule); options given
explicitly override either. Under `torchrun` the same command trains with
DistributedDataParallel, rank 0 printing and writing. The training itself is `tdsl.train`
(Trainer, recipes, datasets); torch is imported only when the command runs.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tdsl.tools.common import (BATCH, SEED, add_model_arg, command_main, float_option, int_option, no_package,
                               params_from, refuse_overwrite, resolve_model)

# argparse dest -> TrainConfig field, for options whose default is "not given"
CONFIG_ARGS = {
    "epochs": "epochs", "batch_size": "batch_size", "optimizer": "optimizer", "lr": "lr",
    "momentum": "momentum", "nesterov": "nesterov", "schedule": "schedule",
    "warmup_steps": "warmup_steps", "step_size": "step_size", "gamma": "gamma",
    "clip_norm": "clip_norm", "clip_value": "clip_value", "weight_decay": "weight_decay",
    "ternary_reg": "ternary_reg", "amp": "amp", "seed": "seed", "keep_last": "keep_last",
    "health": "health", "log_every": "log_every", "device": "device",
}
DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}
STEPS, POSITIVE_STEPS = int_option(0, 2**31 - 1, "a number of steps"), int_option(1, 2**31 - 1, "a number of steps")
RATE, BOUND = float_option(0.0, 1e3, "a rate"), float_option(0.0, 1e30, "a bound")
"""Numeric option types: a negative, huge or malformed value is a usage error naming the option."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model (digits, .npz, x.npy/y.npy folder or image folder)")
    add_model_arg(p, "a zoo model name (see `tdsl models`), a .tdsl / .tri file, or - for DSL text on stdin")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a parameter of the entry layer (repeatable), e.g. --param image_size=8")
    p.add_argument("--dataset", default="digits",
                   help="'digits' (bundled), 'mnist1d' (generated offline), an .npz with x and y, a folder "
                        "with x.npy and y.npy, or an image folder root/<class>/*.png (default: digits)")
    r = p.add_argument_group("ternary QAT recipes (tdsl.train.recipes; unset: plain FP32 training)")
    r.add_argument("--recipe", help="train ternary with this recipe: auto (the measured best for --policy), scratch, "
                                    "finetune, learned_scale, calibrate, distill, long, progressive, optimal_delta, fixed_input, "
                                    "or parts joined by '+' (e.g. finetune+distill)")
    r.add_argument("--policy", choices=["default", "all"],
                   help="ternary except first/last layer (default), or every layer (all); without --recipe "
                        "it means --recipe auto")
    r.add_argument("--threshold", choices=["twn", "absmean"], help="Δ rule (default twn); implies --recipe auto")
    r.add_argument("--per-tensor", action="store_true", help="one scale per tensor; implies --recipe auto")
    r.add_argument("--init", metavar="CKPT", help="FP32 weights to start from (checkpoint or .safetensors): "
                                                  "finetune, calibrate")
    r.add_argument("--teacher", metavar="CKPT", help="FP32 teacher for distill (default: --init)")
    g = p.add_argument_group("optimisation (unset: defaults, or the checkpoint's values with --resume)")
    g.add_argument("--epochs", type=int_option(1, 10**6, 'a number of epochs'))
    g.add_argument("--batch-size", type=BATCH, help="global batch size (default 64)")
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--lr", type=RATE, help="peak learning rate (default 0.05 for sgd, 1e-3 for adamw)")
    g.add_argument("--momentum", type=float_option(0.0, 1.0, 'a momentum'), help="SGD momentum (default 0.9)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (SGD)")
    g.add_argument("--schedule", choices=["cosine", "step", "constant"], help="LR schedule (default constant)")
    g.add_argument("--warmup-steps", type=STEPS, help="linear warm-up steps before the schedule")
    g.add_argument("--step-size", type=POSITIVE_STEPS, help="step schedule: steps between decays")
    g.add_argument("--gamma", type=float_option(0.0, 1e3, 'a factor'), help="step schedule: decay factor")
    g.add_argument("--clip-norm", type=BOUND, help="clip the global gradient norm to this")
    g.add_argument("--clip-value", type=BOUND, help="clip each gradient element to [-v, v]")
    g.add_argument("--weight-decay", type=RATE, help="weight decay on weights (not biases or norms)")
    g.add_argument("--ternary-reg", type=float_option(0.0, 1e6, 'a weight'),
                   help="weight of the L2 pull of latent weights toward their nearest ternary value")
    g.add_argument("--amp", action="store_true", default=None,
                   help="mixed precision: bf16 autocast on CPU, fp16 with loss scaling on CUDA")
    g.add_argument("--seed", type=SEED, help="seed for initialisation, dropout and data order (default 0)")
    g.add_argument("--health", choices=["raise", "warn", "off"],
                   help="on NaN/Inf or exploding/vanishing gradients: stop (default), warn, or ignore")
    g.add_argument("--device", help="auto (default), cpu or cuda")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output folder (default: runs/<model>); an existing non-empty one needs "
                              "--resume or --force")
    o.add_argument("--force", action="store_true", help="train into an existing output folder, replacing its files")
    o.add_argument("--resume", metavar="CKPT",
                   help="checkpoint folder, or a checkpoints folder (its latest), to continue from")
    o.add_argument("--keep-last", type=int_option(0, 10**6, 'a count'), help="checkpoints to keep (default 3; 0 keeps all)")
    o.add_argument("--log-every", type=POSITIVE_STEPS, help="also log a metrics record every N steps")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def build_config(args: argparse.Namespace, saved: dict[str, Any] | None) -> Any:
    """TrainConfig from the checkpoint's (or the default) values plus explicit options."""
    from tdsl.train.trainer import TrainConfig

    base = asdict(TrainConfig()) if saved is None else dict(saved)
    given = {field: getattr(args, dest) for dest, field in CONFIG_ARGS.items()
             if getattr(args, dest) is not None}
    if saved is None and "lr" not in given:
        base["lr"] = DEFAULT_LR[given.get("optimizer", base["optimizer"])]
    base.update(given)
    base["progress"] = not args.no_progress
    config = TrainConfig.from_dict(base)
    config.validate()
    return config


def implied_recipe(args: argparse.Namespace) -> str | None:
    """Fill in the ternary options; the option that made a run without `--recipe` ternary.

    `--policy`, `--threshold` and `--per-tensor` only mean something for ternary QAT, so one
    of them without `--recipe` selects `--recipe auto` (the recipe measured best for the policy)
    rather than training FP32 and ignoring it; `--init`/`--teacher` need a recipe that reads
    them, so alone they are refused."""
    implied = None
    if not args.recipe:
        given = [f"--{n.replace('_', '-')}" + (f" {getattr(args, n)}" if n != "per_tensor" else "")
                 for n in ("policy", "threshold", "per_tensor") if getattr(args, n)]
        if given:
            args.recipe, implied = "auto", " ".join(given)
        elif args.init or args.teacher:
            from tdsl.errors import TdslError
            raise TdslError(f"--{'init' if args.init else 'teacher'} is read by a QAT recipe; add --recipe "
                            "(finetune, calibrate or distill)")
    args.policy = args.policy or "default"
    args.threshold = args.threshold or "twn"
    return implied


DATASET_TASKS = {"digits": "image-classification"}
"""Hub pipeline tags of the built-in data sets whose samples the IO shape alone would misname
(digits are 8x8 images, also when an MLP reads them flattened)."""


def cmd_train(args: argparse.Namespace) -> int:
    target = no_package(resolve_model(args), "train")
    args.model = target.value
    out = Path(args.out) if args.out else Path("runs") / target.name
    refuse_overwrite(out, True, "--out", folder=True)  # a file in its place or above it, a name too long
    if not args.resume and (out.is_file() or (out.is_dir() and any(out.iterdir()))):
        refuse_overwrite(out, args.force, "--out", folder=True)  # a second run would mix its checkpoints with the first's
    implied = implied_recipe(args)
    import torch

    from tdsl.model.compiled import compile as compile_
    from tdsl.train import distributed as D
    from tdsl.train.checkpoint import load_checkpoint
    from tdsl.train.data import fit_dataset, input_dims
    from tdsl.train.trainer import Trainer

    env = D.init_distributed()
    try:
        saved = load_checkpoint(args.resume).state["config"] if args.resume else None
        config = build_config(args, saved)
        model = compile_(args.model, params=params_from(args))
        data = fit_dataset(model, args.dataset, input_dims(model))
        if args.recipe:
            from tdsl.train.recipes import prepare

            run = prepare(args.model, args.recipe, config, (data.x_train, data.y_train),
                          policy=args.policy, threshold=args.threshold, per_channel=not args.per_tensor,
                          params=params_from(args), init=args.init, teacher=args.teacher)
            if args.resume:
                run.config = config  # the checkpoint's config already holds the recipe's schedule
            net, config = run.module, run.config
            trainer = run.trainer((data.x_train, data.y_train), (data.x_test, data.y_test), out_dir=out, dist=env)
        else:
            torch.manual_seed(config.seed)
            net = model.to_torch()
            trainer = Trainer(net, config, (data.x_train, data.y_train), (data.x_test, data.y_test),
                              out_dir=out, dist=env)
        if args.resume:
            trainer.load_checkpoint(args.resume)
        result = trainer.fit()
        if env.is_main:
            ckpts = trainer.ckpt.checkpoints() if trainer.ckpt else []
            print(f"model: {model.entry} ({model.filename}), "
                  f"{sum(p.numel() for p in net.parameters()):,} parameters"
                  + (f"; ternary ({args.policy} policy), recipe {run.recipe.name}" if args.recipe else "")
                  + (f" ({implied} without --recipe: --recipe auto)" if implied else ""))
            print(f"data: {data.name}, {len(data.x_train)} train / {len(data.x_test)} test samples, "
                  f"{data.num_classes} classes" + (f", {env.world_size} processes" if env.enabled else ""))
            print(f"trained {result.epoch} epochs ({result.step} steps) in {result.seconds:.1f} s; "
                  f"train loss {result.loss:.4f}, train accuracy {result.train_acc:.2%}")
            print(f"test accuracy: {result.test_acc:.2%} (test loss {result.test_loss:.4f})")
            print(f"checkpoint: {ckpts[-1] if ckpts else '-'}")
            if args.recipe:
                from tdsl.package.writer import save

                package = save(run.freeze(), out / "package", overwrite=True,  # frozen, packed
                               dataset=data.name, metrics={"accuracy": result.test_acc}, split="test",
                               task=DATASET_TASKS.get(data.name))
                print(f"package: {package} (frozen, packed; tdsl.load / tdsl export)")
            print(f"metrics: {out / 'metrics.jsonl'}, plot: {out / 'metrics.png'}")
            sys.stdout.flush()
    finally:
        D.shutdown(env)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
