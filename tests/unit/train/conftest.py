"""Tiny models and data for the trainer tests (a few hundred digits, a 64-16-10 MLP)."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from tdsl.train.data import Dataset, load_digits


def tiny_mlp(hidden: int = 16, dropout: float = 0.1) -> nn.Module:
    """Named layers, so health messages can name them; dropout exercises the RNG."""
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(64, hidden)), ("act", nn.ReLU()), ("drop", nn.Dropout(dropout)),
        ("fc2", nn.Linear(hidden, 10)),
    ]))


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="session")
def small(digits: Dataset) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """300 training and 100 test digits."""
    return (digits.x_train[:300], digits.y_train[:300]), (digits.x_test[:100], digits.y_test[:100])
