"""The packed layout (tdsl.runtime.packing): exact bytes, exhaustive round trips, errors."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from tdsl.errors import TdslError
from tdsl.runtime.packing import (
    BASE3_VALID,
    FORMATS,
    PACK_FORMAT_VERSION,
    bytes_per_row,
    matrix_shape,
    pack,
    packed_nbytes,
    packed_shape,
    unpack,
)

ALL5 = np.array(list(itertools.product((-1, 0, 1), repeat=5)), dtype=np.int8)  # 243 x 5
ALL4 = np.array(list(itertools.product((-1, 0, 1), repeat=4)), dtype=np.int8)  # 81 x 4


def reference_pack(m: np.ndarray, format: str) -> np.ndarray:
    """The layout as plain Python integers, straight from the docs, for [rows, K] int arrays."""
    per = 4 if format == "2bit" else 5
    rows, K = m.shape
    nb = -(-K // per)
    out = np.zeros((rows, nb), dtype=np.uint8)
    for r in range(rows):
        for i in range(nb):
            codes = [int(m[r, k]) + 1 if k < K else 1 for k in range(per * i, per * i + per)]
            if format == "2bit":
                out[r, i] = sum(c << (2 * j) for j, c in enumerate(codes))
            else:
                v = sum(c * 3 ** (4 - j) for j, c in enumerate(codes))
                out[r, i] = -(-v * 256 // 243)
    return out


def kernel_digits(q: np.ndarray) -> np.ndarray:
    """Decode base-3 bytes the way the SIMD kernels do: uint8 t = q*3^j, (t>=86)+(t>=171)."""
    digits = []
    t = q.astype(np.uint8)
    for _ in range(5):
        digits.append((t >= 86).astype(np.int8) + (t >= 171).astype(np.int8))
        t = (t + t + t).astype(np.uint8)  # wraps mod 256, as byte adds do
    return np.stack(digits, axis=-1)


def test_version_and_formats() -> None:
    assert PACK_FORMAT_VERSION == 1
    assert FORMATS == ("2bit", "base3")


# --- exact bytes (the worked examples in the module docstring and docs/PACKED_FORMAT.md)


def test_worked_example_2bit() -> None:
    assert pack(np.array([1, 0, -1, 0]), "2bit").tolist() == [[0x46]]
    # K = 7: second byte holds k = 4..6 and one padding code 1 at bits 6-7.
    w = np.array([[1, 0, -1, 0, -1, -1, 1], [0, 0, 0, 0, 0, 0, 0]])
    assert pack(w, "2bit").tolist() == [[0x46, 0b01_10_00_00], [0x55, 0x55]]


def test_worked_example_base3() -> None:
    assert pack(np.array([1, 0, -1, 0, 1]), "base3").tolist() == [[205]]
    # K = 7: second byte holds codes (0, 2) then three padding digits 1: v = 0*81+2*27+1*9+1*3+1.
    w = np.array([[1, 0, -1, 0, 1, -1, 1]])
    assert pack(w, "base3").tolist() == [[205, -(-67 * 256 // 243)]]
    assert pack(np.zeros(5), "base3").tolist() == [[-(-121 * 256 // 243)]]
    assert pack(-np.ones(5), "base3").tolist() == [[0]]
    assert pack(np.ones(5), "base3").tolist() == [[255]]


# --- exhaustive small cases


@pytest.mark.parametrize("format", FORMATS)
def test_all_243_patterns_round_trip(format: str) -> None:
    packed = pack(ALL5, format)
    assert packed.shape == (243, bytes_per_row(5, format))
    np.testing.assert_array_equal(packed, reference_pack(ALL5, format))
    np.testing.assert_array_equal(unpack(packed, ALL5.shape, format), ALL5)


def test_base3_bytes_are_distinct_and_valid() -> None:
    packed = pack(ALL5, "base3")[:, 0]
    assert len(set(packed.tolist())) == 243
    assert BASE3_VALID.sum() == 243 and BASE3_VALID[packed].all()


def test_2bit_all_81_byte_patterns() -> None:
    packed = pack(ALL4, "2bit")[:, 0]
    assert sorted(packed.tolist()) == [b for b in range(256)
                                       if all((b >> (2 * j)) & 3 != 3 for j in range(4))]
    np.testing.assert_array_equal(unpack(packed[:, None], ALL4.shape, "2bit"), ALL4)


def test_2bit_every_byte_value_unpacks_or_is_rejected() -> None:
    for b in range(256):
        codes = [(b >> (2 * j)) & 3 for j in range(4)]
        p = np.array([[b]], dtype=np.uint8)
        if 3 in codes:
            with pytest.raises(TdslError, match="code 3"):
                unpack(p, (1, 4), "2bit")
        else:
            assert unpack(p, (1, 4), "2bit").tolist() == [[c - 1 for c in codes]]


def test_base3_kernel_trick_matches_arithmetic_unpack() -> None:
    q = np.flatnonzero(BASE3_VALID).astype(np.uint8)
    assert q.size == 243
    np.testing.assert_array_equal(kernel_digits(q) - 1, unpack(q[:, None], (243, 5), "base3"))
    # and the exact inverse v = (q * 243) >> 8 names the same digits, most significant first
    v = (q.astype(np.int32) * 243) >> 8
    np.testing.assert_array_equal(kernel_digits(q), np.stack([v // 3 ** (4 - j) % 3 for j in range(5)], -1))


def test_base3_invalid_bytes_are_rejected() -> None:
    for q in np.flatnonzero(~BASE3_VALID):
        with pytest.raises(TdslError, match=f"byte {q:#04x} at row 0, byte 0 is not one of the 243"):
            unpack(np.array([[q]], dtype=np.uint8), (1, 5), "base3")


@pytest.mark.parametrize("format", FORMATS)
def test_padding_is_ignored(format: str) -> None:
    # K = 1: the other positions of the byte are padding; any value there decodes the same.
    per = 4 if format == "2bit" else 5
    for row in (ALL4 if per == 4 else ALL5):
        p = pack(row, format)
        assert unpack(p, (1,), format).tolist() == [row[0]]
    assert unpack(np.array([0xFF - 0b11], dtype=np.uint8), (1,), "2bit").tolist() == [-1]


# --- shapes


SHAPES = [(1,), (3,), (7,), (13,), (37,), (), (0,), (0, 5), (5, 0), (1, 1), (2, 13), (3, 37),
          (16, 3, 3, 3), (4, 5, 1, 7), (2, 3, 4, 5, 6)]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_shapes(shape: tuple[int, ...], format: str) -> None:
    rng = np.random.default_rng(sum(shape) + len(shape))
    w = rng.integers(-1, 2, size=shape).astype(np.int8)
    packed = pack(w, format)
    rows, K = matrix_shape(shape)
    assert packed.dtype == np.uint8 and packed.flags.c_contiguous
    assert packed.shape == packed_shape(shape, format) == (rows, bytes_per_row(K, format))
    assert packed.size == packed_nbytes(shape, format)
    np.testing.assert_array_equal(packed, reference_pack(w.reshape(rows, K), format))
    out = unpack(packed, shape, format)
    assert out.dtype == np.int8 and out.shape == w.shape
    np.testing.assert_array_equal(out, w)
    np.testing.assert_array_equal(unpack(packed.reshape(-1), shape, format), w)


def test_matrix_view() -> None:
    assert matrix_shape(()) == (1, 1)
    assert matrix_shape((7,)) == (1, 7)
    assert matrix_shape((4, 7)) == (4, 7)
    assert matrix_shape((64, 3, 3, 3)) == (64, 27)
    conv = np.random.default_rng(0).integers(-1, 2, size=(8, 3, 3, 3))
    np.testing.assert_array_equal(pack(conv, "base3"), pack(conv.reshape(8, 27), "base3"))


@pytest.mark.parametrize("K, two, three", [(0, 0, 0), (1, 1, 1), (4, 1, 1), (5, 2, 1), (6, 2, 2),
                                           (27, 7, 6), (4096, 1024, 820), (11008, 2752, 2202)])
def test_byte_counts(K: int, two: int, three: int) -> None:
    assert bytes_per_row(K, "2bit") == two
    assert bytes_per_row(K, "base3") == three
    assert packed_nbytes((3, K), "2bit") == 3 * two
    assert packed_nbytes((3, K), "base3") == 3 * three


@pytest.mark.parametrize("format", FORMATS)
def test_random_large(format: str) -> None:
    w = np.random.default_rng(1).integers(-1, 2, size=(300, 1001)).astype(np.int8)
    packed = pack(w, format)
    assert packed.size == packed_nbytes(w.shape, format)
    np.testing.assert_array_equal(unpack(packed, w.shape, format), w)


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint8, np.float16, np.float32,
                                   np.float64, np.bool_])
def test_input_dtypes(dtype: type) -> None:
    w = np.array([[1, 0, 1, 1, 0, 0, 1]]) if dtype in (np.uint8, np.bool_) else np.array([[1, 0, -1, -1, 0, 1, 1]])
    np.testing.assert_array_equal(pack(w.astype(dtype), "2bit"), pack(w.astype(np.int8), "2bit"))


def test_non_contiguous_input() -> None:
    w = np.random.default_rng(2).integers(-1, 2, size=(9, 13)).astype(np.int8)
    np.testing.assert_array_equal(pack(w.T), pack(np.ascontiguousarray(w.T)))


# --- errors


@pytest.mark.parametrize("format", FORMATS)
def test_non_ternary_names_first_bad_value(format: str) -> None:
    w = np.zeros((3, 4, 5), dtype=np.int16)
    w[1, 2, 3] = 2
    w[2, 0, 0] = -5
    with pytest.raises(TdslError, match=r"non-ternary value 2 at index \(1, 2, 3\)"):
        pack(w, format)


def test_wide_integer_is_not_wrapped() -> None:
    with pytest.raises(TdslError, match=r"non-ternary value 257 at index \(0,\)"):
        pack(np.array([257, 0]))
    with pytest.raises(TdslError, match=r"non-ternary value 255 at index \(1,\)"):
        pack(np.array([0, 255], dtype=np.uint8))


@pytest.mark.parametrize("value", [0.5, -0.25, np.nan, np.inf])
def test_non_integral_float(value: float) -> None:
    w = np.array([[0.0, 1.0], [-1.0, value]], dtype=np.float32)
    with pytest.raises(TdslError, match=r"non-integral value .* at index \(1, 1\) in a float32"):
        pack(w)


def test_integral_float_out_of_range() -> None:
    with pytest.raises(TdslError, match=r"non-ternary value -2.0 at index \(0,\)"):
        pack(np.array([-2.0]))


def test_bad_dtype() -> None:
    with pytest.raises(TdslError, match="dtype complex128"):
        pack(np.array([1j]))


@pytest.mark.parametrize("call", [
    lambda: pack(np.zeros(4), "3bit"),
    lambda: unpack(np.zeros(1, np.uint8), (4,), "int2"),
    lambda: packed_nbytes((4,), "2-bit"),
    lambda: bytes_per_row(4, "tq1"),
])
def test_unknown_format(call) -> None:
    with pytest.raises(TdslError, match=r"unknown packed format .*: valid formats are '2bit', 'base3'"):
        call()


@pytest.mark.parametrize("format, shape, packed_shape_", [
    ("2bit", (4, 8), (4, 3)), ("2bit", (4, 8), (9,)), ("base3", (4, 8), (4, 1)),
    ("base3", (2, 3, 3), (2, 1)), ("2bit", (7,), (1, 1)), ("2bit", (8, 4), (4, 2)),
])
def test_wrong_packed_size(format: str, shape: tuple[int, ...], packed_shape_: tuple[int, ...]) -> None:
    with pytest.raises(TdslError, match=r"does not fit a weight of shape .* expected shape"):
        unpack(np.zeros(packed_shape_, dtype=np.uint8), shape, format)


def test_wrong_packed_dtype() -> None:
    with pytest.raises(TdslError, match="must be uint8, got int8"):
        unpack(np.zeros((1, 1), dtype=np.int8), (4,))


@pytest.mark.parametrize("shape", [(-1, 4), (2.5, 4), (True,)])
def test_bad_shape(shape: tuple) -> None:
    with pytest.raises(TdslError, match="bad weight shape"):
        packed_nbytes(shape)


def test_corrupt_2bit_names_row_and_byte() -> None:
    p = pack(np.zeros((3, 12)))
    p[2, 1] = 0b00_11_01_01
    with pytest.raises(TdslError, match="byte 0x35 at row 2, byte 1 holds the 2-bit code 3"):
        unpack(p, (3, 12))


def test_runtime_does_not_import_torch() -> None:
    code = ("import sys, numpy as np, tdsl.runtime.packing as p; "
            "p.unpack(p.pack(np.zeros(3)), (3,)); "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
