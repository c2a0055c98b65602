import math
import sys
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from tdsl.errors import TdslError
from tdsl.train.health import TrainingHealthError, TrainingHealthWarning
from tdsl.train.regularizers import nearest_ternary, ternary_l2
from tdsl.train.trainer import TrainConfig, Trainer


def tiny_mlp(hidden: int = 16, dropout: float = 0.1) -> nn.Module:
    """Named layers, so health messages can name them; dropout exercises the RNG."""
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(64, hidden)), ("act", nn.ReLU()), ("drop", nn.Dropout(dropout)),
        ("fc2", nn.Linear(hidden, 10)),
    ]))


def make(small, seed: int = 0, **kw) -> Trainer:
    torch.manual_seed(seed)
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 32, "progress": False, "seed": seed, **kw})
    return Trainer(tiny_mlp(), cfg, small[0], small[1])


def one_batch(t: Trainer) -> torch.Tensor:
    return t.batches()[0]


def test_learns_digits(small) -> None:
    t = make(small, epochs=5, lr=0.1)
    result = t.fit()
    assert result.test_acc > 0.7
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]


def test_same_seed_same_losses(small) -> None:
    a = make(small, seed=3, epochs=2)
    a.fit()   # dropout draws from the global RNG, so each run is built and trained in turn
    b = make(small, seed=3, epochs=2)
    b.fit()
    assert a.step_losses == b.step_losses
    c = make(small, seed=4, epochs=2)
    c.fit()
    assert c.step_losses != a.step_losses


def test_clip_norm_bounds_the_norm(small) -> None:
    t = make(small, lr=0.1, clip_norm=0.01)
    _, pre_clip, _, _ = t.train_step(one_batch(t))
    post = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in t.model.parameters()))
    assert pre_clip > 0.01            # clipping had something to do
    assert post <= 0.01 * (1 + 1e-5)


def test_clip_value_bounds_each_element(small) -> None:
    t = make(small, lr=0.1, clip_value=1e-3)
    t.train_step(one_batch(t))
    biggest = max(float(p.grad.abs().max()) for p in t.model.parameters())
    assert biggest == pytest.approx(1e-3)


def test_planted_nan_names_the_parameter(small) -> None:
    t = make(small)
    with torch.no_grad():
        t.model.fc2.weight[0, 0] = float("nan")
    with pytest.raises(TrainingHealthError, match=r"fc2\.weight") as e:
        t.fit()
    assert "loss is nan" in e.value.message
    assert isinstance(e.value, TdslError)


def test_nan_from_an_activation_names_the_layer(small) -> None:
    t = make(small)
    t.model.act.register_forward_hook(lambda m, i, o: o * float("inf"))
    with pytest.raises(TrainingHealthError, match="layer 'act'"):
        t.fit()


def test_planted_explosion_names_the_parameter(small) -> None:
    t = make(small, max_grad_norm=100.0)
    t.model.fc1.weight.register_hook(lambda g: g * 1e6)
    with pytest.raises(TrainingHealthError, match=r"exploding gradients.*'fc1\.weight'"):
        t.fit()


def test_nonfinite_gradient_names_the_parameter(small) -> None:
    t = make(small)
    t.model.fc1.bias.register_hook(lambda g: g * float("nan"))
    with pytest.raises(TrainingHealthError, match=r"non-finite gradient in parameter 'fc1\.bias'"):
        t.fit()


def test_vanishing_gradients(small) -> None:
    t = make(small, min_grad_norm=1e3)
    with pytest.raises(TrainingHealthError, match="vanishing gradients.*smallest in parameter"):
        t.fit()


def test_warn_mode_warns_and_skips_bad_updates(small) -> None:
    t = make(small, health="warn")
    t.model.fc1.bias.register_hook(lambda g: g * float("nan"))
    before = t.model.fc2.weight.detach().clone()
    with pytest.warns(TrainingHealthWarning, match="fc1.bias"):
        t.train_step(one_batch(t))
    assert torch.equal(t.model.fc2.weight, before)   # the update was skipped
    assert t.step == 1


