"""Shared machinery of the accuracy tables (`accuracy_digits.py`, `accuracy_mnist1d.py`).

A *row* is (dataset, model, precision, policy, threshold, per-channel, recipe); a *run* is a
row at one seed. FP32 runs come first (one per model and seed): their weights initialise the
`finetune` / `calibrate` runs and teach the `distill` runs of the same seed. Every finished
run is appended to the JSON file at once (so a long grid can be resumed with `--resume`),
and the Markdown table is rewritten from all runs at the end.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Row:
    dataset: str
    model: str
    precision: str = "fp32"       # fp32 | ternary
    policy: str = "-"             # default | all (ternary only)
    threshold: str = "twn"
    per_channel: bool = True
    recipe: str = "fp32"
    params: tuple = ()            # model parameters as ((name, value), ...)
    epochs: int = 10
    lr: float = 1e-3
    max_seeds: int | None = None  # run only the first N seeds (a cheaper, exploratory row)

    @property
    def key(self) -> str:
        p = "fp32" if self.precision == "fp32" else (
            f"ternary/{self.policy}/{self.threshold}/{'per-channel' if self.per_channel else 'per-tensor'}")
        params = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.dataset}|{self.model}{'(' + params + ')' if params else ''}|{p}|{self.recipe}"

    @property
    def fp32_key(self) -> str:
        return Row(self.dataset, self.model, params=self.params, epochs=self.epochs).key.rsplit("|", 1)[0]


@dataclass
class Settings:
    batch_size: int
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    threads: int = 1
    data_seed: int = 0
    extra: dict = field(default_factory=dict)


def load_data(dataset: str, model: str, data_seed: int):

    from tdsl.train.data import load_digits
    from tdsl.train.recipes import mnist1d_dataset

    if dataset == "digits":
        d = load_digits("image" if model == "lenet" else "flat", seed=data_seed)
        return (d.x_train, d.y_train), (d.x_test, d.y_test)
    if dataset == "mnist1d":
        d = mnist1d_dataset(seed=data_seed)
        x, xt = d.x_train, d.x_test
        if model.endswith("cnn"):
            x, xt = x[:, None, :], xt[:, None, :]
        return (x, d.y_train), (xt, d.y_test)
    raise ValueError(f"unknown dataset {dataset}")


_COMPILED: dict[tuple, Any] = {}


def cached_compile(model: str, precision: str = "ternary", **kw: Any) -> Any:
    """`recipes.compile_for`, memoised per process (a grid compiles each program once)."""
    from tdsl.train.recipes import compile_for

    key = (model, precision, tuple(sorted((k, repr(v)) for k, v in kw.items())))
    if key not in _COMPILED:
        _COMPILED[key] = compile_for(model, precision, **kw)
    return _COMPILED[key]


def run_one(row: Row, seed: int, settings: Settings, init_path: str | None) -> dict[str, Any]:
    """Train one row at one seed; returns the run's figures (and saves FP32 weights)."""
    import torch

    torch.set_num_threads(settings.threads)
    from tdsl.train.recipes import Recipe, evaluate, prepare
    from tdsl.train.trainer import TrainConfig

    train, test = load_data(row.dataset, row.model, settings.data_seed)
    config = TrainConfig(epochs=row.epochs, batch_size=settings.batch_size, optimizer=settings.optimizer,
                         lr=row.lr, weight_decay=settings.weight_decay, schedule="cosine", seed=seed,
                         progress=False, health="warn", device="cpu")
    recipe = Recipe.parse("scratch" if row.recipe == "fp32" else row.recipe)
    init = None
    if recipe.needs_init or recipe.distill:
        from safetensors.torch import load_file
        init = load_file(init_path)
    t0 = time.perf_counter()
    prepared = prepare(row.model, recipe, config, train, precision=row.precision,
                       policy=row.policy if row.precision != "fp32" else "default", threshold=row.threshold,
                       per_channel=row.per_channel, params=dict(row.params), init=init,
                       compiler=cached_compile)
    result = prepared.trainer(train, test).fit()
    seconds = time.perf_counter() - t0
    acc = evaluate(prepared.module, *test)
    frozen = prepared.freeze()
    mem = frozen.memory_report()
    size = mem.total + prepared.extra_scale_bytes
    frozen_acc = evaluate(frozen, *test)
    sparsity = frozen.sparsity_report().overall if row.precision != "fp32" else 0.0
    out = {"row": row.key, "seed": seed, "accuracy": acc, "frozen_accuracy": frozen_acc,
           "final_train_loss": result.loss, "first_train_loss": result.history[0]["loss"],
           "steps": result.step, "seconds": round(seconds, 2), "bytes": int(size), "fp32_bytes": int(mem.fp32_total),
           "sparsity": sparsity, "config": {"epochs": prepared.config.epochs, "lr": config.lr,
                                             "warmup_steps": prepared.config.warmup_steps,
                                             "batch_size": config.batch_size}}
    if row.precision == "fp32" and init_path:
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous() for k, v in prepared.module.state_dict().items()}, init_path)
    return out


