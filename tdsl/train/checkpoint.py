"""Checkpoints: one folder per checkpoint, written atomically, loaded without unpickling.

Layout of `<root>/step-000000120/` (root is `<out>/checkpoints` for the CLI):

- `model.safetensors`      the model's state dict (parameters and buffers)
- `optimizer.safetensors`  the optimizer's state tensors, keyed `state.<param index>.<name>`
- `trainer.json`           everything else as JSON: format and version, step, epoch, the
                           config, the metrics history, best metric, the torch and data-order
                           RNG states (byte lists), optimizer hyper-parameters and non-tensor
                           state, grad-scaler state, and the SHA-256 and size of both
                           safetensors files

`<root>/latest.json` and `<root>/best.json` are pointers (`{"name": ..., ...}`) to a folder.

Atomicity: a checkpoint is written into `<root>/.tmp-<name>-<random>/` (every file fsynced),
which is then moved to its final name by `tdsl.package.files.replace_folder` (over an existing
name: swapped in one step, or the old copy set aside as `.old-<name>-<random>` first) and the
root fsynced; pointers are written to a temporary file and renamed the same way. A kill at any
instant leaves the old or the new checkpoint at its name: loading restores a set-aside copy
whose replacement never arrived, and the next `CheckpointManager` removes leftovers only
once the checkpoint they belong to is complete. Loading checks that the folder holds exactly the three files above
(a pickle or any other file is refused), that the hashes match, and that every tensor's name
and shape matches the model and optimizer it is loaded into; it uses `safetensors` and
`json` only, never `torch.load`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from tdsl.errors import TdslError
from tdsl.package.files import aside_name, recover_folder, replace_folder, sweep_folders

FORMAT = "tdsl-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "trainer.json"
CHECKPOINT_FILES = frozenset({MODEL_FILE, OPTIM_FILE, STATE_FILE})
NAME_RE = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def _write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync one file (the single place bytes reach the disk)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file in the same folder renamed into place."""
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        _write_bytes(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def optimizer_to_files(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            elif value is not None:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(root: str | Path, name: str, model_state: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any], trainer_state: dict[str, Any]) -> Path:
    """Write one checkpoint folder atomically; returns its final path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    model_bytes = st_save({k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()})
    opt_tensors, opt_meta = optimizer_to_files(optimizer_state)
    opt_bytes = st_save(opt_tensors)
    state = dict(trainer_state)
    state.update(format=FORMAT, version=VERSION, optimizer=opt_meta, files={
        MODEL_FILE: {"sha256": _sha256(model_bytes), "bytes": len(model_bytes)},
        OPTIM_FILE: {"sha256": _sha256(opt_bytes), "bytes": len(opt_bytes)},
    })
    state_bytes = json.dumps(state, indent=1, sort_keys=True).encode("utf-8")

    final = root / name
    recover_folder(final, _aside_prefix(name))
    sweep_folders(final, _aside_prefix(name), _staged_prefix(name))
    tmp = root / aside_name(_staged_prefix(name))
    tmp.mkdir()
    try:
        _write_bytes(tmp / MODEL_FILE, model_bytes)
        _write_bytes(tmp / OPTIM_FILE, opt_bytes)
        _write_bytes(tmp / STATE_FILE, state_bytes)
        _fsync_dir(tmp)
        replace_folder(tmp, final, _aside_prefix(name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _staged_prefix(name: str) -> str:
    return f".tmp-{name}-"


def _aside_prefix(name: str) -> str:
    return f".old-{name}-"


_DELETED_PREFIX = ".del-"
"""A pruned checkpoint is renamed to `.del-<name>-<hex>` before it is removed, so a kill
mid-removal never leaves a half-deleted folder under a checkpoint's name."""


def _recover(path: Path) -> None:
    """Restore a checkpoint whose replacing save was killed between its two renames."""
    recover_folder(path, _aside_prefix(path.name))


@dataclass
class Checkpoint:
    """A loaded checkpoint: plain tensors and JSON, not yet applied to anything."""

    path: Path
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: dict[str, Any]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a root holding `latest.json`, or a `latest.json`/`best.json` pointer."""
    p = Path(path)
    _recover(p)
    if p.is_file() and p.suffix == ".json" and p.name != STATE_FILE:
        return _follow_pointer(p)
    if p.is_dir() and (p / STATE_FILE).exists():
        return p
    if p.is_dir() and (p / "latest.json").exists():
        return _follow_pointer(p / "latest.json")
    if p.is_dir():
        raise TdslError(f"'{p}' is not a checkpoint: it has no {STATE_FILE} and no latest.json")
    raise TdslError(f"no such checkpoint: '{p}'")


def _follow_pointer(pointer: Path) -> Path:
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["name"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TdslError(f"checkpoint pointer '{pointer}' is unreadable: {e}") from None
    target = pointer.parent / str(name)
    if isinstance(name, str) and NAME_RE.match(name):
        _recover(target)
    if not (target / STATE_FILE).exists():
        raise TdslError(f"checkpoint pointer '{pointer}' names '{name}', which is not a checkpoint")
    return target


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint (file set, format, hashes); never unpickles."""
    folder = resolve_checkpoint(path)
    present = {e.name for e in folder.iterdir()}
    unexpected = sorted(present - CHECKPOINT_FILES)
    if unexpected:
        raise TdslError(f"checkpoint '{folder}' holds unexpected file(s) {', '.join(unexpected)}; "
                        f"a checkpoint holds only {', '.join(sorted(CHECKPOINT_FILES))} "
                        "(refusing to load: tdsl never unpickles checkpoint data)")
    missing = sorted(CHECKPOINT_FILES - present)
    if missing:
        raise TdslError(f"checkpoint '{folder}' is missing {', '.join(missing)}")
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TdslError(f"checkpoint '{folder}': {STATE_FILE} is not valid JSON: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TdslError(f"checkpoint '{folder}': {STATE_FILE} is not a {FORMAT} file")
    if state.get("version") != VERSION:
        raise TdslError(f"checkpoint '{folder}' has format version {state.get('version')}; "
                        f"this tdsl reads version {VERSION}")
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for fname in (MODEL_FILE, OPTIM_FILE):
        data = (folder / fname).read_bytes()
        expect = state.get("files", {}).get(fname, {})
        if _sha256(data) != expect.get("sha256"):
            raise TdslError(f"checkpoint '{folder}': {fname} does not match the SHA-256 recorded in "
                            f"{STATE_FILE} (the file is corrupt or was changed)")
        try:
            loaded[fname] = st_load(data)
        except SafetensorError as e:
            raise TdslError(f"checkpoint '{folder}': {fname} is not a safetensors file: {e}") from None
    return Checkpoint(folder, loaded[MODEL_FILE],
                      optimizer_from_files(loaded[OPTIM_FILE], state["optimizer"]), state)


def apply_model_state(model: nn.Module, tensors: dict[str, torch.Tensor], origin: str) -> None:
    """Load weights after checking that names and shapes match the model exactly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        raise TdslError(f"checkpoint '{origin}' does not fit this model: {'; '.join(parts)}")
    for name in own:                  # model order, so the first mismatch reported is stable
        value = tensors[name]
        if tuple(value.shape) != tuple(own[name].shape):
            raise TdslError(f"checkpoint '{origin}' does not fit this model: '{name}' has shape "
                            f"{list(value.shape)} in the checkpoint, {list(own[name].shape)} in the model")
    model.load_state_dict(tensors)


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], origin: str) -> None:
    """Per-parameter state tensors must have their parameter's shape (scalars excepted)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    groups = state["param_groups"]
    if len(groups) != len(optimizer.param_groups) or sum(len(g["params"]) for g in groups) != len(params):
        raise TdslError(f"checkpoint '{origin}': optimizer state is for a different set of parameters")
    for idx, entry in state["state"].items():
        if not 0 <= idx < len(params):
            raise TdslError(f"checkpoint '{origin}': optimizer state for unknown parameter {idx}")
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != params[idx].shape:
                raise TdslError(f"checkpoint '{origin}': optimizer state '{key}' of parameter {idx} has "
                                f"shape {list(value.shape)}, the parameter {list(params[idx].shape)}")


class CheckpointManager:
    """Saves into `root`, keeps the last `keep_last` (0: all) and tracks the best by a metric."""

    def __init__(self, root: str | Path, keep_last: int = 3, best_metric: str | None = "test_acc",
                 best_mode: str = "max"):
        if keep_last < 0:
            raise TdslError(f"keep-last must be >= 0 (0 keeps every checkpoint), got {keep_last}")
        if best_mode not in ("max", "min"):
            raise TdslError(f"best mode must be 'max' or 'min', got '{best_mode}'")
        self.root = Path(root)
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.root.mkdir(parents=True, exist_ok=True)
        self.sweep()

    def sweep(self) -> None:
        """Finish what killed writes left: restore a checkpoint set aside by a replacing save
        killed between its renames, then remove the leftovers. A set-aside copy goes only once
        the checkpoint it belongs to is complete at its name; a staged copy never is the only
        complete one (it was either never published, or swapped out by a newer one that was);
        a pruned one was on its way out. `.old-` sorts before `.tmp-`, so recovery comes first."""
        leftover = re.compile(r"^\.(tmp|old|del)-(.+)-[0-9a-f]{8}$")
        for entry in sorted(self.root.iterdir()):
            m = leftover.match(entry.name)
            if m is None:
                if entry.name.startswith(".tmp-") and entry.is_file():  # a pointer's temporary file
                    entry.unlink(missing_ok=True)
                continue
            kind, name = m.groups()
            if kind == "old":
                _recover(self.root / name)
            if kind != "old" or (self.root / name).is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    def checkpoints(self) -> list[Path]:
        """Finished checkpoint folders, oldest first."""
        found = [(int(m.group(1)), p) for p in self.root.iterdir()
                 if p.is_dir() and (m := NAME_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def best(self) -> dict[str, Any] | None:
        pointer = self.root / "best.json"
        if not pointer.exists():
            return None
        try:
            return json.loads(pointer.read_text(encoding="utf-8"))
        except ValueError:
            return None

    def is_better(self, value: float) -> bool:
        current = self.best()
        if current is None or current.get("value") is None:
            return True
        return value > current["value"] if self.best_mode == "max" else value < current["value"]

    def save(self, step: int, model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
             trainer_state: dict[str, Any], metrics: dict[str, Any] | None = None) -> Path:
        name = checkpoint_name(step)
        path = save_checkpoint(self.root, name, model_state, optimizer_state, trainer_state)
        write_file_atomic(self.root / "latest.json",
                          json.dumps({"name": name, "step": step}).encode("utf-8"))
        value = (metrics or {}).get(self.best_metric) if self.best_metric else None
        if value is not None and self.is_better(float(value)):
            write_file_atomic(self.root / "best.json", json.dumps(
                {"name": name, "step": step, "metric": self.best_metric, "value": float(value),
                 "mode": self.best_mode}).encode("utf-8"))
        self.prune()
        return path

    def prune(self) -> None:
        """Keep the newest `keep_last` checkpoints plus the best one; delete the rest."""
        if self.keep_last == 0:
            return
        best = (self.best() or {}).get("name")
        for p in self.checkpoints()[:-self.keep_last]:
            if p.name != best:
                doomed = self.root / aside_name(f"{_DELETED_PREFIX}{p.name}-")
                os.replace(p, doomed)
                shutil.rmtree(doomed)
