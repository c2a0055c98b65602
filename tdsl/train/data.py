"""Datasets as in-memory `(x, y)` tensors: scikit-learn's digits, numpy arrays, image folders.

Everything here fits in memory (the trainer indexes tensors directly, which keeps data order a
pure function of one generator and makes resuming exact). `x` is float32, `y` int64 class
indices in 0..num_classes-1.

- `digits`: the 1,797 8x8 images bundled with scikit-learn (no download), pixels 0..16 scaled to
  [0, 1] then standardised with the training split's mean and std; a stratified split with a
  fixed seed (80/20 by default) so that every run sees the same train and test sets. Layout
  `flat` gives [N, 64] (an MLP), `image` gives [N, 1, 8, 8] (a conv net).
- numpy: an `.npz` holding `x` and `y` (and optionally `x_test`, `y_test`), or a folder holding
  `x.npy` and `y.npy`. Values are used as given (cast to float32); without a test set a
  deterministic split is taken as for digits.
- image folder: `root/<class>/*.png` (also .jpg/.jpeg/.bmp), classes in sorted order, read with
  Pillow; all images must have one size; grayscale gives [N, 1, H, W], colour [N, 3, H, W];
  values scaled to [0, 1].
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tdsl.errors import TdslError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class Dataset:
    """Train and test tensors plus what a report needs to name them."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: list[str] = field(default_factory=list)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def reshaped(self, sample_shape: Sequence[int]) -> "Dataset":
        """The same data with each sample reshaped (same element count), or a TdslError."""
        shape = tuple(int(d) for d in sample_shape)
        if shape == self.sample_shape:
            return self
        if int(np.prod(shape)) != int(np.prod(self.sample_shape)):
            raise TdslError(f"dataset '{self.name}' has samples of shape {list(self.sample_shape)}, "
                            f"which cannot be reshaped to {list(shape)}")
        return Dataset(self.name, self.x_train.reshape(-1, *shape), self.y_train,
                       self.x_test.reshape(-1, *shape), self.y_test, self.num_classes, self.class_names)


