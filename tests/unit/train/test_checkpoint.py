import json
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from tdsl.errors import TdslError
from tdsl.train import checkpoint as ck
from tdsl.train.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from tdsl.train.trainer import TrainConfig, Trainer


def tiny_mlp(hidden: int = 16, dropout: float = 0.1) -> nn.Module:
    """Named layers, so health messages can name them; dropout exercises the RNG."""
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(64, hidden)), ("act", nn.ReLU()), ("drop", nn.Dropout(dropout)),
        ("fc2", nn.Linear(hidden, 10)),
    ]))


def trainer(small, out: Path | None, seed: int = 0, hidden: int = 16, **kw) -> Trainer:
    cfg = TrainConfig(**{"epochs": 4, "batch_size": 32, "progress": False, "seed": seed,
                         "schedule": "cosine", "warmup_steps": 3, "lr": 0.05, **kw})
    torch.manual_seed(seed)
    return Trainer(tiny_mlp(hidden), cfg, small[0], small[1], out_dir=out)


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_resume_is_bit_exact(small, tmp_path: Path, opt: str) -> None:
    extra = {"optimizer": opt, "lr": 1e-2 if opt == "adamw" else 0.05, "weight_decay": 0.01}
    full = trainer(small, None, **extra)
    full.fit()

    first = trainer(small, tmp_path, **extra)
    first.fit(until_epoch=2)
    second = trainer(small, tmp_path, **extra)
    torch.manual_seed(1234)           # a fresh "process": other RNG states and weights
    second.data_gen.manual_seed(5)
    with torch.no_grad():
        for p in second.model.parameters():
            p.uniform_()
    second.load_checkpoint(tmp_path / "checkpoints")
    assert (second.epoch, second.step) == (2, first.step)
    second.fit()

    assert len(full.step_losses) == 40
    assert first.step_losses + second.step_losses == full.step_losses
    for a, b in zip(full.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    epochs = [r["epoch"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())]
    assert epochs == [1, 2, 3, 4]


def save_step(mgr: CheckpointManager, t: Trainer, step: int, acc: float) -> Path:
    return mgr.save(step, t.model.state_dict(), t.optimizer.state_dict(), t.state(), {"test_acc": acc})


def test_checkpoint_layout(small, tmp_path: Path) -> None:
    t = trainer(small, tmp_path, epochs=1)
    t.fit()
    root = tmp_path / "checkpoints"
    folder = root / "step-000000010"
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.safetensors",
                                                        "trainer.json"]
    state = json.loads((folder / "trainer.json").read_text())
    assert state["format"] == "tdsl-checkpoint" and state["step"] == 10 and state["epoch"] == 1
    assert state["config"]["schedule"] == "cosine"
    assert len(state["rng"]["torch"]) > 0 and len(state["rng"]["data"]) > 0
    assert json.loads((root / "latest.json").read_text())["name"] == "step-000000010"
    loaded = load_checkpoint(root)
    assert set(loaded.model) == set(t.model.state_dict())
    assert "state.0.momentum_buffer" in ck.optimizer_to_files(t.optimizer.state_dict())[0]


def test_interrupted_write_keeps_the_previous_checkpoint(small, tmp_path: Path, monkeypatch) -> None:
    t = trainer(small, None)
    root = tmp_path / "ck"
    mgr = CheckpointManager(root, keep_last=3)
    save_step(mgr, t, 1, 0.5)
    good = load_checkpoint(root)
    t.train_step(t.batches()[0])

    calls = []

    def half_then_crash(path: Path, data: bytes) -> None:
        calls.append(path.name)
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ck, "_write_bytes", half_then_crash)
    with pytest.raises(OSError, match="simulated"):
        save_step(mgr, t, 2, 0.9)
    with pytest.raises(OSError, match="simulated"):   # overwriting the same name fails safely too
        save_step(mgr, t, 1, 0.9)
    monkeypatch.undo()

    assert calls == ["model.safetensors", "model.safetensors"]
    assert sorted(p.name for p in root.iterdir()) == ["best.json", "latest.json", "step-000000001"]
    again = load_checkpoint(root)
    assert again.path.name == "step-000000001"
    for k, v in good.model.items():
        assert torch.equal(again.model[k], v)


