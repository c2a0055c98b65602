"""Helpers that emitted torch source imports as `_rt`.

Kept small on purpose: anything here is a dependency of every emitted module, so the
emitted text stays readable and these helpers stay the only code it calls besides torch.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch

from tdsl.backends.torch.sequence import attention, int8_tokens, positions, relu2, rope  # noqa: F401 - as _rt.*
from tdsl.errors import TdslError


def ternary(w: torch.Tensor) -> torch.Tensor:
    """Round-and-clamp to {-1, 0, 1}; the gradient passes straight through (STE).

    Integer tensors (trits stored as int8) are already ternary and only get clamped.
    """
    if not w.is_floating_point():
        return w.clamp(-1, 1)
    t = torch.clamp(torch.round(w), -1.0, 1.0)
    return w + (t - w).detach()


def random_ternary_(w: torch.Tensor) -> torch.Tensor:
    """Fill `w` in place with values drawn uniformly from {-1, 0, 1}."""
    with torch.no_grad():
        w.copy_(torch.randint(-1, 2, w.shape, device=w.device).to(w.dtype))
    return w


def lookup_spec(specs: Mapping[Hashable, int], key: tuple, layer: str, names: tuple[str, ...]) -> int:
    """The specialisation index of DSL layer `layer` for parameter values `key`.

    An emitted class can only build the parameter sets the IR was compiled for.
    """
    if key in specs:
        return specs[key]
    compiled = "; ".join(_format(names, k) for k in specs)
    raise TdslError(f"layer {layer} was compiled for {compiled}, not {_format(names, key)}")


def _format(names: tuple[str, ...], values: Hashable) -> str:
    assert isinstance(values, tuple), values
    return "(" + ", ".join(f"{n}={v!r}" for n, v in zip(names, values)) + ")"


# --------------------------------------------------------------------------- precisions
# The helpers below carry the ternary level (docs/TERNARY.md): emitted modules call them
# for weights whose param records a `precision`. Frozen modules call only the pure tensor
# ops among them (`unpack_ternary`, `int8_linear`/`int8_conv2d` on int8 weights), so they
# trace into an exported graph.

INT8_MAX = 127
"""Symmetric int8: values in [-127, 127] (the -128 code is not used)."""

_EXACT_F32 = 2 ** 24
"""Integers up to 2^24 are exact in float32; beyond, the int8 product accumulates in float64."""


def ternarize_ste(w: torch.Tensor, method: str = "twn", per_channel: bool = False,
                  target_sparsity: float | None = None, threshold: float | None = None) -> torch.Tensor:
    """α·T of the latent weight `w` (the rule `tern.quantize` records), identity STE backward."""
    from tdsl.quant.torch_ste import ternarize_ste as _ternarize_ste

    return _ternarize_ste(w, method, per_channel, target_sparsity, threshold)


def dequantize_ternary(trits: torch.Tensor, scale: torch.Tensor,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """α·T from trits (any integer or float dtype) and a scale of shape () or [out]."""
    scale = scale.reshape(scale.shape + (1,) * (trits.ndim - 1)) if scale.ndim == 1 else scale
    return (trits.to(torch.float32) * scale.to(torch.float32)).to(dtype)


def unpack_ternary(packed: torch.Tensor, scale: torch.Tensor, shape: tuple[int, ...], format: str,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """α·T of packed trits (uint8 [rows, bytes_per_row], docs/PACKED_FORMAT.md); tensor ops only."""
    from tdsl.backends.torch.packing import unpack_tensor
    from tdsl.runtime.packing import matrix_shape

    rows, k = matrix_shape(tuple(shape))
    trits = unpack_tensor(packed, rows, k, format).reshape(tuple(shape))
    return dequantize_ternary(trits, scale, dtype)


def fake_fp16(w: torch.Tensor) -> torch.Tensor:
    """`w` rounded through float16 (what fp16 storage keeps); identity gradient to `w`."""
    from tdsl.quant.torch_ste import identity_ste

    return identity_ste(w, w.detach().to(torch.float16).to(w.dtype))


def int8_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale [out]) of `w`: symmetric per output channel (dim 0),
    scale = max|w_row| / 127 (1 for an all-zero row), values round(w / scale)."""
    rows = w.detach().to(torch.float32).reshape(w.shape[0], -1)
    amax = rows.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    q = torch.round(rows / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q.reshape(w.shape), scale


def int8_activation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer values as float32, scale ()) of `x`: symmetric per tensor, chosen at run time."""
    xf = x.detach().to(torch.float32)
    amax = xf.abs().amax() if xf.numel() else torch.zeros((), dtype=torch.float32, device=x.device)
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    return torch.round(xf / scale).clamp(-INT8_MAX, INT8_MAX), scale


def _int8_apply(op, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None,
                weight_scale: torch.Tensor | None, channel_dim: int) -> torch.Tensor:
    """Dynamic int8: y = (Σ x_q·w_q) · s_x · s_w[o] + b, the integer sum exact (float32
    while |Σ| < 2^24 is guaranteed, float64 beyond). A float `w` is quantised here with
    `int8_weight` (training); gradients reach x and w through identity STEs."""
    if w.dtype == torch.int8:
        if weight_scale is None:
            raise TdslError("an int8 weight needs its weight_scale")
        wq, sw = w, weight_scale.to(torch.float32)
    else:
        wq, sw = int8_weight(w)
    xq, sx = int8_activation(x)
    k = w[0].numel()
    acc = torch.float32 if INT8_MAX * INT8_MAX * k < _EXACT_F32 else torch.float64
    shape = [1] * (x.ndim if channel_dim == 1 else 1)
    if channel_dim == 1:
        shape[1] = -1
    else:
        shape = [-1]
    y = op(xq.to(acc), wq.to(acc)) * (sx.to(acc) * sw.to(acc).reshape(shape))
    y = y.to(x.dtype if x.is_floating_point() else torch.float32)
    if bias is not None:
        y = y + (bias.reshape(shape) if channel_dim == 1 else bias)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                             or (bias is not None and bias.requires_grad))
    if needs_grad and w.is_floating_point():
        from tdsl.quant.torch_ste import identity_ste

        wf = identity_ste(w, (wq.to(torch.float32) * sw.reshape((-1,) + (1,) * (w.ndim - 1))).to(w.dtype))
        xf = identity_ste(x, (xq * sx).to(x.dtype))
        y_ste = op(xf, wf)
        y_ste = y_ste + (bias.reshape(shape) if channel_dim == 1 else bias) if bias is not None else y_ste
        y = y_ste + (y - y_ste).detach()
    return y


def int8_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                weight_scale: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear with dynamic int8 quantisation (see `_int8_apply`)."""
    return _int8_apply(lambda a, b: torch.nn.functional.linear(a, b), x, w, bias, weight_scale, -1)


def int8_conv2d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                dilation=1, groups: int = 1, weight_scale: torch.Tensor | None = None) -> torch.Tensor:
    """F.conv2d with dynamic int8 quantisation (see `_int8_apply`)."""
    def op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(a, b, None, stride=stride, padding=padding,
                                          dilation=dilation, groups=groups)

    return _int8_apply(op, x, w, bias, weight_scale, 1)
