"""Pack and unpack ternary weights on torch tensors, bit-identical to `tdsl.runtime.packing`.

The layout (format version 1, "2bit" and "base3") is defined in `tdsl.runtime.packing` and
docs/PACKED_FORMAT.md; this module only re-expresses it with tensor ops. `unpack_tensor`
is shifts, masks, multiplies, compares and reshapes on a whole tensor, so it traces into an
exported graph; "base3" is decoded with the kernel trick (digit j = (t >= 86) + (t >= 171),
t = q * 3^j mod 256). `pack_torch` and `unpack_torch` add the input checks, which look at
the data and therefore stay outside a traced graph (`unpack_torch(..., validate=False)`
skips the data check).
"""
from __future__ import annotations

from typing import Sequence

import torch

from tdsl.errors import TdslError
from tdsl.runtime.packing import BASE3_VALID, bad_value_error, bytes_per_row, check_format, matrix_shape

_INT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_SHIFTS_2BIT = (0, 2, 4, 6)
_POW3 = (1, 3, 9, 27, 81)


def _check_ternary(t: torch.Tensor) -> None:
    """Raise a TdslError naming the first element of `t` that is not -1, 0 or +1."""
    if t.numel() == 0:
        return
    lo, hi = torch.aminmax(t)
    integral = not t.is_floating_point() or bool(torch.equal(t, t.trunc()))
    if integral and lo >= -1 and hi <= 1:
        return
    bad = ~((t == -1) | (t == 0) | (t == 1))
    flat = int(torch.nonzero(bad.reshape(-1))[0, 0])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), t.shape)) if t.dim() else ()
    value = t.reshape(-1)[flat].item()
    integral = not t.is_floating_point() or bool(torch.isfinite(t.reshape(-1)[flat]) and value == int(value))
    raise bad_value_error(value, index, integral, f"a {t.dtype} tensor")


def pack_torch(t: torch.Tensor, format: str = "2bit") -> torch.Tensor:
    """Pack a ternary tensor (values in {-1, 0, +1}) into uint8 [rows, bytes_per_row]."""
    check_format(format)
    if not (t.dtype.is_floating_point or t.dtype in _INT_DTYPES):
        raise TdslError(f"cannot pack a tensor of dtype {t.dtype}: ternary weights must be "
                        "an integer or float tensor holding -1, 0 and +1")
    rows, K = matrix_shape(tuple(t.shape))
    if t.dtype == torch.uint8:
        t = t.to(torch.int16)
    if t.dtype != torch.bool:
        _check_ternary(t)
    per = 4 if format == "2bit" else 5
    nb = bytes_per_row(K, format)
    # Via int8: a float -1 cast straight to uint8 is undefined; 0xFF + 1 wraps to code 0.
    codes = t.reshape(rows, K).to(torch.int8).view(torch.uint8) + 1
    codes = torch.nn.functional.pad(codes, (0, nb * per - K), value=1).reshape(rows, nb, per)
    if format == "2bit":
        return codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4) | (codes[..., 3] << 6)
    v = codes[..., 0].to(torch.int32)
    for j in range(1, 5):
        v = v * 3 + codes[..., j]
    return torch.div(v * 256 + 242, 243, rounding_mode="floor").to(torch.uint8)


def unpack_tensor(p: torch.Tensor, rows: int, K: int, format: str) -> torch.Tensor:
    """Tensor-ops-only decode of uint8 [rows, nb] into int8 [rows, K]; no checks.

    "base3" uses uint8 arithmetic as the kernels do: t = q * 3^j wraps mod 256.
    """
    nb = p.shape[1]
    if format == "2bit":
        codes = torch.stack([(p >> s) & 3 for s in _SHIFTS_2BIT], dim=-1).to(torch.int8)
    else:
        t = [p * m for m in _POW3]  # uint8 multiply: wraps mod 256
        codes = torch.stack([(x >= 86).to(torch.int8) + (x >= 171).to(torch.int8) for x in t], dim=-1)
    return codes.reshape(rows, nb * codes.shape[-1])[:, :K] - 1


def unpack_torch(p: torch.Tensor, shape: Sequence[int], format: str = "2bit",
                 validate: bool = True) -> torch.Tensor:
    """Unpack uint8 bytes made by `pack`/`pack_torch` into an int8 tensor of `shape`.

    `p` is the [rows, bytes_per_row] tensor or the same bytes flattened to 1-D. With
    `validate`, bytes that no trit pattern produces are a TdslError (a data-dependent check;
    pass False inside a traced graph).
    """
    check_format(format)
    rows, K = matrix_shape(shape)
    shape = tuple(int(d) for d in shape)
    nb = bytes_per_row(K, format)
    if p.dtype != torch.uint8:
        raise TdslError(f"packed weights must be uint8, got {p.dtype}")
    if not (tuple(p.shape) == (rows, nb) or (p.dim() == 1 and p.numel() == rows * nb)):
        raise TdslError(f"packed array of shape {tuple(p.shape)} ({p.numel()} bytes) does not "
                        f"fit a weight of shape {shape} in format {format!r}: expected shape "
                        f"({rows}, {nb}), {rows * nb} bytes")
    p = p.reshape(rows, nb)
    if validate and p.numel():
        _check_codes(p, K, format)
    return unpack_tensor(p, rows, K, format).reshape(shape)


def _check_codes(p: torch.Tensor, K: int, format: str) -> None:
    """Raise a TdslError naming the first byte of `p` that `pack` cannot have written."""
    nb = p.shape[1]
    if format == "2bit":
        # Low bit of each pair set where the pair is 3; padding pairs of the last byte are masked.
        threes = p & (p >> 1) & 0x55
        used = K - 4 * (nb - 1)
        threes[:, -1] &= (1 << (2 * used)) - 1
        bad = threes != 0
        what = "holds the 2-bit code 3, which no trit has"
    else:
        valid = torch.from_numpy(BASE3_VALID).to(p.device)
        bad = ~valid[p.long()]
        what = "is not one of the 243 base-3 byte values"
    if not bool(bad.any()):
        return
    r, i = (int(x) for x in torch.nonzero(bad)[0])
    raise TdslError(f"corrupt packed weights: byte {int(p[r, i]):#04x} at row {r}, byte {i} "
                    f"{what} (format {format!r})")