def test_crash_leftovers_are_ignored_and_swept(small, tmp_path: Path) -> None:
    t = trainer(small, None)
    mgr = CheckpointManager(tmp_path, keep_last=2)
    save_step(mgr, t, 1, 0.5)
    stale = tmp_path / ".tmp-step-000000002-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\x00" * 10)
    assert load_checkpoint(tmp_path).path.name == "step-000000001"
    assert [p.name for p in mgr.checkpoints()] == ["step-000000001"]
    CheckpointManager(tmp_path)
    assert not stale.exists()


def test_keep_last_deletes_the_oldest_and_keeps_the_best(small, tmp_path: Path) -> None:
    t = trainer(small, None)
    mgr = CheckpointManager(tmp_path, keep_last=2, best_metric="test_acc", best_mode="max")
    for step, acc in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.6), (5, 0.8)]:
        save_step(mgr, t, step, acc)
    assert [p.name for p in mgr.checkpoints()] == ["step-000000002", "step-000000004", "step-000000005"]
    assert mgr.best() == {"name": "step-000000002", "step": 2, "metric": "test_acc", "value": 0.9,
                          "mode": "max"}
    assert load_checkpoint(tmp_path / "best.json").path.name == "step-000000002"
    save_step(mgr, t, 6, 0.95)
    assert mgr.best()["name"] == "step-000000006"
    assert [p.name for p in mgr.checkpoints()] == ["step-000000005", "step-000000006"]


def test_best_by_min_metric(small, tmp_path: Path) -> None:
    t = trainer(small, None)
    mgr = CheckpointManager(tmp_path, keep_last=0, best_metric="test_loss", best_mode="min")
    for step, loss in [(1, 2.0), (2, 1.0), (3, 1.5)]:
        mgr.save(step, t.model.state_dict(), t.optimizer.state_dict(), t.state(), {"test_loss": loss})
    assert mgr.best()["name"] == "step-000000002"
    assert len(mgr.checkpoints()) == 3


@pytest.fixture
def saved(small, tmp_path: Path) -> Path:
    t = trainer(small, None)
    return save_checkpoint(tmp_path, "step-000000001", t.model.state_dict(), t.optimizer.state_dict(),
                           t.state())


def test_refuses_a_pickle_in_the_folder(saved: Path) -> None:
    (saved / "extra.pt").write_bytes(pickle.dumps({"evil": 1}))
    with pytest.raises(TdslError, match="unexpected file.*extra.pt.*never unpickles"):
        load_checkpoint(saved)


def test_refuses_a_pickled_model_file(saved: Path) -> None:
    data = pickle.dumps({"fc1.weight": [1.0]})
    (saved / "model.safetensors").write_bytes(data)
    with pytest.raises(TdslError, match="SHA-256"):
        load_checkpoint(saved)
    state = json.loads((saved / "trainer.json").read_text())   # even with a matching hash
    state["files"]["model.safetensors"]["sha256"] = ck._sha256(data)
    (saved / "trainer.json").write_text(json.dumps(state))
    with pytest.raises(TdslError, match="not a safetensors file"):
        load_checkpoint(saved)


def test_refuses_a_hash_mismatch(saved: Path) -> None:
    f = saved / "optimizer.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(TdslError, match="optimizer.safetensors does not match the SHA-256"):
        load_checkpoint(saved)


def test_refuses_a_missing_file_and_bad_json(saved: Path) -> None:
    (saved / "trainer.json").write_text("{not json")
    with pytest.raises(TdslError, match="not valid JSON"):
        load_checkpoint(saved)
    (saved / "optimizer.safetensors").unlink()
    with pytest.raises(TdslError, match="missing optimizer.safetensors"):
        load_checkpoint(saved)


def test_refuses_a_shape_mismatch(small, saved: Path) -> None:
    other = trainer(small, None, hidden=8)
    with pytest.raises(TdslError, match=r"'fc1\.weight' has shape \[16, 64\] in the checkpoint, \[8, 64\]"):
        other.load_checkpoint(saved)


def test_refuses_missing_names(small, saved: Path, tmp_path: Path) -> None:
    t = trainer(small, None)
    sd = {k: v for k, v in t.model.state_dict().items() if k != "fc2.bias"}
    path = save_checkpoint(tmp_path, "step-000000002", sd, t.optimizer.state_dict(), t.state())
    with pytest.raises(TdslError, match=r"missing fc2\.bias"):
        t.load_checkpoint(path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TdslError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(TdslError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
