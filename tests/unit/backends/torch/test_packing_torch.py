"""Torch pack/unpack (tdsl.backends.torch.packing): the same bytes as the numpy runtime."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tdsl.backends.torch.packing import pack_torch, unpack_tensor, unpack_torch
from tdsl.errors import TdslError
from tdsl.runtime.packing import BASE3_VALID, FORMATS, pack, packed_nbytes, packed_shape, unpack

ALL5 = torch.tensor(list(itertools.product((-1, 0, 1), repeat=5)), dtype=torch.int8)
ALL4 = torch.tensor(list(itertools.product((-1, 0, 1), repeat=4)), dtype=torch.int8)
SHAPES = [(1,), (3,), (7,), (13,), (37,), (), (0,), (0, 5), (5, 0), (1, 1), (3, 37),
          (16, 3, 3, 3), (4, 5, 1, 7)]


def test_worked_examples() -> None:
    assert pack_torch(torch.tensor([1, 0, -1, 0]), "2bit").tolist() == [[0x46]]
    assert pack_torch(torch.tensor([[1, 0, -1, 0, -1, -1, 1]]), "2bit").tolist() == [[0x46, 0x60]]
    assert pack_torch(torch.tensor([1, 0, -1, 0, 1]), "base3").tolist() == [[205]]
    assert pack_torch(torch.tensor([[1, 0, -1, 0, 1, -1, 1]]), "base3").tolist() == [[205, 71]]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("patterns", [ALL4, ALL5], ids=["81x4", "243x5"])
def test_all_patterns_match_numpy_and_round_trip(patterns: torch.Tensor, format: str) -> None:
    packed = pack_torch(patterns, format)
    np.testing.assert_array_equal(packed.numpy(), pack(patterns.numpy(), format))
    assert torch.equal(unpack_torch(packed, patterns.shape, format), patterns)


@pytest.mark.parametrize("format", FORMATS)
def test_every_byte_value_decodes_like_numpy(format: str) -> None:
    # All 256 bytes through the tensor decode (2bit: code 3 gives 2, never produced by pack).
    q = torch.arange(256, dtype=torch.uint8)[:, None]
    per = 4 if format == "2bit" else 5
    ours = unpack_tensor(q, 256, per, format)
    valid = [all((b >> (2 * j)) & 3 != 3 for j in range(4)) for b in range(256)] \
        if format == "2bit" else BASE3_VALID.tolist()
    rows = [b for b in range(256) if valid[b]]
    np.testing.assert_array_equal(ours[rows].numpy(), unpack(q[rows].numpy(), (len(rows), per), format))


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes_match_numpy(shape: tuple[int, ...], format: str) -> None:
    w = torch.randint(-1, 2, shape, dtype=torch.int8, generator=torch.Generator().manual_seed(len(shape)))
    packed = pack_torch(w, format)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == packed_shape(shape, format)
    assert packed.numel() == packed_nbytes(shape, format)
    np.testing.assert_array_equal(packed.numpy(), pack(w.numpy(), format))
    out = unpack_torch(packed, shape, format)
    assert out.dtype == torch.int8 and out.shape == w.shape and torch.equal(out, w)
    assert torch.equal(unpack_torch(packed.reshape(-1), shape, format), w)


@pytest.mark.parametrize("format", FORMATS)
def test_random_large_matches_numpy(format: str) -> None:
    w = torch.randint(-1, 2, (257, 1003), generator=torch.Generator().manual_seed(3))
    packed = pack_torch(w, format)
    np.testing.assert_array_equal(packed.numpy(), pack(w.numpy(), format))
    assert torch.equal(unpack_torch(packed, w.shape, format), w.to(torch.int8))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.uint8, torch.float16,
                                   torch.bfloat16, torch.float32, torch.bool])
def test_input_dtypes(dtype: torch.dtype) -> None:
    signed = dtype not in (torch.uint8, torch.bool)
    w = torch.tensor([[1, 0, -1, -1, 0, 1, 1]] if signed else [[1, 0, 1, 1, 0, 0, 1]])
    for format in FORMATS:
        assert torch.equal(pack_torch(w.to(dtype), format), pack_torch(w, format))


def test_non_contiguous_input() -> None:
    w = torch.randint(-1, 2, (9, 13), generator=torch.Generator().manual_seed(4))
    assert torch.equal(pack_torch(w.t()), pack_torch(w.t().contiguous()))


class _Unpack(torch.nn.Module):
    def __init__(self, rows: int, K: int, format: str) -> None:
        super().__init__()
        self.rows, self.K, self.format = rows, K, format

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return unpack_tensor(p, self.rows, self.K, self.format)


@pytest.mark.parametrize("format", FORMATS)
def test_unpack_tensor_exports(format: str) -> None:
    # The decode is plain tensor ops: torch.export captures it in one graph, and it matches.
    p = pack_torch(ALL5, format)
    program = torch.export.export(_Unpack(243, 5, format), (p,))
    assert torch.equal(program.module()(p), ALL5)


# --- errors


def test_non_ternary_names_first_bad_value() -> None:
    w = torch.zeros(3, 4, 5, dtype=torch.int16)
    w[1, 2, 3] = 2
    w[2, 0, 0] = -5
    for format in FORMATS:
        with pytest.raises(TdslError, match=r"non-ternary value 2 at index \(1, 2, 3\)"):
            pack_torch(w, format)
    with pytest.raises(TdslError, match=r"non-ternary value 255 at index \(1,\)"):
        pack_torch(torch.tensor([0, 255], dtype=torch.uint8))


@pytest.mark.parametrize("value", [0.5, float("nan"), float("inf")])
def test_non_integral_float(value: float) -> None:
    with pytest.raises(TdslError, match=r"non-integral value .* at index \(1, 1\) in a torch.float32"):
        pack_torch(torch.tensor([[0.0, 1.0], [-1.0, value]]))


def test_bad_dtype_and_format() -> None:
    with pytest.raises(TdslError, match="dtype torch.complex64"):
        pack_torch(torch.zeros(4, dtype=torch.complex64))
    with pytest.raises(TdslError, match="valid formats are '2bit', 'base3'"):
        pack_torch(torch.zeros(4), "ternary")
    with pytest.raises(TdslError, match="valid formats are '2bit', 'base3'"):
        unpack_torch(torch.zeros(1, dtype=torch.uint8), (4,), "4bit")


def test_wrong_packed_size_and_dtype() -> None:
    with pytest.raises(TdslError, match=r"expected shape \(4, 2\), 8 bytes"):
        unpack_torch(torch.zeros(4, 3, dtype=torch.uint8), (4, 8))
    with pytest.raises(TdslError, match=r"expected shape \(2, 2\), 4 bytes"):
        unpack_torch(torch.zeros(5, dtype=torch.uint8), (2, 3, 3), "base3")
    with pytest.raises(TdslError, match="must be uint8"):
        unpack_torch(torch.zeros(1, 1, dtype=torch.int8), (4,))


def test_corrupt_bytes() -> None:
    p = pack_torch(torch.zeros(3, 12))
    p[2, 1] = 0b00_11_01_01
    with pytest.raises(TdslError, match="byte 0x35 at row 2, byte 1 holds the 2-bit code 3"):
        unpack_torch(p, (3, 12))
    assert unpack_torch(torch.tensor([[0xFC]], dtype=torch.uint8), (1, 1)).tolist() == [[-1]]
    bad_q = int(np.flatnonzero(~BASE3_VALID)[0])
    with pytest.raises(TdslError, match=f"byte {bad_q:#04x} at row 0, byte 0 is not one of the 243"):
        unpack_torch(torch.tensor([[bad_q]], dtype=torch.uint8), (1, 5), "base3")
