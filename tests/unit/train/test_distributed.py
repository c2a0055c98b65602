"""Two processes under torchrun (gloo on CPU) against one process with the same global batch.

Measured: replicas end with identical parameters (same SHA-256 on both ranks), and every
per-step global loss matches the single-process run to within 1e-5 absolute (the only
difference is the order of float additions: each rank sums half the batch and the gradient
all-reduce averages two halves; observed: at most 3.4e-7, one or two float32 ulps of a loss
near 2.3). About 6-9 s (three interpreters start), hence `slow`, which CI still runs.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdsl.errors import TdslError
from tdsl.train.distributed import DistEnv, env_from_environ, shard

WORKER = Path(__file__).with_name("ddp_worker.py")
LOSS_TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_worker():
    spec = importlib.util.spec_from_file_location("tdsl_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3]) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[:4000]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["hash"] == ranks[1]["hash"]          # replicas stayed identical
    assert ranks[0]["losses"] == ranks[1]["losses"]      # both report the global loss
    assert ranks[0]["test_acc"] == ranks[1]["test_acc"]

    single = load_worker().run(None)
    assert single["world_size"] == 1
    assert len(single["losses"]) == len(ranks[0]["losses"]) == 12   # 2 epochs of ceil(256 / 45)
    diff = max(abs(a - b) for a, b in zip(single["losses"], ranks[0]["losses"]))
    assert diff <= LOSS_TOLERANCE, f"max per-step loss difference {diff}"

    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2                             # only rank 0 logged
    assert (tmp_path / "run" / "checkpoints" / "step-000000012").is_dir()


def test_shard_keeps_the_global_batch() -> None:
    batch = torch.arange(45)
    parts = [shard(batch, DistEnv(r, 2)) for r in (0, 1)]
    assert [len(p) for p in parts] == [23, 22]
    assert torch.equal(torch.cat(parts), batch)
    assert torch.equal(shard(batch, DistEnv()), batch)


def test_env_parsing() -> None:
    assert env_from_environ({}) == DistEnv()
    e = env_from_environ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1",
                          "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (e.rank, e.world_size, e.local_rank, e.is_main, e.enabled) == (3, 4, 1, False, True)
    with pytest.raises(TdslError, match="RANK=4, WORLD_SIZE=2"):
        env_from_environ({"WORLD_SIZE": "2", "RANK": "4", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    with pytest.raises(TdslError, match="MASTER_ADDR"):
        env_from_environ({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(TdslError, match="integers"):
        env_from_environ({"WORLD_SIZE": "two"})
