from pathlib import Path

import numpy as np
import pytest
import torch

from tdsl.errors import TdslError
from tdsl.train.data import (load_dataset, load_digits, load_image_folder, load_npy_pair, load_npz)


def test_digits_shapes_and_normalisation(digits) -> None:
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert abs(float(digits.x_train.mean())) < 1e-5 and float(digits.x_train.std()) == pytest.approx(1, abs=1e-3)
    assert digits.num_classes == 10 and set(digits.y_test.tolist()) == set(range(10))
    image = load_digits("image")
    assert image.x_train.shape == (1437, 1, 8, 8)
    assert torch.equal(image.x_train.reshape(-1, 64), digits.x_train)


def test_digits_split_is_deterministic(digits) -> None:
    again = load_digits()
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)
    other = load_digits(seed=1)
    assert not torch.equal(other.y_train, digits.y_train)


def test_digits_bad_layout() -> None:
    with pytest.raises(TdslError, match="layout"):
        load_digits("nchw")


def test_reshaped(digits) -> None:
    assert digits.reshaped([1, 8, 8]).x_test.shape == (360, 1, 8, 8)
    with pytest.raises(TdslError, match=r"cannot be reshaped to \[1, 28, 28\]"):
        digits.reshaped([1, 28, 28])


def arrays(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5)).astype(np.float64), np.arange(n) % 4


def test_npz(tmp_path: Path) -> None:
    x, y = arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_npz(tmp_path / "d.npz")
    assert d.x_train.shape == (32, 5) and d.x_test.shape == (8, 5) and d.num_classes == 4
    assert d.x_train.dtype == torch.float32
    assert torch.equal(load_dataset(str(tmp_path / "d.npz")).y_train, d.y_train)


def test_npz_with_test_set(tmp_path: Path) -> None:
    x, y = arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:3], y_test=y[:3])
    d = load_npz(tmp_path / "d.npz")
    assert len(d.x_train) == 40 and len(d.x_test) == 3


def test_npy_pair(tmp_path: Path) -> None:
    x, y = arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    d = load_dataset(str(tmp_path))
    assert len(d.x_train) + len(d.x_test) == 40
    assert torch.equal(load_npy_pair(tmp_path / "x.npy", tmp_path / "y.npy").x_test, d.x_test)


@pytest.mark.parametrize("make,word", [
    (lambda p: np.savez(p, x=np.zeros((5, 2)), y=np.zeros(4, dtype=int)), "5 inputs but 4 labels"),
    (lambda p: np.savez(p, x=np.zeros((5, 2))), "missing array.*y"),
    (lambda p: np.savez(p, x=np.zeros((5, 2)), y=np.full(5, 0.5)), "integer class indices"),
    (lambda p: np.savez(p, x=np.zeros((5, 2)), y=-np.ones(5, dtype=int)), ">= 0"),
    (lambda p: np.savez(p, x=np.zeros(5), y=np.zeros(5, dtype=int)), r"one row per sample"),
    (lambda p: np.savez(p, x=np.full((5, 2), np.nan), y=np.zeros(5, dtype=int)), "NaN"),
    (lambda p: np.savez(p, x=np.zeros((0, 2)), y=np.zeros(0, dtype=int)), "empty"),
    (lambda p: np.savez(p, x=np.array([[{}]], dtype=object), y=np.zeros(1, dtype=int)), "readable .npz"),
    (lambda p: p.write_bytes(b"not a zip"), "readable .npz"),
])
def test_npz_errors(tmp_path: Path, make, word: str) -> None:
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(TdslError, match=word):
        load_npz(path)


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(TdslError, match="no such file"):
        load_npz(tmp_path / "none.npz")
    with pytest.raises(TdslError, match="no such file"):
        load_npy_pair(tmp_path / "x.npy", tmp_path / "y.npy")
    with pytest.raises(TdslError, match="no such dataset"):
        load_dataset(str(tmp_path / "nothing"))
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(TdslError, match="must be an .npz"):
        load_dataset(str(tmp_path / "data.csv"))


def write_images(root: Path, per_class: int = 3, size: tuple[int, int] = (6, 5), mode: str = "L") -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(root / cls / f"{i}.png")


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3)])
def test_image_folder(tmp_path: Path, mode: str, channels: int) -> None:
    write_images(tmp_path, mode=mode)
    d = load_image_folder(tmp_path)
    assert d.class_names == ["cat", "dog"] and d.num_classes == 2
    assert d.sample_shape == (channels, 5, 6)
    assert len(d.x_train) + len(d.x_test) == 6
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert torch.equal(load_dataset(str(tmp_path)).x_test, d.x_test)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(TdslError, match="no class folders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TdslError, match="holds no images"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").rmdir()
    write_images(tmp_path)
    from PIL import Image

    Image.new("L", (9, 9)).save(tmp_path / "dog" / "big.png")
    with pytest.raises(TdslError, match=r"big.png: image shape \[9, 9\] differs"):
        load_image_folder(tmp_path)
    (tmp_path / "dog" / "big.png").write_bytes(b"garbage")
    with pytest.raises(TdslError, match="not a readable image"):
        load_image_folder(tmp_path)
    with pytest.raises(TdslError, match="no such folder"):
        load_image_folder(tmp_path / "missing")
