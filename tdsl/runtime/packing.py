"""The packed ternary weight layout, format version 1: the one place it is defined.

A ternary weight holds trits t in {-1, 0, +1}. Packing stores each trit as its code
c = t + 1 in {0, 1, 2}; a kernel undoes the offset once per dot product (t = c - 1, so
sum(x * t) = sum(x * c) - sum(x)). docs/PACKED_FORMAT.md repeats this with examples.

Matrix view. A weight of shape S is packed as a matrix [rows, K]:
  rank >= 2: rows = S[0] (output channels), K = prod(S[1:]) in C order, so a conv weight
             [O, I, kh, kw] is the row-major [O, I*kh*kw] matrix that `reshape(O, -1)` gives;
  rank 1:    one row, K = S[0];
  rank 0:    one row, K = 1.
Each row is packed on its own into `bytes_per_row(K, format)` bytes, so the result is a
C-contiguous uint8 array [rows, bytes_per_row] and row n starts at byte n * bytes_per_row.
Rows are not padded beyond the last byte a trit needs (no vector-width padding): a small
conv (K = 27) would otherwise grow 64 / 7 times, and the common K (multiples of 256) already
give whole 64-byte chunks in "2bit"; kernels handle a short tail chunk themselves.

Format "2bit" (4 trits per byte, 0.25 B/trit): bytes_per_row = ceil(K / 4). Byte i of a row
holds k = 4i .. 4i+3, element k at bits 2*(k mod 4):
    byte = c[4i] | c[4i+1] << 2 | c[4i+2] << 4 | c[4i+3] << 6
Example: trits (+1, 0, -1, 0) -> codes (2, 1, 0, 1) -> 0b01_00_01_10 = 0x46 = 70.
Code 3 is never written; unpack rejects it.

Format "base3" (5 trits per byte, 0.2 B/trit): bytes_per_row = ceil(K / 5). Byte i holds
k = 5i .. 5i+4 as the base-3 number v = sum_j c[5i+j] * 3^(4-j) (element 5i first, most
significant) stored as q = ceil(v * 256 / 243), i.e. v/243 rounded up to a multiple of 1/256.
Why: q / 256 is then the base-3 fraction 0.c0c1c2c3c4 (plus less than 1/256), so digit j is
the leading digit of the fraction of q * 3^j, which a SIMD kernel reads with byte arithmetic
and no division or table (the llama.cpp TQ1_0 trick):
    t = (q * 3^j) mod 256        (uint8 multiply, or t <- t + t + t per step)
    c[5i+j] = (t >= 86) + (t >= 171)
The exact inverse is v = (q * 243) >> 8. Only 243 of the 256 byte values occur; unpack
rejects the other 13. Example: trits (+1, 0, -1, 0, +1) -> codes (2, 1, 0, 1, 2) ->
v = 194 -> q = ceil(194 * 256 / 243) = 205 = 0xCD.

Padding. The last byte of a row is filled up with trit 0 (code 1 in "2bit", digit 1 in
"base3"), so a packed row decodes to zeros past K and a kernel that reads whole bytes adds
x * 0 for them. unpack drops those positions and does not check them.

`packed_nbytes(shape, format)` is the single source of truth for sizes. The inner loops
are Numba-jitted; `pack`/`unpack` check their inputs first and raise `TdslError`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numba import njit

from tdsl.errors import TdslError

PACK_FORMAT_VERSION = 1
FORMATS: tuple[str, ...] = ("2bit", "base3")
TRITS_PER_BYTE: dict[str, int] = {"2bit": 4, "base3": 5}

# base3 byte values that encode some 5 codes: BASE3_VALID[q] is True for the 243 used q.
BASE3_VALID = np.zeros(256, dtype=np.bool_)
BASE3_VALID[(np.arange(243) * 256 + 242) // 243] = True


def check_format(format: str) -> str:
    """Return `format` if it names a packed format, else raise a TdslError listing them."""
    if format not in FORMATS:
        valid = ", ".join(f"'{f}'" for f in FORMATS)
        raise TdslError(f"unknown packed format {format!r}: valid formats are {valid}")
    return format


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The [rows, K] matrix a weight of `shape` is packed as (see the module docstring)."""
    dims = tuple(shape)
    for d in dims:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0:
            raise TdslError(f"bad weight shape {dims}: dimensions must be non-negative integers")
    if len(dims) == 0:
        return 1, 1
    if len(dims) == 1:
        return 1, int(dims[0])
    return int(dims[0]), math.prod(int(d) for d in dims[1:])


