"""Torch forms of the sequence-model ops (`tdsl.ops.sequence`), called by emitted modules as
`_rt.<name>`; each computes what its numpy reference (`tdsl.runtime.attention`) computes."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def relu2(x: torch.Tensor) -> torch.Tensor:
    """Squared ReLU."""
    return torch.square(F.relu(x))


def positions(ids: torch.Tensor) -> torch.Tensor:
    """0..T-1 along the last dim, int32, broadcast to `ids`' shape."""
    return torch.arange(ids.shape[-1], dtype=torch.int32, device=ids.device).expand(ids.shape)


def rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [T, head_dim] of the rotate-half rotary embedding; angles in float32."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim
    inv_freq = (1.0 / (base ** exponent)).to(torch.float32)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return torch.cos(angles), torch.sin(angles)


def rope(x: torch.Tensor, heads: int, base: float, offset: int = 0) -> torch.Tensor:
    """x[N, T, H*Dh] rotated for positions offset..offset+T-1."""
    n, t, features = x.shape
    dh = features // heads
    cos, sin = rope_tables(torch.arange(offset, offset + t, device=x.device), dh, base)
    h = x.reshape(n, t, heads, dh)
    half = dh // 2
    rotated = torch.cat((-h[..., half:], h[..., :half]), dim=-1)
    out = h * cos[None, :, None, :].to(x.dtype) + rotated * sin[None, :, None, :].to(x.dtype)
    return out.reshape(n, t, features)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, kv_heads: int,
              causal: bool = True) -> torch.Tensor:
    """Scaled dot-product attention over packed heads (grouped-query when kv_heads < heads);
    causal: query t sees keys 0..t + S - T."""
    n, t, features = q.shape
    s = k.shape[1]
    dh = features // heads
    group = heads // kv_heads
    qh = q.reshape(n, t, heads, dh).transpose(1, 2)
    kh = k.reshape(n, s, kv_heads, dh).transpose(1, 2).repeat_interleave(group, dim=1)
    vh = v.reshape(n, s, kv_heads, dh).transpose(1, 2).repeat_interleave(group, dim=1)
    mask = None
    if causal:
        mask = (torch.arange(s, device=q.device)[None, :]
                <= torch.arange(t, device=q.device)[:, None] + (s - t))
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(1, 2).reshape(n, t, features)


def int8_tokens(x: torch.Tensor) -> torch.Tensor:
    """x fake-quantised to int8 per token (the last dim), absmax scale: amax/127 *
    rint(x * 127/amax), as the Numba runtime's int8 kernels quantise (`runtime.quant_act`);
    an all-zero token stays zero. The gradient passes straight through (BitNet's STE)."""
    amax = x.detach().abs().amax(dim=-1, keepdim=True).to(torch.float32)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    inv = torch.where(amax > 0, 127.0 / safe, torch.zeros_like(amax))
    q = torch.clamp(torch.round(x.detach().to(torch.float32) * inv), -127.0, 127.0) * (amax / 127.0)
    return x + (q.to(x.dtype) - x).detach()