def test_health_off_is_silent(small) -> None:
    t = make(small, health="off", min_grad_norm=1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.train_step(one_batch(t))


def test_bf16_autocast_on_cpu_trains(small) -> None:
    t = make(small, amp=True, epochs=2, lr=0.1)
    seen = []
    t.model.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    result = t.fit()
    assert torch.bfloat16 in seen
    assert math.isfinite(result.loss) and result.test_acc > 0.3


@pytest.mark.parametrize("opt,extra", [("sgd", {"nesterov": True}), ("adamw", {"lr": 1e-2})])
def test_optimizers(small, opt: str, extra: dict) -> None:
    t = make(small, optimizer=opt, epochs=2, weight_decay=0.01, **extra)
    assert type(t.optimizer).__name__ == {"sgd": "SGD", "adamw": "AdamW"}[opt]
    decay, no_decay = t.optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert t.fit().test_acc > 0.3


def test_schedule_sets_the_lr(small) -> None:
    t = make(small, schedule="cosine", warmup_steps=3, lr=0.3)
    lrs = []
    for b in t.batches()[:5]:
        t.train_step(b)
        lrs.append(t.last_lr)  # the LR that update used (the group's is already the next one)
    assert isinstance(t.scheduler, torch.optim.lr_scheduler.SequentialLR)
    assert lrs[:3] == pytest.approx([0.1, 0.2, 0.3])
    assert lrs[3] == 0.3 and lrs[4] < 0.3


def test_ternary_regulariser_pulls_toward_the_grid() -> None:
    w = torch.tensor([[1.0, -0.9, 0.05, 0.0]])
    q = nearest_ternary(w)
    assert torch.allclose(q, torch.tensor([[0.95, -0.95, 0.0, 0.0]]))
    model = torch.nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.copy_(w)
    reg = ternary_l2(model)
    assert reg.item() == pytest.approx(0.5 * (0.05 ** 2 * 2 + 0.05 ** 2))
    reg.backward()
    assert torch.allclose(model.weight.grad, w - q)
    assert model.bias.grad is None


@pytest.mark.parametrize("kw,word", [
    ({"optimizer": "rmsprop"}, "unknown optimizer"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": -2}, "batch_size"),
    ({"clip_norm": 0.0}, "clip_norm"),
    ({"clip_value": -1.0}, "clip_value"),
    ({"health": "ignore"}, "health"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"nesterov": True, "optimizer": "adamw"}, "nesterov"),
    ({"schedule": "poly"}, "schedule"),
    ({"lr": 0.0}, "learning rate"),
])
def test_bad_config(small, kw: dict, word: str) -> None:
    with pytest.raises(TdslError, match=word):
        make(small, **kw)


def test_bad_data(small) -> None:
    with pytest.raises(TdslError, match="300 inputs but 10 labels"):
        Trainer(tiny_mlp(), TrainConfig(progress=False), (small[0][0], small[0][1][:10]))


@pytest.mark.parametrize("progress,tty,shown", [(True, True, "bar"), (True, False, "lines"),
                                                 (False, True, "nothing")])
def test_progress_bar_on_a_tty_lines_elsewhere(small, capsys, monkeypatch, progress: bool, tty: bool,
                                               shown: str) -> None:
    t = make(small, progress=progress)
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    t.fit()
    err = capsys.readouterr().err
    assert ("epoch 1/1:" in err) == (shown == "bar")  # tqdm's "desc: 100%|..."
    assert ("epoch 1/1  step" in err and "loss" in err and "test_acc" in err) == (shown == "lines")


def test_step_hooks_see_every_step_and_a_resumed_run_continues(small, tmp_path) -> None:
    seen: list[tuple[int, int]] = []
    cfg = TrainConfig(epochs=2, batch_size=100, progress=False)
    first = Trainer(tiny_mlp(), cfg, small[0], small[1], out_dir=tmp_path, step_hooks=[lambda s, n: seen.append((s, n))])
    first.fit(until_epoch=1)  # 300 samples / 100: 3 steps per epoch, 6 in all
    assert seen == [(0, 6), (1, 6), (2, 6)]
    seen.clear()
    second = Trainer(tiny_mlp(), cfg, small[0], small[1], step_hooks=[lambda s, n: seen.append((s, n))])
    second.load_checkpoint(tmp_path / "checkpoints")
    second.fit()
    assert seen == [(3, 6), (4, 6), (5, 6)]
