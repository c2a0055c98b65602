"""`tdsl bench llm`: prefill and decode tokens/s of BitNet-style decoders (random weights),
tdsl's Numba runtime (b1.58: packed 2-bit ternary projections, int8 per-token activations,
KV cache) against torch eager fp32, bf16 and int8 dynamic (`quantize_dynamic` on nn.Linear).

    python benchmarks/bench_llm.py --sizes 125m 700m 2b4t --out docs/results   # the committed table
    python benchmarks/bench_llm.py --quick                                      # a tiny decoder: it runs

`2b4t` has the shapes of microsoft/bitnet-b1.58-2B-4T (d 2560, 30 layers, 20 heads, 5 kv
heads, hidden 6912, relu2-gated MLP, vocab 128256, rope theta 500000, tied head). tdsl runs
it as `tdsl import` would leave it (package storage built directly in numpy: random trits,
scales, a float32 embedding and an fp16 head), so no float model of 2.4 B parameters is made.
`tdsl-b158` reads the head as the generator does by default (`head="auto"`: fp16, since the
stored head is fp16); `tdsl-b158-int8head` is the same with `Generator(head="int8")`.

Each (size, contender) runs in its own child process (`common.run_child`, KERNELS.md
"Pitfalls") with `--threads` threads. The torch contenders run a plain nn.Module of the same
architecture (`TorchDecoder`, nn.Linear without bias, with a KV cache), since dynamic int8
quantises nn.Linear modules; tdsl runs the zoo's `bitnet.tdsl` through `Generator`. Prefill:
a prompt of `--prompt` tokens, median of `--repeats` calls. Decode: median time of one
`decode_step` over `--decode` tokens after that prompt. "read MB/token" is what one decode
step streams as that contender stores it: every projection, the LM head and one embedding row.
"min MB/token" is the least a runtime with that storage must read: for tdsl, the projections
at 2 bits a weight (`min_bytes`), the head at the bytes the generator reads (fp16: 2 a weight;
int8: 1 plus a float32 scale per row) and one embedding row; for torch, its own read bytes.
"of roofline" is min MB/token x tokens/s over the measured read bandwidth (a 2-thread Numba
sum over 1 GiB): the share of the machine's bandwidth the decode speed reaches, counted
honestly (padding, scales and other bytes a tighter kernel could skip are not credited).
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
    "2b4t": {"vocab": 128256, "d": 2560, "layers": 30, "heads": 20, "kv_heads": 5, "hidden": 6912, "swiglu": False,
             "gated": True, "base": 500000.0, "eps": 1e-5},
}
CONTENDERS = ("tdsl-b158", "tdsl-b158-int8head", "torch-fp32", "torch-bf16", "torch-int8dyn")


def projection_weights(p: dict[str, Any]) -> int:
    """Weights of every block's projections (the ternary ones)."""
    d, kv = p["d"], p["kv_heads"] * (p["d"] // p["heads"])
    gated = p["swiglu"] or p.get("gated", False)
    return p["layers"] * (2 * d * d + 2 * d * kv + (3 if gated else 2) * d * p["hidden"])


def parameters(p: dict[str, Any]) -> int:
    """Parameters of the zoo decoder with these sizes (tests/unit/models/test_transformers.py),
    the head counted apart from the embedding."""
    d = p["d"]
    return 2 * p["vocab"] * d + projection_weights(p) + p["layers"] * (3 * d + p["hidden"]) + d


def min_bytes(p: dict[str, Any], head: str = "fp16") -> int:
    """The least a b1.58 decode step reads: 2-bit projections, the head at fp16 (2 bytes a
    weight) or int8 (1 byte a weight and a float32 scale per row), one float32 embedding row."""
    vocab, d = p["vocab"], p["d"]
    head_bytes = {"fp16": 2 * vocab * d, "int8": vocab * d + 4 * vocab}[head]
    return projection_weights(p) // 4 + head_bytes + 4 * d


# ----------------------------------------------------------------------------- children


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def random_package(p: dict[str, Any]) -> Any:
    """A b1.58 decoder package in memory, as `tdsl import` stores one: random trits with
    absmean-like scales, a float32 embedding, an fp16 head (numpy only; no float model)."""
    import numpy as np

    from tdsl.models import zoo_path
    from tdsl.package.layout import expected_tensors
    from tdsl.package.reader import LoadedPackage, build_frozen_program
    from tdsl.runtime.packing import pack

    source = zoo_path("bitnet").read_text(encoding="utf-8")
    compiled = build_frozen_program(source, entry="BitNetDecoder", params=p, pipeline="shape-infer,ternarize{policy=b158}",
                                    format="2bit")
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for key, spec in expected_tensors(compiled.module).items():
        if key.endswith("_packed"):
            rows = spec.shape[0]
            cols = spec.shape[1] * 4  # every zoo width is a multiple of 4: no padding trits
            arrays[key] = pack(rng.integers(-1, 2, (rows, cols), dtype=np.int8), "2bit")
        elif key.endswith("_scale"):
            arrays[key] = np.array(0.02, np.float32)
        elif spec.dtype == "float16":
            arrays[key] = (rng.standard_normal(spec.shape, dtype=np.float32) * 0.02).astype(np.float16)
        elif len(spec.shape) == 1:
            arrays[key] = np.ones(spec.shape, np.float32)
        else:
            arrays[key] = rng.standard_normal(spec.shape, dtype=np.float32)
    return LoadedPackage(Path("<memory>"), {"freeze": {"format": "2bit"}}, compiled, arrays)


def child_tdsl(p: dict[str, Any], args: argparse.Namespace, head: str) -> dict[str, Any]:
    import numpy as np

    from tdsl.backends.numba.generate import Generator
    from tdsl.backends.numba.plan import Kernel

    run = random_package(p).deploy()
    gen = Generator(run, capacity=args.prompt + args.decode + 8, head=head)
    weight_bytes = gen.head_bytes + 4 * p["d"] + sum(w.nbytes for s in run.plan.steps
                                                     if s.kind is Kernel.LINEAR_TERNARY for w in s.weights.values())
    prompt = np.random.default_rng(0).integers(0, p["vocab"], (1, args.prompt)).astype(np.int32)
    gen.generate(prompt, 2)  # compile every kernel for both shapes
    prefill = _timed(lambda: gen.prefill(prompt, last_only=True), args.repeats)
    gen.prefill(prompt, last_only=True)
    token = np.zeros((1, 1), np.int32)
    steps = []
    for _ in range(args.decode):
        t0 = time.perf_counter()
        gen.decode_step(token)
        steps.append(time.perf_counter() - t0)
    return {"prefill_s": prefill, "decode_s": sorted(steps)[len(steps) // 2], "weight_bytes": weight_bytes,
            "head": gen.head}


PARTS = ("projections", "head", "attention", "norms", "rope", "other steps", "Python between steps")


def child_profile(p: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Where one decode step's and one prefill's time goes: every plan step of the generator
    timed apart (decode: its prepared closure; prefill: its handler, or the executor's runner),
    grouped into PARTS; "Python between
    steps" is the rest of the wall time (the plan loop, views, argument passing). Decode: medians
    over `decode` steps; prefill (under "prefill"): the fastest of `repeats` prompts, each part
    its own minimum (the machine is shared: the minimum is the least disturbed)."""
    import numpy as np

    from tdsl.backends.numba.executor import CPU_RUNNERS
    from tdsl.backends.numba.generate import Generator
    from tdsl.backends.numba.plan import Kernel
    from tdsl.dialects import tdsl as t

    run = random_package(p).deploy()
    gen = Generator(run, capacity=args.prompt + args.decode + 8)
    spent = dict.fromkeys(PARTS[:-1], 0.0)

    def part(step) -> str:
        if step.kind is Kernel.LINEAR_TERNARY:
            return "projections"
        if step.output == run.plan.outputs[0]:
            return "head"
        kinds = {t.AttentionOp: "attention", t.RmsNormOp: "norms", t.RotaryOp: "rope"}
        return kinds.get(type(step.op), "other steps")

    def timed(step, name: str):
        inner = gen.handlers.get(id(step))

        def run_step(step, ins, y) -> None:
            t0 = time.perf_counter()
            if inner is None:
                CPU_RUNNERS[step.kind](step, ins, y, gen._ctx)
            else:
                inner(step, ins, y)
            spent[name] += time.perf_counter() - t0
        return run_step

    def sample(call) -> dict[str, float]:
        for k in spent:
            spent[k] = 0.0
        t0 = time.perf_counter()
        call()
        total = time.perf_counter() - t0
        return {**spent, "Python between steps": total - sum(spent.values()), "total": total}

    def hook(step, call):
        name = part(step)

        def timed_call() -> None:
            t0 = time.perf_counter()
            call()
            spent[name] += time.perf_counter() - t0
        return timed_call

    # decode: the prepared closures a decode step runs, each wrapped (Generator.step_hook); a
    # replaced handler would run as itself instead of its closure
    decoder = Generator(run, capacity=args.prompt + args.decode + 8)
    decoder.step_hook = hook
    for step in run.plan.steps:  # prefill: every handler (or runner) timed
        if not step.is_view:
            gen.handlers[id(step)] = timed(step, part(step))
    prompt = np.random.default_rng(0).integers(0, p["vocab"], (1, args.prompt)).astype(np.int32)
    gen.generate(prompt, 2)
    prefills = [sample(lambda: gen.prefill(prompt, last_only=True)) for _ in range(getattr(args, "repeats", 3))]
    decoder.generate(prompt, 2)
    token = np.zeros((1, 1), np.int32)
    samples = [sample(lambda: decoder.decode_step(token)) for _ in range(args.decode)]
    keys = (*PARTS, "total")
    return ({k: float(np.median([s[k] for s in samples])) for k in keys} | {"head_mode": gen.head}
            | {"prefill": {k: float(min(s[k] for s in prefills)) for k in keys}})


def torch_decoder(p: dict[str, Any]):
    """The zoo decoder's architecture as plain torch with a KV cache (nn.Linear, no bias)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tdsl.backends.torch.sequence import rope

    d, h, kvh = p["d"], p["heads"], p["kv_heads"]
    hd, base = d // h, p.get("base", 10000.0)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn_norm, self.mlp_norm = nn.RMSNorm(d), nn.RMSNorm(d)
            self.q, self.k, self.v = nn.Linear(d, d, False), nn.Linear(d, kvh * hd, False), nn.Linear(d, kvh * hd, False)
            self.attn_sub, self.o = nn.RMSNorm(d), nn.Linear(d, d, False)
            self.up, self.gate = nn.Linear(d, p["hidden"], False), nn.Linear(d, p["hidden"], False)
            self.act = (lambda g: F.relu(g).square()) if p.get("gated") else F.silu
            self.mlp_sub, self.down = nn.RMSNorm(p["hidden"]), nn.Linear(p["hidden"], d, False)

        def forward(self, x, cache, offset):
            n, t, _ = x.shape
            a = self.attn_norm(x)
            q = rope(self.q(a), h, base, offset).reshape(n, t, h, hd).transpose(1, 2)
            k = rope(self.k(a), kvh, base, offset).reshape(n, t, kvh, hd).transpose(1, 2)
            v = self.v(a).reshape(n, t, kvh, hd).transpose(1, 2)
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=True)
            x = x + self.o(self.attn_sub(y.transpose(1, 2).reshape(n, t, d)))
            m = self.mlp_norm(x)
            return x + self.down(self.mlp_sub(self.act(self.gate(m)) * self.up(m)))

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
            return self.head(self.norm(x[:, -1:]))  # the next token's logits, as generate keeps them

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
    weight_bytes = elem * (parameters(p) - p["vocab"] * p["d"] + p["d"])  # projections, head, an embedding row
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
    return {"prefill_s": seconds, "decode_s": sorted(steps)[len(steps) // 2], "weight_bytes": weight_bytes,
            "head": dtype}


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
    ap.add_argument("--profile", action="store_true",
                    help="instead of the table: where one tdsl decode step's and one prefill's time goes, per size (printed)")
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
        if args.child == "profile":
            result = child_profile(p, args)
        elif args.child.startswith("tdsl-"):
            result = child_tdsl(p, args, "int8" if args.child.endswith("int8head") else "auto")
        else:
            result = child_torch(p, args.child.split("-")[1], args)
        emit_child_result(result)
        return 0

    script = Path(__file__).resolve()
    common = ["--prompt", str(args.prompt), "--decode", str(args.decode), "--repeats", str(args.repeats),
              "--threads", str(args.threads)]
    if args.profile:
        for size in args.sizes:
            print(profile_table(size, run_child(script, ["--child", "profile", "--size", size, *common], args.threads,
                                                timeout=7200), args))
        return 0
    bandwidth = run_child(script, ["--child", "bandwidth"], args.threads)["bytes_per_s"]
    rows = []
    for size in args.sizes:
        for who in args.contenders:
            try:
                r = run_child(script, ["--child", who, "--size", size, *common], args.threads, timeout=7200)
            except RuntimeError as e:  # one contender over the memory bound (or failing) keeps the others' rows
                print(f"{size} {who}: {e}", file=sys.stderr, flush=True)
                rows.append({"size": size, "contender": who, "params": parameters(SIZES[size]), "error": str(e)})
                continue
            r.update(size=size, contender=who, params=parameters(SIZES[size]))
            r["min_bytes"] = min_bytes(SIZES[size], r["head"]) if who.startswith("tdsl-") else r["weight_bytes"]
            print(json.dumps(r), file=sys.stderr, flush=True)
            rows.append(r)
    report(rows, bandwidth, args)
    return 0


def profile_table(size: str, r: dict[str, Any], args: argparse.Namespace) -> str:
    def table(parts: dict[str, float]) -> str:
        rows = [[part, f"{1e3 * parts[part]:.2f}", f"{100 * parts[part] / parts['total']:.0f}%"] for part in PARTS]
        rows.append(["wall", f"{1e3 * parts['total']:.2f}", "100%"])
        return markdown_table(["part", "ms", "share"], rows)

    pre = r["prefill"]
    return "\n".join([f"{size}, head {r['head_mode']}, {args.threads} threads, median of {args.decode} decode steps "
                      f"after a {args.prompt}-token prompt:", "", table(r), "",
                      f"{size}, prefill of {args.prompt} tokens ({args.prompt / pre['total']:.1f} tokens/s), "
                      f"best of {args.repeats} (each part its own minimum):", "", table(pre), ""])


NOTES = "## Notes"
"""Where the hand-written part of bench_llm.md starts: `report` keeps it when it rewrites the table."""


def report(rows: list[dict[str, Any]], bandwidth: float, args: argparse.Namespace) -> None:
    table, notes = [], []
    for r in rows:
        if "error" in r:
            notes.append(f"{r['size']} {r['contender']}: not measured: {r['error'].split(' ', 3)[-1]}")
            table.append([r["size"], f"{r['params'] / 1e6:.0f} M", r["contender"]] + ["–"] * 9)
            continue
        decode = 1.0 / r["decode_s"]
        base = {c["contender"]: c for c in rows if c["size"] == r["size"] and "error" not in c}
        vs = [f"{base[k][key] / r[key]:.2f}x" if k in base else "–"
              for k, key in (("torch-fp32", "decode_s"), ("torch-int8dyn", "decode_s"), ("torch-int8dyn", "prefill_s"))]
        table.append([r["size"], f"{r['params'] / 1e6:.0f} M", r["contender"], r["head"],
                      f"{args.prompt / r['prefill_s']:.1f}", f"{decode:.2f}", f"{r['weight_bytes'] / 1e6:.0f}",
                      f"{r['min_bytes'] / 1e6:.0f}", f"{100 * r['min_bytes'] * decode / bandwidth:.0f}%", *vs])
    text = "\n".join([
        "# Decoder speed: tdsl Numba (b1.58) vs torch eager, batch 1",
        "",
        f"Prompt {args.prompt} tokens (prefill: median of {args.repeats}, every layer on every prompt token and the "
        f"head on the last one, as generation runs it, for each contender); decode: median of {args.decode} "
        f"steps after it; {args.threads} threads, one child process per row; random weights.",
        f"Measured read bandwidth (roofline): {bandwidth / 1e9:.1f} GB/s.",
        "",
        markdown_table(["size", "params", "contender", "head", "prefill tok/s", "decode tok/s", "read MB/token",
                        "min MB/token", "of roofline", "decode vs fp32", "decode vs int8dyn",
                        "prefill vs int8dyn"], table),
        "",
        "read MB/token: the weights one decode step streams as the contender stores them (projections, head, one "
        "embedding row); min MB/token: for tdsl the least a b1.58 runtime with that head reads (2-bit projections, "
        "head at 2 bytes a weight for fp16, 1 plus a float32 scale per row for int8, one embedding row), for torch "
        "its own read bytes; of roofline: min MB/token x decode tok/s / measured bandwidth.",
        *(["", *notes] if notes else []),
        "",
        "Regenerate: `python benchmarks/bench_llm.py --sizes " + " ".join(args.sizes) + f" --threads {args.threads}"
        + f" --prompt {args.prompt} --decode {args.decode} --repeats {args.repeats} --out docs/results` "
        "(or `tdsl bench llm`).",
        "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "bench_llm.md"
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    if f"\n{NOTES}" in old:
        text += "\n" + old[old.index(f"\n{NOTES}") + 1:]
    write_text_atomic(target, text)
    write_json(args.out / "bench_llm.json", {"machine": machine_info(args.threads), "bandwidth_bytes_per_s": bandwidth,
                                              "rows": rows})
    print(text)


if __name__ == "__main__":
    sys.exit(main())
