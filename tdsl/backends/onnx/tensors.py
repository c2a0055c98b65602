"""Initializers of the ONNX backend: trits as real 2-bit (or 8-bit) integers, batch-norm folding.

INT2 layout (ONNX IR 13, checked against `onnx.numpy_helper.to_array` of onnx 1.23): four
signed two's-complement values per byte, element k of the flattened (C order) tensor at
bits 2·(k mod 4), the last byte padded with zeros:

    byte = v[4i] & 3 | (v[4i+1] & 3) << 2 | (v[4i+2] & 3) << 4 | (v[4i+3] & 3) << 6

so trit −1 is 0b11, 0 is 0b00, +1 is 0b01. The bit order is tdsl's `2bit` format
(docs/PACKED_FORMAT.md), but the codes are not (tdsl stores t + 1) and ONNX packs the whole
tensor as one run, not row by row; the initializer is therefore rebuilt from the trits.
It goes into `raw_data` (0.25 byte per trit): `onnx.helper.make_tensor` would put one
packed byte per varint in `int32_data`, up to twice the size.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

from tdsl.errors import TdslError


def int2_tensor(name: str, trits: np.ndarray) -> TensorProto:
    """An INT2 initializer holding `trits` (integers in {-1, 0, 1}) in their shape."""
    values = np.asarray(trits)
    if values.size and (values.min() < -1 or values.max() > 1):
        raise TdslError(f"'{name}': INT2 trits must be -1, 0 or 1, found {int(values.min())}..{int(values.max())}")
    codes = (values.astype(np.int8).reshape(-1) & 3).astype(np.uint8)
    codes = np.concatenate([codes, np.zeros((-codes.size) % 4, dtype=np.uint8)]).reshape(-1, 4)
    packed = codes[:, 0] | codes[:, 1] << 2 | codes[:, 2] << 4 | codes[:, 3] << 6
    tensor = TensorProto(name=name, data_type=TensorProto.INT2, dims=list(values.shape))
    tensor.raw_data = packed.astype(np.uint8).tobytes()
    return tensor


def array_tensor(name: str, value: np.ndarray) -> TensorProto:
    """An initializer of `value`'s dtype (float32, float16, float64, int8, int64)."""
    return numpy_helper.from_array(np.ascontiguousarray(value), name)


def per_channel(value: np.ndarray, channels: int) -> np.ndarray:
    """A scale of shape () or [channels] as float64 [channels]."""
    v = np.asarray(value, dtype=np.float64)
    return np.full(channels, float(v)) if v.ndim == 0 else v.reshape(channels)


def fold_bn(channels: int, bias: np.ndarray | None,
            bn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
            eps: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(multiplier, bias) of `bn(y + b)` written as `y·m + c`, per channel, in float64:
    m = γ/√(σ²+ε), c = β + (b − μ)·m. Without a bn, m is None and c is `b` (or None)."""
    b = None if bias is None else np.asarray(bias, dtype=np.float64).reshape(channels)
    if bn is None:
        return None, b
    mean, var, gamma, beta = (np.asarray(a, dtype=np.float64).reshape(channels) for a in bn)
    m = gamma / np.sqrt(var + eps)
    c = beta + ((0.0 if b is None else b) - mean) * m
    return m, c
