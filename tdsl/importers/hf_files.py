"""Reading a Hugging Face model folder without torch: config.json and safetensors weights.

`safetensors.numpy` cannot return bfloat16 (numpy has no such dtype), and published BitNet
checkpoints are bf16, so the tensors are read here from the file format itself (an 8-byte
little-endian header length, a JSON header of `{name: {dtype, shape, data_offsets}}`, then
the raw bytes) through a read-only memory map: a 2B-parameter checkpoint is not copied into
memory to be imported. bf16 becomes float32 exactly (its 16 bits are float32's top half).
A sharded checkpoint (`model.safetensors.index.json`) is read through its weight map.
Every problem is a `TdslError` naming the file and the tensor or key.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from tdsl.errors import TdslError

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""safetensors' own limit on the JSON header."""

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64, "U8": np.uint8,
           "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "BOOL": np.bool_}
"""safetensors dtype -> the numpy dtype its bytes are read as (BF16 as raw uint16)."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a TdslError saying what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TdslError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise TdslError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise TdslError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except OSError as e:
        raise TdslError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise TdslError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


class SafetensorsFile:
    """One safetensors file: its tensor names, dtypes and shapes, each tensor read on demand."""

    def __init__(self, path: Path):
        self.path = path
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise TdslError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER_BYTES or 8 + n > size:
                    raise TdslError(f"{path}: not a safetensors file (header length {n} does not fit the "
                                    f"{size}-byte file)")
                header = json.loads(f.read(n).decode("utf-8"))
        except FileNotFoundError:
            raise TdslError(f"{path}: missing") from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise TdslError(f"{path}: not a safetensors file (its header is not JSON)") from None
        except OSError as e:
            raise TdslError(f"{path}: cannot read ({e.strerror})") from None
        if not isinstance(header, dict):
            raise TdslError(f"{path}: not a safetensors file (its header is not a JSON object)")
        header.pop("__metadata__", None)
        self._start = 8 + n
        self._size = size - self._start
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            self.entries[name] = self._check_entry(name, entry)

    def _check_entry(self, name: str, entry: Any) -> tuple[str, tuple[int, ...], int, int]:
        where = f"{self.path}: tensor '{name}'"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise TdslError(f"{where}: header entry lacks dtype, shape or data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPES:
            raise TdslError(f"{where}: unsupported dtype {dtype!r} (tdsl reads {', '.join(_DTYPES)})")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise TdslError(f"{where}: shape {shape!r} is not a list of sizes")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= self._size):
            raise TdslError(f"{where}: data offsets {offsets!r} lie outside the file's {self._size} data bytes "
                            "(truncated or damaged file)")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise TdslError(f"{where}: {offsets[1] - offsets[0]} bytes stored, {dtype} {tuple(shape)} needs {nbytes}")
        return dtype, tuple(shape), self._start + offsets[0], nbytes

    def dtype(self, name: str) -> str:
        return self.entries[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def read(self, name: str) -> np.ndarray:
        """The tensor as stored (BF16 widened to float32), read-only for the memory-mapped ones."""
        dtype, shape, start, nbytes = self.entries[name]
        if nbytes == 0:
            raw = np.zeros(shape, dtype=_DTYPES[dtype])
        else:
            raw = np.memmap(self.path, dtype=_DTYPES[dtype], mode="r", offset=start, shape=shape)
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw


class CheckpointTensors:
    """Every tensor of a folder's weights (one model.safetensors, or the shards an index names)."""

    def __init__(self, folder: Path):
        single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
        self.files: dict[str, SafetensorsFile] = {}
        if single.is_file():
            shard = SafetensorsFile(single)
            self.files = dict.fromkeys(shard.entries, shard)
        elif index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise TdslError(f"{index}: missing key 'weight_map' (tensor name -> shard file)")
            shards: dict[str, SafetensorsFile] = {}
            for name, file in weight_map.items():
                if not isinstance(file, str) or "/" in file or "\\" in file or file in ("", ".", ".."):
                    raise TdslError(f"{index}: tensor '{name}' maps to {file!r}, not a file name in the folder")
                if file not in shards:
                    shards[file] = SafetensorsFile(folder / file)
                if name not in shards[file].entries:
                    raise TdslError(f"{folder / file}: tensor '{name}' missing (the index says it is there)")
                self.files[name] = shards[file]
        else:
            raise TdslError(f"{folder}: no model.safetensors (or model.safetensors.index.json): tdsl imports "
                            "safetensors checkpoints only, never pickled .bin files")

    def names(self) -> list[str]:
        return list(self.files)

    def has(self, name: str) -> bool:
        return name in self.files

    def where(self, name: str) -> str:
        """'FILE: tensor NAME', for messages."""
        return f"{self.files[name].path}: tensor '{name}'"

    def shape(self, name: str) -> tuple[int, ...]:
        return self.files[name].shape(name)

    def dtype(self, name: str) -> str:
        return self.files[name].dtype(name)

    def read(self, name: str) -> np.ndarray:
        return self.files[name].read(name)