def _task(args: tuple) -> dict[str, Any]:
    row, seed, settings, init_path = args
    try:
        return run_one(row, seed, settings, init_path)
    except Exception as e:  # a failed run is reported, not fatal for the grid
        import traceback
        return {"row": row.key, "seed": seed, "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()}


def run_grid(rows: list[Row], seeds: list[int], settings: Settings, out_md: Path, title: str,
             notes: list[str], jobs: int = 1, resume: bool = False, weights_dir: Path | None = None) -> dict:
    """Run every row at every seed (FP32 rows first), then write the table and the JSON."""
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    json_path = out_md.with_suffix(".json")
    if weights_dir is None:  # FP32 weights shared by the runs of a seed: outside the repository
        from tdsl.train.mnist1d import cache_dir
        weights_dir = cache_dir() / "accuracy-weights" / out_md.stem
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    if resume and json_path.is_file():
        keys = {r.key for r in rows}
        runs = [r for r in json.loads(json_path.read_text())["runs"] if "error" not in r and r["row"] in keys]
    done = {(r["row"], r["seed"]) for r in runs}
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
                       f"{platform.release()}, python {platform.python_version()}",
            "seeds": seeds, "settings": asdict(settings), "rows": [asdict(r) | {"key": r.key} for r in rows]}
    try:
        import torch
        meta["torch"] = torch.__version__
    except ImportError:
        pass

    def weights(row: Row, seed: int) -> str:
        name = row.fp32_key.replace("|", "_").replace("/", "-").replace("(", "_").replace(")", "").replace(",", "_")
        return str(weights_dir / f"{name}_seed{seed}.safetensors")

    def save() -> None:
        json_path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")

    fp32_rows = [r for r in rows if r.precision == "fp32"]
    other = [r for r in rows if r.precision != "fp32"]
    for phase in (fp32_rows, other):
        tasks = []
        for row in phase:
            for seed in seeds[:row.max_seeds]:
                w = weights(row, seed)
                if (row.key, seed) in done:
                    if row.precision != "fp32" or Path(w).is_file():
                        continue
                    runs[:] = [r for r in runs if not (r["row"] == row.key and r["seed"] == seed)]
                tasks.append((row, seed, settings, w))
        if not tasks:
            continue
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                for res in pool.map(_task, tasks):
                    _record(res, runs)
                    save()
        else:
            for t in tasks:
                _record(_task(t), runs)
                save()
    save()
    out_md.write_text(render(title, rows, runs, meta, notes, json_path.name))
    return {"meta": meta, "runs": runs}


def _record(res: dict, runs: list[dict]) -> None:
    runs.append(res)
    if "error" in res:
        print(f"FAILED {res['row']} seed {res['seed']}: {res['error']}", file=sys.stderr, flush=True)
    else:
        print(f"{res['row']} seed {res['seed']}: {100 * res['accuracy']:.2f}% ({res['steps']} steps, "
              f"{res['seconds']:.0f} s)", flush=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def render(title: str, rows: list[Row], runs: list[dict], meta: dict, notes: list[str], json_name: str) -> str:
    by_row: dict[str, list[dict]] = {}
    for r in runs:
        if "error" not in r:
            by_row.setdefault(r["row"], []).append(r)
    fp32_mean = {}
    for row in rows:
        if row.precision == "fp32" and row.key in by_row:
            fp32_mean[row.fp32_key] = mean_std([100 * r["accuracy"] for r in by_row[row.key]])[0]
    lines = [f"# {title}", "", f"Written by `{meta['command']}` on {meta['date']}.", "",
             f"Machine: {meta['machine']}; torch {meta.get('torch', '?')}. Per-run figures: `{json_name}`.", "",
             "| dataset | model | precision / policy | recipe | accuracy % (mean ± std) | Δ vs FP32 (pt) "
             "| seeds | steps | sparsity | size (bytes) | size vs FP32 | frozen (packed) accuracy % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        rs = by_row.get(row.key, [])
        if not rs:
            continue
        m, s = mean_std([100 * r["accuracy"] for r in rs])
        base = fp32_mean.get(row.fp32_key)
        delta = "—" if row.precision == "fp32" or base is None else f"{m - base:+.2f}"
        prec = "fp32" if row.precision == "fp32" else (
            f"ternary / {row.policy}, {row.threshold}, {'per-channel' if row.per_channel else 'per-tensor'}")
        size = int(statistics.fmean(r["bytes"] for r in rs))
        fp32_bytes = rs[0]["fp32_bytes"]
        sp = statistics.fmean(r["sparsity"] for r in rs)
        steps = rs[0]["steps"]
        fm, fs = mean_std([100 * r["frozen_accuracy"] for r in rs])
        model = row.model + (" (" + ", ".join(f"{k}={v}" for k, v in row.params) + ")" if row.params else "")
        lines.append(f"| {row.dataset} | {model} | {prec} | {row.recipe} | {m:.2f} ± {s:.2f} | {delta} | "
                     f"{len(rs)} | {steps} | {'—' if row.precision == 'fp32' else f'{100 * sp:.1f}%'} | "
                     f"{size:,} | {size / fp32_bytes:.3f}× ({fp32_bytes / size:.1f}× smaller) | {fm:.2f} ± {fs:.2f} |")
    failed = [r for r in runs if "error" in r]
    lines.append("")
    if failed:
        lines.append(f"{len(failed)} run(s) failed: " + "; ".join(f"{r['row']} seed {r['seed']}: {r['error']}"
                                                                 for r in failed[:5]))
        lines.append("")
    lines += notes
    return "\n".join(lines).rstrip() + "\n"
