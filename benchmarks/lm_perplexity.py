"""Validation perplexity of a small byte-level BitNet decoder, FP32 vs the b1.58 recipe
(ternary projections, int8 per-token activations), same model, data and training budget.

    .venv/bin/python benchmarks/lm_perplexity.py            # writes docs/results/lm_perplexity.md

Corpus: the Python Language Reference topics shipped with CPython (`pydoc_data`, see
`tdsl.train.lm.python_docs_corpus`), bytes as tokens; the last 10% is the validation split.
Each run trains with `tdsl.train.Trainer` (AdamW, cosine schedule), then the ternary model is
frozen (packed 2-bit weights) and its perplexity measured again on the Numba runtime, with
the LM head as stored (fp16) and as the int8 head `Generator(head="int8")` may read instead.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import tdsl
from tdsl.backends.numba.generate import Generator
from tdsl.train.lm import (NextToken, encode_bytes, next_token_windows, perplexity, python_docs_corpus,
                           token_cross_entropy_sum)
from tdsl.train.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"vocab": 256, "d": 160, "layers": 4, "heads": 4, "kv_heads": 2, "hidden": 448}


def numba_perplexity(run, x: torch.Tensor, y: torch.Tensor, batch: int = 32) -> float:
    total, count = 0.0, 0
    for i in range(0, len(x), batch):
        logits = run(x[i:i + batch].numpy().astype(np.int32)).astype(np.float64)
        target = y[i:i + batch].numpy()
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total -= float(np.take_along_axis(logp, target[..., None], -1).sum())
        count += target.size
    return math.exp(total / count)


def train_one(policy: str | None, seed: int, data: tuple, args: argparse.Namespace) -> dict:
    (xt, yt), (xv, yv) = data
    torch.manual_seed(seed)
    if policy is None:
        compiled = tdsl.compile("bitnet", params=MODEL)
        net = compiled.to_torch()
    else:
        compiled, net = tdsl.qat("bitnet", policy=policy, params=MODEL)
    params = sum(p.numel() for p in net.parameters())
    if args.steps * args.batch < len(xt):  # fewer steps than an epoch: one epoch over a fixed subset
        keep = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))[:args.steps * args.batch]
        xt, yt = xt[keep], yt[keep]
    epochs = max(1, round(args.steps * args.batch / len(xt)))
    config = TrainConfig(epochs=epochs, batch_size=args.batch, optimizer="adamw", lr=args.lr, weight_decay=0.01,
                         schedule="cosine", warmup_steps=min(50, args.steps // 10), clip_norm=1.0, seed=seed,
                         progress=False)
    start = time.perf_counter()
    Trainer(NextToken(net), config, (xt, yt), loss_fn=token_cross_entropy_sum).fit()
    seconds = time.perf_counter() - start
    row = {"precision": "fp32" if policy is None else policy, "seed": seed, "params": params,
           "steps": epochs * math.ceil(len(xt) / args.batch), "train_seconds": round(seconds, 1),
           "val_ppl_torch": perplexity(net, xv, yv)}
    if policy is not None:
        frozen = compiled.freeze(net)
        row["val_ppl_numba_packed"] = numba_perplexity(frozen.deploy(), xv, yv)
        int8_head = Generator(frozen.deploy(), capacity=xv.shape[1], head="int8")  # the decode option
        row["val_ppl_numba_int8_head"] = numba_perplexity(int8_head.prefill, xv, yv)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per run (rounded to whole epochs)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "docs/results/lm_perplexity.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tokens = encode_bytes(python_docs_corpus())
    split = int(len(tokens) * 0.9)
    train = next_token_windows(tokens[:split], args.context, stride=args.context // 2)
    val = next_token_windows(tokens[split:], args.context)
    rows = [train_one(policy, seed, (train, val), args) for policy in (None, "b158") for seed in args.seeds]
    write_table(rows, args, len(tokens), split, len(train[0]), len(val[0]))


def write_table(rows: list[dict], args: argparse.Namespace, n_tokens: int, split: int, n_train: int,
                n_val: int) -> None:
    def stats(key: str, precision: str) -> str:
        vals = [r[key] for r in rows if r["precision"] == precision and key in r]
        if not vals:
            return "–"
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.3f} ± {sd:.3f}"

    fp32 = statistics.mean(r["val_ppl_torch"] for r in rows if r["precision"] == "fp32")
    tern = statistics.mean(r["val_ppl_torch"] for r in rows if r["precision"] == "b158")
    lines = [
        "# Byte-level language model: FP32 vs BitNet b1.58 (ternary) validation perplexity",
        "",
        f"Model: zoo `bitnet` {MODEL} ({rows[0]['params']:,} parameters; RMSNorm, sub-norms, squared-ReLU MLP,",
        "RoPE, GQA, no biases). Corpus: the Python Language Reference topics shipped with CPython",
        f"(`pydoc_data.topics`, {n_tokens:,} bytes = tokens); train = first 90% ({split:,} tokens, {n_train} windows",
        f"of {args.context}, stride {args.context // 2}), validation = last 10% ({n_val} windows). Same budget for both:",
        f"{rows[0]['steps']} AdamW steps of batch {args.batch}, lr {args.lr}, cosine, weight decay 0.01, clip 1.0,",
        "1 CPU thread. `b158` = `tdsl.qat(..., policy=\"b158\")`: every projection ternary (absmean, per",
        "tensor), int8 per-token activations, embedding and LM head float (fp16 head when frozen).",
        "",
        "| precision | seeds | val perplexity (torch) | val perplexity (Numba, packed 2-bit, int8 act.) "
        "| same, int8 head |",
        "|---|---|---|---|---|",
        f"| fp32 | {len(args.seeds)} | {stats('val_ppl_torch', 'fp32')} | – | – |",
        f"| b1.58 ternary | {len(args.seeds)} | {stats('val_ppl_torch', 'b158')} | "
        f"{stats('val_ppl_numba_packed', 'b158')} | {stats('val_ppl_numba_int8_head', 'b158')} |",
        "",
        f"Gap: ternary perplexity is {100 * (tern / fp32 - 1):+.1f}% of FP32's at this size and budget (mean ± sd over",
        "seeds). Per run (train s is wall time, as loaded as the machine was):",
        "",
        "| precision | seed | steps | train s | val ppl torch | val ppl Numba | val ppl Numba, int8 head |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['precision']} | {r['seed']} | {r['steps']} | {r['train_seconds']} | {r['val_ppl_torch']:.3f} | "
          + (f"{r['val_ppl_numba_packed']:.3f} | {r['val_ppl_numba_int8_head']:.3f}" if "val_ppl_numba_packed" in r
             else "– | –") + " |" for r in rows),
        "",
        "Regenerate: `.venv/bin/python benchmarks/lm_perplexity.py "
        + f"--steps {args.steps} --batch {args.batch} --context {args.context} --lr {args.lr} "
        + f"--seeds {' '.join(map(str, args.seeds))}`",
        "",
    ]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
