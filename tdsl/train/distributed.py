"""Data-parallel training under `torchrun`: process group, data sharding, reductions.

`torchrun --nproc_per_node=K ...` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; `init_distributed()` reads them and joins the group (gloo on CPU, NCCL when CUDA
is available). Without them it returns a single-process `DistEnv` and touches nothing.

Sharding keeps the global batch: every rank draws the same permutation (same seed), cuts the
same global batches of `batch_size`, and takes its contiguous slice (`torch.tensor_split`).
Each rank's loss is `sum of its per-sample losses / global batch size * world size`; DDP
averages gradients over ranks, so the update equals the single-process update on the whole
global batch, also when the last batch does not split evenly. A final batch smaller than the
world size is dropped (some rank would get no sample). Only rank 0 writes checkpoints, logs
and plots.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist
from torch import nn

from tdsl.errors import TdslError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_environ(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """Parse torchrun's variables (without joining anything)."""
    if "WORLD_SIZE" not in environ:
        return DistEnv()
    try:
        world = int(environ["WORLD_SIZE"])
        rank = int(environ.get("RANK", "0"))
        local = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise TdslError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise TdslError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    if world > 1 and not (environ.get("MASTER_ADDR") and environ.get("MASTER_PORT")):
        raise TdslError("WORLD_SIZE > 1 needs MASTER_ADDR and MASTER_PORT (run under torchrun)")
    return DistEnv(rank, world, local)


def init_distributed(backend: str | None = None) -> DistEnv:
    """Join the process group described by the environment; a no-op for one process."""
    env = env_from_environ()
    if not env.enabled:
        return env
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return DistEnv(env.rank, env.world_size, env.local_rank, backend)


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def device_for(env: DistEnv, requested: str) -> torch.device:
    """`auto` picks CUDA when present; under NCCL each rank takes its local GPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise TdslError("device 'cuda' requested but CUDA is not available")
    if requested == "cuda" and env.enabled:
        return torch.device("cuda", env.local_rank)
    return torch.device(requested)


def shard(indices: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """This rank's contiguous slice of a global batch."""
    if not env.enabled:
        return indices
    return torch.tensor_split(indices, env.world_size)[env.rank]


def wrap(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when distributed, else `model`."""
    if not env.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum over ranks (in place, returned); identity for one process."""
    if env.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
