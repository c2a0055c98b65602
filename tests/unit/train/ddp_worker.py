"""One replica of the 2-process DDP test (run by torchrun), or the single-process reference.

Run as a script: `python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py OUT` writes
`OUT/rank<r>.json` with the per-step losses and a hash of the parameters; without torchrun it
is the same run in one process. The test also imports it (by path) for `run`.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

N_TRAIN = 256
CONFIG = dict(epochs=2, batch_size=45, lr=0.1, momentum=0.9, schedule="cosine", warmup_steps=2,
              clip_norm=5.0, progress=False, device="cpu", seed=0)


def param_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def run(out: Path | None) -> dict[str, Any]:
    """Train a 64-16-10 MLP on digits (no dropout: each rank would draw its own masks).

    A plain torch MLP, not `tdsl.compile("mlp")`, so that this test measures the trainer alone.
    """
    from tdsl.train.data import load_digits
    from tdsl.train.distributed import init_distributed, shutdown
    from tdsl.train.trainer import TrainConfig, Trainer

    env = init_distributed()
    try:
        d = load_digits()
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
        t = Trainer(net, TrainConfig(**CONFIG), (d.x_train[:N_TRAIN], d.y_train[:N_TRAIN]),
                    (d.x_test[:90], d.y_test[:90]), out_dir=out / "run" if out else None, dist=env)
        result = t.fit()
        record = {"rank": env.rank, "world_size": env.world_size, "losses": t.step_losses,
                  "hash": param_hash(t.model), "test_acc": result.test_acc}
    finally:
        shutdown(env)
    if out is not None:
        (out / f"rank{env.rank}.json").write_text(json.dumps(record))
    return record


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(Path(sys.argv[1]))