def split_indices(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded train/test split of sample indices."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise TdslError(f"test fraction must be between 0 and 1, got {test_fraction}")
    idx = np.arange(len(y))
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and round(len(y) * test_fraction) >= len(counts) else None
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


def load_digits(layout: str = "flat", test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits, normalised, as [N, 64] (`flat`) or [N, 1, 8, 8] (`image`)."""
    from sklearn.datasets import load_digits as sk_digits

    if layout not in ("flat", "image"):
        raise TdslError(f"digits layout must be 'flat' or 'image', got '{layout}'")
    bunch = sk_digits()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    train, test = split_indices(y, test_fraction, seed)
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    if layout == "image":
        x = x.reshape(-1, 1, 8, 8)
    return Dataset("digits", torch.from_numpy(x[train]), torch.from_numpy(y[train]),
                   torch.from_numpy(x[test]), torch.from_numpy(y[test]), 10,
                   [str(i) for i in range(10)])


def _labels(y: np.ndarray, origin: str) -> np.ndarray:
    if y.ndim != 1:
        raise TdslError(f"{origin}: labels must be a 1-D array of class indices, got shape {list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TdslError(f"{origin}: labels must be integer class indices, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise TdslError(f"{origin}: labels must be >= 0, found {int(y.min())}")
    return y.astype(np.int64)


def _features(x: np.ndarray, origin: str) -> np.ndarray:
    if x.ndim < 2:
        raise TdslError(f"{origin}: inputs must be an array [N, ...] with one row per sample, "
                        f"got shape {list(x.shape)}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
            or x.dtype == np.bool_):
        raise TdslError(f"{origin}: inputs must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise TdslError(f"{origin}: inputs contain NaN or infinite values")
    return x


def from_arrays(name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray | None = None,
                y_test: np.ndarray | None = None, test_fraction: float = 0.2, seed: int = 0,
                class_names: list[str] | None = None) -> Dataset:
    """Check and split user arrays into a Dataset."""
    x, y = _features(x, name), _labels(y, name)
    if len(x) != len(y):
        raise TdslError(f"{name}: {len(x)} inputs but {len(y)} labels (they must match one to one)")
    if len(x) == 0:
        raise TdslError(f"{name}: the dataset is empty")
    if (x_test is None) != (y_test is None):
        raise TdslError(f"{name}: give both x_test and y_test, or neither")
    if x_test is not None and y_test is not None:
        xt, yt = _features(x_test, f"{name} (test)"), _labels(y_test, f"{name} (test)")
        if len(xt) != len(yt):
            raise TdslError(f"{name}: {len(xt)} test inputs but {len(yt)} test labels")
        if xt.shape[1:] != x.shape[1:]:
            raise TdslError(f"{name}: test samples have shape {list(xt.shape[1:])}, "
                            f"training samples {list(x.shape[1:])}")
        xtr, ytr = x, y
    else:
        if len(x) < 2:
            raise TdslError(f"{name}: need at least 2 samples to split off a test set, got {len(x)}")
        train, test = split_indices(y, test_fraction, seed)
        xtr, ytr, xt, yt = x[train], y[train], x[test], y[test]
    num_classes = int(max(ytr.max(), yt.max() if len(yt) else 0)) + 1
    names = class_names or [str(i) for i in range(num_classes)]
    return Dataset(name, torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(ytr),
                   torch.from_numpy(np.ascontiguousarray(xt)), torch.from_numpy(yt), num_classes, names)


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise TdslError(f"no such file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise TdslError(f"{path}: not a readable .npy array ({e})") from None


def load_npz(path: str | Path, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """An `.npz` with arrays `x`, `y` (and optionally `x_test`, `y_test`)."""
    path = Path(path)
    if not path.is_file():
        raise TdslError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # BadZipFile: not a zip at all
        raise TdslError(f"{path}: not a readable .npz archive ({e})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise TdslError(f"{path}: missing array(s) {', '.join(missing)}; an .npz dataset holds 'x' and 'y' "
                        f"(found: {', '.join(sorted(arrays)) or 'nothing'})")
    return from_arrays(str(path), arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"),
                       test_fraction, seed)


def load_npy_pair(x_path: str | Path, y_path: str | Path, test_fraction: float = 0.2,
                  seed: int = 0) -> Dataset:
    """Two `.npy` files, inputs and labels."""
    x, y = _load_npy(Path(x_path)), _load_npy(Path(y_path))
    return from_arrays(str(x_path), x, y, test_fraction=test_fraction, seed=seed)


def load_image_folder(root: str | Path, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """`root/<class>/*.png`: one sub-folder per class, images of one size."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise TdslError(f"no such folder: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise TdslError(f"{root}: no class folders; expected {root}/<class>/<image>.png")
    images: list[np.ndarray] = []
    labels: list[int] = []
    size: tuple[int, ...] | None = None
    first = ""
    for label, cls in enumerate(classes):
        files = sorted(f for f in (root / cls).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TdslError(f"{root / cls}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            try:
                with Image.open(f) as im:
                    im.load()
                    gray = im.mode in ("1", "L", "LA")
                    arr = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32)
            except (UnidentifiedImageError, OSError) as e:
                raise TdslError(f"{f}: not a readable image ({e})") from None
            if size is None:
                size, first = arr.shape, str(f)
            elif arr.shape != size:
                raise TdslError(f"{f}: image shape {list(arr.shape)} differs from {list(size)} of {first}; "
                                "all images must have one size and mode")
            images.append(arr)
            labels.append(label)
    x = np.stack(images) / 255.0
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return from_arrays(str(root), x, np.asarray(labels, dtype=np.int64), test_fraction=test_fraction,
                       seed=seed, class_names=classes)


def load_dataset(spec: str, layout: str = "flat", seed: int = 0) -> Dataset:
    """`digits`, an `.npz`, a folder with `x.npy`/`y.npy`, or an image folder."""
    if spec == "digits":
        return load_digits(layout, seed=seed)
    path = Path(spec)
    if not path.exists():
        raise TdslError(f"no such dataset: '{spec}' (expected 'digits', an .npz file, a folder with "
                        "x.npy and y.npy, or an image folder root/<class>/*.png)")
    if path.is_file():
        if path.suffix != ".npz":
            raise TdslError(f"{spec}: a dataset file must be an .npz with arrays 'x' and 'y'")
        return load_npz(path, seed=seed)
    if (path / "x.npy").exists() or (path / "y.npy").exists():
        return load_npy_pair(path / "x.npy", path / "y.npy", seed=seed)
    return load_image_folder(path, seed=seed)


# Fitting a dataset to a compiled model (what `tdsl train` feeds it)

def input_dims(model: Any) -> list[int | None]:
    """The entry forward's input dims, None where dynamic; a TdslError unless one input."""
    from tdsl.dialects.tdsl import dims_of, entry_layer

    inputs = entry_layer(model.module).forward.function_type.inputs.data
    if len(inputs) != 1:
        raise TdslError(f"`tdsl train` feeds one input tensor, but {model.entry} takes {len(inputs)}")
    dims = dims_of(inputs[0])
    if dims is None:
        raise TdslError(f"the rank of {model.entry}'s input is not known; `tdsl train` needs it")
    return [None if d is None or d < 0 else d for d in dims]


def output_classes(model: Any) -> int | None:
    """The class count of the entry forward's one [N, C] output, or None."""
    from tdsl.dialects.tdsl import dims_of, entry_layer

    outputs = entry_layer(model.module).forward.function_type.outputs.data
    dims = dims_of(outputs[0]) if len(outputs) == 1 else None
    if not dims or len(dims) != 2 or dims[-1] is None or dims[-1] < 0:
        return None
    return int(dims[-1])


def fit_dataset(model: Any, spec: str, dims: list[int | None]) -> Dataset:
    """Load the dataset `spec` (`load_dataset`, or 'mnist1d') shaped for a compiled model
    whose input dims are `dims` (`input_dims(model)`), or explain the mismatch."""
    sample = dims[1:]
    layout = "image" if len(sample) == 3 else "flat"
    if spec == "mnist1d":
        from tdsl.train.recipes import mnist1d_dataset
        data = mnist1d_dataset()
    else:
        data = load_dataset(spec, layout=layout)
    shown = "[N, " + ", ".join("?" if d is None else str(d) for d in sample) + "]"
    if any(d is None for d in sample):
        if len(sample) != len(data.sample_shape):
            raise TdslError(f"model {model.entry} takes inputs {shown} but dataset '{data.name}' "
                            f"has samples of shape {list(data.sample_shape)}")
        return data
    try:
        data = data.reshaped([int(d) for d in sample if d is not None])
    except TdslError:
        hint = (" For digits (8x8 images) use `mlp` with its default in_features=64, or "
                "`lenet --param image_size=8`." if spec == "digits" else "")
        raise TdslError(f"model {model.entry} takes inputs {shown} but dataset '{data.name}' has "
                        f"samples of shape {list(data.sample_shape)}.{hint}") from None
    classes = output_classes(model)
    if classes is not None and classes < data.num_classes:
        raise TdslError(f"model {model.entry} has {classes} outputs but dataset '{data.name}' has "
                        f"{data.num_classes} classes; set the model's class count, e.g. "
                        f"--param num_classes={data.num_classes}")
    return data
