"""`tdsl bench llm`: prefill and decode tokens/s of BitNet-style decoders (random weights),
tdsl's Numba runtime (b1.58: packed 2-bit ternary projections, int8 per-token activations,
KV cache) against torch eager fp32, bf16 and int8 dynamic (`quantize_dynamic` on nn.Linear).

    python benchmarks/bench_llm.py --sizes 125m 700m --out docs/results   # the committed table
    python benchmarks/bench_llm.py --quick                                 # a tiny decoder: it runs

Each (size, contender) runs in its own child process (`common.run_child`, KERNELS.md
"Pitfalls") with `--threads` threads. The torch contenders run a plain nn.Module of the same
architecture (`TorchDecoder`, nn.Linear without bias, with a KV cache), since dynamic int8
quantises nn.Linear modules; tdsl runs the zoo's `bitnet.tdsl` through `Generator`. Prefill:
a prompt of `--prompt` tokens, median of `--repeats` calls. Decode: median time of one
`decode_step` over `--decode` tokens after that prompt. "weight MB/token" is what one decode
step streams (every projection and the LM head; the embedding row is negligible), and
"roofline" the fraction of the measured read bandwidth (a 2-thread Numba sum over 1 GiB) that
the decode speed implies: MB/token x tokens/s / bandwidth.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (emit_child_result, machine_info, markdown_table, run_child,  # noqa: E402
                    write_json, write_text_atomic)

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"vocab": 256, "d": 128, "layers": 2, "heads": 4, "kv_heads": 2, "hidden": 256, "swiglu": True},
    "125m": {"vocab": 32000, "d": 768, "layers": 12, "heads": 12, "kv_heads": 4, "hidden": 2048, "swiglu": True},
    "700m": {"vocab": 32000, "d": 1536, "layers": 24, "heads": 16, "kv_heads": 4, "hidden": 4096, "swiglu": True},
}
CONTENDERS = ("tdsl-b158", "torch-fp32", "torch-bf16", "torch-int8dyn")


def parameters(p: dict[str, Any]) -> int:
    """Parameters of the zoo decoder with these sizes (tests/unit/models/test_transformers.py)."""
    d, kv = p["d"], p["kv_heads"] * (p["d"] // p["heads"])
    block = 2 * d + 2 * d * d + 2 * d * kv + d + (3 if p["swiglu"] else 2) * d * p["hidden"] + p["hidden"]
    return 2 * p["vocab"] * d + p["layers"] * block + d


# ----------------------------------------------------------------------------- children


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def child_tdsl(p: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    import tdsl
    from tdsl.backends.numba.generate import Generator
    from tdsl.backends.numba.plan import Kernel

    torch.manual_seed(0)
    compiled, net = tdsl.qat("bitnet", policy="b158", params=p)
    frozen = compiled.freeze(net)
    del net
    run = frozen.deploy()
    del frozen
    gen = Generator(run, capacity=args.prompt + args.decode + 8)
    linear = (Kernel.LINEAR_TERNARY, Kernel.LINEAR_FLOAT, Kernel.LINEAR_INT8)
    weight_bytes = sum(w.nbytes for s in run.plan.steps if s.kind in linear for w in s.weights.values())
    prompt = np.random.default_rng(0).integers(0, p["vocab"], (1, args.prompt)).astype(np.int32)
    gen.generate(prompt, 2)  # compile every kernel for both shapes
    prefill = _timed(lambda: gen.prefill(prompt), args.repeats)
    gen.prefill(prompt)
    token = np.zeros((1, 1), np.int32)
    steps = []
    for _ in range(args.decode):
        t0 = time.perf_counter()
        gen.decode_step(token)
        steps.append(time.perf_counter() - t0)
    return {"prefill_s": prefill, "decode_s": sorted(steps)[len(steps) // 2], "weight_bytes": weight_bytes}


def torch_decoder(p: dict[str, Any]):
    """The zoo decoder's architecture as plain torch with a KV cache (nn.Linear, no bias)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tdsl.backends.torch.sequence import rope

    d, h, kvh = p["d"], p["heads"], p["kv_heads"]
    hd = d // h

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn_norm, self.mlp_norm = nn.RMSNorm(d), nn.RMSNorm(d)
            self.q, self.k, self.v = nn.Linear(d, d, False), nn.Linear(d, kvh * hd, False), nn.Linear(d, kvh * hd, False)
            self.attn_sub, self.o = nn.RMSNorm(d), nn.Linear(d, d, False)
            self.up, self.gate = nn.Linear(d, p["hidden"], False), nn.Linear(d, p["hidden"], False)
            self.mlp_sub, self.down = nn.RMSNorm(p["hidden"]), nn.Linear(p["hidden"], d, False)

        def forward(self, x, cache, offset):
            n, t, _ = x.shape
            a = self.attn_norm(x)
            q = rope(self.q(a), h, 10000.0, offset).reshape(n, t, h, hd).transpose(1, 2)
            k = rope(self.k(a), kvh, 10000.0, offset).reshape(n, t, kvh, hd).transpose(1, 2)
            v = self.v(a).reshape(n, t, kvh, hd).transpose(1, 2)
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=True)
            x = x + self.o(self.attn_sub(y.transpose(1, 2).reshape(n, t, d)))
            m = self.mlp_norm(x)
            return x + self.down(self.mlp_sub(F.silu(self.gate(m)) * self.up(m)))

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(p["vocab"], d)
            self.blocks = nn.ModuleList(Block() for _ in range(p["layers"]))
            self.norm, self.head = nn.RMSNorm(d), nn.Linear(d, p["vocab"], False)

        def forward(self, ids, caches, offset):
            x = self.embed(ids)
            for block, cache in zip(self.blocks, caches):
                x = block(x, cache, offset)
            return self.head(self.norm(x))

    return Decoder()


