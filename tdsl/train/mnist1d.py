"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated offline and cached.

Digits cannot tell ternary methods apart; MNIST-1D can (published baselines: logistic
regression 32 %, MLP 68 %, CNN 94 %). The `mnist1d` package generates the data from its
templates with `make_dataset(get_dataset_args())`; its downloader is never used (no
network here). Generation takes a few seconds, so the arrays are cached as `.npz` under
`$TDSL_CACHE` (default `~/.cache/tdsl`), keyed by every generation argument.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tdsl.errors import TdslError

SEQUENCE_LENGTH = 40
NUM_CLASSES = 10


@dataclass(frozen=True)
class MNIST1D:
    """Train and test splits: x float32 [N, 40], y int64 [N]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def as_conv_input(self) -> MNIST1D:
        """The same data shaped [N, 1, 40] for a 1-D convolutional network."""
        return MNIST1D(self.x_train[:, None, :], self.y_train, self.x_test[:, None, :], self.y_test)


def cache_dir() -> Path:
    return Path(os.environ.get("TDSL_CACHE", Path.home() / ".cache" / "tdsl"))


def _generation_args(seed: int, num_samples: int) -> dict:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # the downloader's address: never used
    args.update(seed=seed, num_samples=num_samples)
    return args


def load_mnist1d(seed: int = 42, num_samples: int = 5000, cache: bool = True) -> MNIST1D:
    """Generate (or read from the cache) MNIST-1D; the same seed always gives the same data.

    The default arguments are the package's published ones: 4000 training and 1000 test
    sequences of length 40.
    """
    if num_samples < 10:
        raise TdslError(f"MNIST-1D needs at least 10 samples, got {num_samples}")
    args = _generation_args(seed, num_samples)
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    if cache and path.is_file():
        with np.load(path) as z:
            return MNIST1D(z["x_train"], z["y_train"], z["x_test"], z["y_test"])
    data = _generate(args)
    if cache:
        _save_atomic(path, data)
    return data


def _generate(args: dict) -> MNIST1D:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    raw = make_dataset(ObjectView(dict(args)))
    return MNIST1D(
        np.ascontiguousarray(raw["x"], dtype=np.float32),
        np.asarray(raw["y"], dtype=np.int64),
        np.ascontiguousarray(raw["x_test"], dtype=np.float32),
        np.asarray(raw["y_test"], dtype=np.int64),
    )


def _save_atomic(path: Path, data: MNIST1D) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                 y_test=data.y_test)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
