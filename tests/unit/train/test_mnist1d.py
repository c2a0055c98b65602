"""MNIST-1D is generated offline, deterministically, and cached."""
from __future__ import annotations

import socket

import numpy as np
import pytest

from tdsl.errors import TdslError
from tdsl.train.mnist1d import NUM_CLASSES, SEQUENCE_LENGTH, load_mnist1d


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("MNIST-1D must not touch the network")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_generated_offline_with_the_published_split(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TDSL_CACHE", str(tmp_path))
    data = load_mnist1d()
    assert data.x_train.shape == (4000, SEQUENCE_LENGTH) and data.x_test.shape == (1000, SEQUENCE_LENGTH)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert set(np.unique(data.y_train)) == set(range(NUM_CLASSES))
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1


def test_same_seed_same_data_and_cache_matches_generation(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TDSL_CACHE", str(tmp_path))
    fresh = load_mnist1d(seed=3, num_samples=200, cache=False)
    cached_first = load_mnist1d(seed=3, num_samples=200)
    cached_again = load_mnist1d(seed=3, num_samples=200)
    for a, b in [(fresh, cached_first), (fresh, cached_again)]:
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.y_test, b.y_test)
    other = load_mnist1d(seed=4, num_samples=200, cache=False)
    assert not np.array_equal(fresh.x_train, other.x_train)


def test_conv_shape_and_bad_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("TDSL_CACHE", str(tmp_path))
    conv = load_mnist1d(seed=5, num_samples=100).as_conv_input()
    assert conv.x_train.shape == (80, 1, SEQUENCE_LENGTH)
    with pytest.raises(TdslError, match="at least 10 samples"):
        load_mnist1d(num_samples=3)
