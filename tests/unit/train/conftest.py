"""Tiny data for the trainer tests: a few hundred digits."""
from __future__ import annotations

import pytest
import torch

from tdsl.train.data import Dataset, load_digits


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="session")
def small(digits: Dataset) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """300 training and 100 test digits."""
    return (digits.x_train[:300], digits.y_train[:300]), (digits.x_test[:100], digits.y_test[:100])
