import math

import pytest

from tdsl.errors import TdslError
from tdsl.train.schedules import build_scheduler, check_schedule, lr_at, replay


def curve(schedule: str, n: int, **kw: float) -> list[float]:
    return [lr_at(s, schedule, **kw) for s in range(n)]


def test_constant() -> None:
    assert curve("constant", 5, base_lr=0.1, total_steps=5) == [0.1] * 5


def test_step_decays_every_step_size() -> None:
    lrs = curve("step", 7, base_lr=1.0, total_steps=7, step_size=3, gamma=0.5)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_cosine_exact_points() -> None:
    kw = dict(base_lr=1.0, total_steps=8, min_lr=0.0)
    assert lr_at(0, "cosine", **kw) == 1.0
    assert lr_at(4, "cosine", **kw) == pytest.approx(0.5, abs=1e-15)
    assert lr_at(2, "cosine", **kw) == pytest.approx((1 + math.cos(math.pi / 4)) / 2, abs=1e-15)
    assert lr_at(8, "cosine", **kw) == 0.0
    assert lr_at(100, "cosine", **kw) == 0.0


def test_cosine_min_lr_floor() -> None:
    assert lr_at(10, "cosine", base_lr=1.0, total_steps=10, min_lr=0.1) == 0.1
    assert lr_at(5, "cosine", base_lr=1.0, total_steps=10, min_lr=0.1) == pytest.approx(0.55)


def test_warmup_then_cosine() -> None:
    kw = dict(base_lr=0.4, total_steps=14, warmup_steps=4)
    assert curve("cosine", 4, **kw) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lr_at(4, "cosine", **kw) == 0.4              # cosine starts at its peak
    assert lr_at(9, "cosine", **kw) == pytest.approx(0.2)  # halfway through the 10 cosine steps
    assert lr_at(14, "cosine", **kw) == 0.0


def test_warmup_then_step() -> None:
    lrs = curve("step", 6, base_lr=1.0, total_steps=6, warmup_steps=2, step_size=2, gamma=0.1)
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1])


def test_lr_is_monotone_after_warmup() -> None:
    lrs = curve("cosine", 50, base_lr=1.0, total_steps=50, warmup_steps=5)
    assert all(a <= b for a, b in zip(lrs[:5], lrs[1:6]))
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


@pytest.mark.parametrize("schedule,kw,word", [
    ("linear", {}, "unknown LR schedule"),
    ("cosine", {"base_lr": -1.0}, "learning rate"),
    ("step", {"step_size": 0}, "step_size"),
    ("step", {"gamma": 2.0}, "gamma"),
    ("constant", {"warmup_steps": -1}, "warm-up"),
    ("cosine", {"min_lr": 5.0}, "min_lr"),
])
def test_bad_options(schedule: str, kw: dict, word: str) -> None:
    args = dict(base_lr=0.1, total_steps=10)
    args.update(kw)
    with pytest.raises(TdslError, match=word):
        check_schedule(schedule, **args)


@pytest.mark.parametrize("schedule, warmup, parts", [
    ("constant", 0, ["ConstantLR"]),
    ("step", 4, ["LinearLR", "StepLR"]),
    ("cosine", 4, ["LinearLR", "CosineAnnealingLR", "ConstantLR"]),
])
def test_built_from_torch_schedulers(schedule: str, warmup: int, parts: list[str]) -> None:
    """The curve is torch.optim.lr_scheduler's, stepped once per update and replayable."""
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=123.0)
    sched = build_scheduler(opt, schedule, base_lr=0.4, total_steps=14, warmup_steps=warmup, step_size=3)
    inner = getattr(sched, "_schedulers", [sched])
    assert [type(s).__name__ for s in inner] == parts
    seen = []
    for _ in range(16):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [lr_at(s, schedule, base_lr=0.4, total_steps=14, warmup_steps=warmup, step_size=3)
                    for s in range(16)]
    again = build_scheduler(opt, schedule, base_lr=0.4, total_steps=14, warmup_steps=warmup, step_size=3)
    replay(again, 9)   # what a resumed run does at step 9
    assert opt.param_groups[0]["lr"] == seen[9]