def bytes_per_row(K: int, format: str = "2bit") -> int:
    """Bytes of one packed row of K trits: ceil(K/4) for "2bit", ceil(K/5) for "base3"."""
    per = TRITS_PER_BYTE[check_format(format)]
    if K < 0:
        raise TdslError(f"bad row length K={K}: must be non-negative")
    return -(-K // per)


def packed_shape(shape: Sequence[int], format: str = "2bit") -> tuple[int, int]:
    """The [rows, bytes_per_row] shape of the packed array for a weight of `shape`."""
    rows, K = matrix_shape(shape)
    return rows, bytes_per_row(K, format)


def packed_nbytes(shape: Sequence[int], format: str = "2bit") -> int:
    """Total packed bytes for a weight of `shape`: rows * bytes_per_row(K, format)."""
    rows, nb = packed_shape(shape, format)
    return rows * nb


# ---------------------------------------------------------------------------------------
# Numba inner loops. Each returns -1 on success, else the flat index of the first bad
# element (pack: input element; unpack: packed byte) so the caller can name it.
# Intermediates are cast to small unsigned types so Numba does not widen them to int64.


@njit(cache=True)
def _pack_rows(m, out, per):
    """Both formats, per trits a byte: 4 ("2bit", code j at bits 2j) or 5 ("base3", the
    base-3 number v of the codes, the first most significant, stored as ceil(v*256/243))."""
    rows, K = m.shape
    nb = out.shape[1]
    for r in range(rows):
        for i in range(nb):
            v = np.uint32(0)
            for j in range(per):
                k = per * i + j
                c = np.uint32(1)  # padding code
                if k < K:
                    x = m[r, k]
                    if x == 1:
                        c = np.uint32(2)
                    elif x == 0:
                        c = np.uint32(1)
                    elif x == -1:
                        c = np.uint32(0)
                    else:
                        return r * K + k
                if per == 4:
                    v = np.uint32(v | (c << np.uint32(2 * j)))
                else:
                    v = np.uint32(v * np.uint32(3) + c)
            if per == 4:
                out[r, i] = np.uint8(v)
            else:
                out[r, i] = np.uint8((v * np.uint32(256) + np.uint32(242)) // np.uint32(243))
    return -1


@njit(cache=True)
def _unpack_2bit(p, out):
    rows, K = out.shape
    nb = p.shape[1]
    for r in range(rows):
        for i in range(nb):
            byte = p[r, i]
            for j in range(4):
                k = 4 * i + j
                if k < K:
                    c = np.uint8((byte >> np.uint8(2 * j)) & np.uint8(3))
                    if c == 3:
                        return r * nb + i
                    out[r, k] = np.int8(c) - np.int8(1)
    return -1


@njit(cache=True)
def _unpack_base3(p, out, valid):
    rows, K = out.shape
    nb = p.shape[1]
    for r in range(rows):
        for i in range(nb):
            q = p[r, i]
            if not valid[q]:  # every byte holds at least one used trit (5i < K)
                return r * nb + i
            v = np.uint32((np.uint32(q) * np.uint32(243)) >> np.uint32(8))  # exact inverse
            for j in range(4, -1, -1):
                k = 5 * i + j
                if k < K:
                    out[r, k] = np.int8(v % np.uint32(3)) - np.int8(1)
                v = np.uint32(v // np.uint32(3))
    return -1


# ---------------------------------------------------------------------------------------


def _as_matrix(trits: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Check the dtype and return the C-contiguous [rows, K] view and the original shape."""
    a = np.asarray(trits)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    elif not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TdslError(f"cannot pack an array of dtype {a.dtype}: ternary weights must be "
                        "an integer or float array holding -1, 0 and +1")
    rows, K = matrix_shape(a.shape)
    return np.ascontiguousarray(a).reshape(rows, K), a.shape


def bad_value_error(value: object, index: tuple[int, ...], integral: bool, where: str) -> TdslError:
    """The error for a value that is not a trit, at `index` of `where` (e.g. "a float32
    array"); shared with `tdsl.backends.torch.packing` so both say the same."""
    if not integral:
        return TdslError(f"cannot pack: non-integral value {value!r} at index {index} in "
                         f"{where}; ternary weights must be exactly -1, 0 or +1 "
                         "(quantize them first)")
    return TdslError(f"cannot pack: non-ternary value {value!r} at index {index}; "
                     "ternary weights must be -1, 0 or +1")


def _bad_value_error(a: np.ndarray, shape: tuple[int, ...], flat: int) -> TdslError:
    index = tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()
    value = a.reshape(-1)[flat].item()
    integral = (not np.issubdtype(a.dtype, np.floating)
                or bool(np.isfinite(value) and value == np.trunc(value)))
    return bad_value_error(value, index, integral, f"a {a.dtype} array")


def pack(trits: np.ndarray, format: str = "2bit") -> np.ndarray:
    """Pack a ternary array (any shape, values in {-1, 0, +1}) into uint8 [rows, bytes_per_row].

    Integer, bool and float inputs are accepted if every value is exactly -1, 0 or +1.
    """
    check_format(format)
    m, shape = _as_matrix(trits)
    rows, K = m.shape
    out = np.empty((rows, bytes_per_row(K, format)), dtype=np.uint8)
    bad = _pack_rows(m, out, TRITS_PER_BYTE[format])
    if bad >= 0:
        raise _bad_value_error(m, shape, int(bad))
    return out


def unpack(packed: np.ndarray, shape: Sequence[int], format: str = "2bit") -> np.ndarray:
    """Unpack uint8 bytes made by `pack` into an int8 array of `shape` with values in {-1, 0, 1}.

    `packed` is the [rows, bytes_per_row] array or the same bytes flattened to 1-D.
    """
    check_format(format)
    rows, K = matrix_shape(shape)
    shape = tuple(int(d) for d in shape)
    nb = bytes_per_row(K, format)
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise TdslError(f"packed weights must be uint8, got {p.dtype}")
    if not (p.shape == (rows, nb) or (p.ndim == 1 and p.size == rows * nb)):
        raise TdslError(f"packed array of shape {p.shape} ({p.size} bytes) does not fit a "
                        f"weight of shape {shape} in format {format!r}: expected shape "
                        f"({rows}, {nb}), {rows * nb} bytes")
    p = np.ascontiguousarray(p).reshape(rows, nb)
    out = np.empty((rows, K), dtype=np.int8)
    if format == "2bit":
        bad = _unpack_2bit(p, out)
        what = "holds the 2-bit code 3, which no trit has"
    else:
        bad = _unpack_base3(p, out, BASE3_VALID)
        what = "is not one of the 243 base-3 byte values"
    if bad >= 0:
        r, i = divmod(int(bad), nb)
        raise TdslError(f"corrupt packed weights: byte {p[r, i]:#04x} at row {r}, byte {i} "
                        f"{what} (format {format!r})")
    return out.reshape(shape)
