"""A replacing write (`tdsl.save(..., overwrite=True)`, `save_checkpoint` over an existing
name) killed with SIGKILL before each of its file-system events leaves the old or the new
copy at its path, never nothing, and the next writer sweeps the leftovers.

The writer runs in a forked child that wraps the calls through which tdsl's writers touch the
disk (renames, the one-step swap, folder creation and removal, file opens for writing, fsync,
chmod, unlink) and kills itself just before the k-th one, as `kill -9` at that instant would;
no cleanup handler runs. k goes from 0 until the write finishes. Both the one-step swap and
the rename-aside fallback (other systems) are tried.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import tdsl
from tdsl.support import files
from tdsl.package.reader import aside_prefix, staged_prefix
from tdsl.train.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint

_WRAPPED: list[tuple[Any, str]] = [
    (os, "replace"), (os, "rename"), (os, "mkdir"), (os, "rmdir"), (os, "unlink"), (os, "fsync"), (os, "chmod"),
    (shutil, "rmtree"), (tempfile, "mkdtemp"), (files, "_swap"), (builtins, "open"), (io, "open"),
]


def _install(stop_at: int) -> None:
    count = [0]

    def wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def event(*args: Any, **kwargs: Any) -> Any:
            mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
            if name == "open" and not any(c in str(mode) for c in "wax+"):
                return fn(*args, **kwargs)
            if count[0] == stop_at:
                os.kill(os.getpid(), signal.SIGKILL)
            count[0] += 1
            return fn(*args, **kwargs)
        return event

    for owner, name in _WRAPPED:
        setattr(owner, name, wrap(getattr(owner, name), name))


def write_killed_at(k: int, write: Callable[[], object]) -> bool:
    """Run `write()` in a forked child killed before its k-th event; True if it was killed,
    False if it finished first (k is past its last event)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into the test runner
        code = 0
        try:
            _install(k)
            write()
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the writer failed on its own"
    return False


def every_kill(prepare: Callable[[int], object], write: Callable[[int], object],
               check: Callable[[int], str]) -> dict[str, int]:
    """For k = 0, 1, ...: `prepare(k)` the old copy, kill `write(k)` before its k-th event,
    and `check(k)` what a reader finds ("old" or "new"), until a write finishes. The counts."""
    counts = {"events": 0, "old": 0, "new": 0}
    for k in range(1000):
        prepare(k)
        killed = write_killed_at(k, lambda: write(k))
        found = check(k)
        assert found in ("old", "new"), f"killed before event {k}: the reader found {found}"
        if not killed:
            assert found == "new", "a finished write must leave the new copy"
            counts["events"] = k
            return counts
        counts[found] += 1
    raise AssertionError("the write never finished")


@pytest.fixture(scope="module")
def two_lenets():
    torch.manual_seed(1)
    old = tdsl.quantize("lenet", precision="ternary")
    torch.manual_seed(2)
    return old, tdsl.quantize("lenet", precision="ternary")


def _sha(pkg: Path) -> str:
    return json.loads((pkg / "config.json").read_text())["weights"]["sha256"]


@pytest.mark.parametrize("exchange", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_package_save_killed_at_every_event_leaves_old_or_new(two_lenets, tmp_path, monkeypatch, exchange):
    monkeypatch.setattr(files, "EXCHANGE", exchange)
    old_model, new_model = two_lenets
    reference = tdsl.save(old_model, tmp_path / "ref-old")
    shas = {_sha(reference): "old", _sha(tdsl.save(new_model, tmp_path / "ref-new")): "new"}

    def dest(k: int) -> Path:
        return tmp_path / f"trial-{k}" / "pkg"

    def check(k: int) -> str:
        loaded = tdsl.load(dest(k))  # a TdslError here is a lost package
        files.sweep_folders(dest(k), aside_prefix(dest(k)), staged_prefix(dest(k)))  # as the next save does
        assert [p.name for p in dest(k).parent.iterdir()] == ["pkg"], "leftovers were not swept"
        return shas.get(_sha(loaded.path), "an unknown copy")

    counts = every_kill(lambda k: shutil.copytree(reference, dest(k)),
                        lambda k: tdsl.save(new_model, dest(k), overwrite=True), check)
    print(f"package save, exchange={exchange}: {counts}")
    assert counts["events"] > 5 and counts["old"] > 0 and counts["new"] > 0


def _state(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 4)).sum().backward()
    opt.step()
    return net.state_dict(), opt.state_dict(), {"step": seed}


@pytest.mark.parametrize("exchange", [True, False])
def test_checkpoint_save_killed_at_every_event_leaves_old_or_new(tmp_path, monkeypatch, exchange):
    monkeypatch.setattr(files, "EXCHANGE", exchange)
    old, new = _state(1), _state(2)

    def root(k: int) -> Path:
        return tmp_path / f"trial-{k}"

    def check(k: int) -> str:
        found = load_checkpoint(root(k) / "step-000000001").state["step"]  # a TdslError is a lost checkpoint
        CheckpointManager(root(k))  # sweeps leftovers, never the only complete copy
        assert sorted(p.name for p in root(k).iterdir()) == ["step-000000001"], "leftovers were not swept"
        assert load_checkpoint(root(k) / "step-000000001").state["step"] == found
        return {1: "old", 2: "new"}.get(found, "an unknown copy")

    counts = every_kill(lambda k: save_checkpoint(root(k), "step-000000001", *old),
                        lambda k: save_checkpoint(root(k), "step-000000001", *new), check)
    print(f"checkpoint save, exchange={exchange}: {counts}")
    assert counts["events"] > 5 and counts["old"] > 0 and counts["new"] > 0