def child_torch(p: dict[str, Any], dtype: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torch_decoder(p).eval()
    elem = 4
    if dtype == "bf16":
        model, elem = model.to(torch.bfloat16), 2
    elif dtype == "int8dyn":
        model, elem = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8), 1
    weight_bytes = elem * (parameters(p) - p["vocab"] * p["d"])  # every projection and the head
    prompt = torch.randint(0, p["vocab"], (1, args.prompt))
    token = torch.zeros((1, 1), dtype=torch.long)
    with torch.inference_mode():
        def prefill():
            caches = [[] for _ in range(p["layers"])]
            model(prompt, caches, 0)
            return caches

        prefill()
        seconds = _timed(prefill, args.repeats)
        caches = prefill()
        steps = []
        for i in range(args.decode + 2):
            t0 = time.perf_counter()
            model(token, caches, args.prompt + i)
            steps.append(time.perf_counter() - t0)
    steps = steps[2:]
    return {"prefill_s": seconds, "decode_s": sorted(steps)[len(steps) // 2], "weight_bytes": weight_bytes}


def child_bandwidth(args: argparse.Namespace) -> dict[str, Any]:
    """Read bandwidth: a parallel Numba sum over 1 GiB of uint64 (median of 5)."""
    import numba
    import numpy as np

    @numba.njit(parallel=True, cache=False)
    def total(a):
        s = 0
        for i in numba.prange(a.shape[0]):
            s += a[i]
        return s

    a = np.ones((1 << 30) // 8, np.uint64)
    total(a)
    seconds = _timed(lambda: total(a), 5)
    return {"bytes_per_s": a.nbytes / seconds}


# ----------------------------------------------------------------------------- parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the tiny decoder only, few tokens: checks that it runs")
    ap.add_argument("--sizes", nargs="+", default=["125m"], choices=list(SIZES))
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    ap.add_argument("--out", type=Path, default=Path("bench_results"))
    ap.add_argument("--repeats", type=int, default=None, help="prefill calls timed (default 5)")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens (default 64)")
    ap.add_argument("--decode", type=int, default=32, help="decode steps timed (default 32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.quick:
        args.sizes, args.prompt, args.decode = ["tiny"], 16, 8
    if args.child == "bandwidth":
        emit_child_result(child_bandwidth(args))
        return 0
    if args.child is not None:
        p = SIZES[args.size]
        result = child_tdsl(p, args) if args.child == "tdsl-b158" else child_torch(p, args.child.split("-")[1], args)
        emit_child_result(result)
        return 0

    script = Path(__file__).resolve()
    common = ["--prompt", str(args.prompt), "--decode", str(args.decode), "--repeats", str(args.repeats),
              "--threads", str(args.threads)]
    bandwidth = run_child(script, ["--child", "bandwidth"], args.threads)["bytes_per_s"]
    rows = []
    for size in args.sizes:
        for who in args.contenders:
            r = run_child(script, ["--child", who, "--size", size, *common], args.threads, timeout=7200)
            r.update(size=size, contender=who, params=parameters(SIZES[size]))
            print(json.dumps(r), file=sys.stderr, flush=True)
            rows.append(r)
    report(rows, bandwidth, args)
    return 0


def report(rows: list[dict[str, Any]], bandwidth: float, args: argparse.Namespace) -> None:
    table = []
    for r in rows:
        decode = 1.0 / r["decode_s"]
        base = {c["contender"]: c for c in rows if c["size"] == r["size"]}
        vs = [f"{base[k]['decode_s'] / r['decode_s']:.2f}x" if k in base else "–"
              for k in ("torch-fp32", "torch-int8dyn")]
        table.append([r["size"], f"{r['params'] / 1e6:.0f} M", r["contender"], f"{args.prompt / r['prefill_s']:.1f}",
                      f"{decode:.2f}", f"{r['weight_bytes'] / 1e6:.0f}",
                      f"{100 * r['weight_bytes'] * decode / bandwidth:.0f}%", *vs])
    text = "\n".join([
        "# Decoder speed: tdsl Numba (b1.58) vs torch eager, batch 1",
        "",
        f"Prompt {args.prompt} tokens (prefill: median of {args.repeats}); decode: median of {args.decode} "
        f"steps after it; {args.threads} threads, one child process per row; random weights.",
        f"Measured read bandwidth (roofline): {bandwidth / 1e9:.1f} GB/s.",
        "",
        markdown_table(["size", "params", "contender", "prefill tok/s", "decode tok/s", "weight MB/token",
                        "of roofline", "decode vs fp32", "decode vs int8dyn"], table),
        "",
        "Regenerate: `python benchmarks/bench_llm.py --sizes " + " ".join(args.sizes) + f" --threads {args.threads}"
        + " --out docs/results` (or `tdsl bench llm`).",
        "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "bench_llm.md", text)
    write_json(args.out / "bench_llm.json", {"machine": machine_info(args.threads), "bandwidth_bytes_per_s": bandwidth,
                                              "rows": rows})
    print(text)


if __name__ == "__main__":
    sys.exit(main())
