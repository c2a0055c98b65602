"""Language-model training on the generic `Trainer`: byte-level tokens, next-token windows,
a logits layout the trainer's loss and accuracy read, and perplexity.

The trainer treats dim 1 of the output as classes; a decoder gives logits [N, T, vocab], so
`NextToken` hands it [N, vocab, T] (what `F.cross_entropy` takes with targets [N, T]).
`token_cross_entropy_sum` is the mean over a sequence's tokens, summed over sequences: the
trainer's mean loss is then the mean token cross-entropy, and exp of it the perplexity.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tdsl.errors import TdslError

BYTE_VOCAB = 256
"""Every byte value is a token: no tokenizer file, any text encodes."""


def encode_bytes(text: str) -> np.ndarray:
    """UTF-8 bytes of `text` as int32 token ids (0..255)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)


def decode_bytes(ids: np.ndarray | list[int]) -> str:
    """Token ids back to text; a cut multi-byte character becomes U+FFFD."""
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def next_token_windows(tokens: np.ndarray, context: int, stride: int | None = None) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """(x, y) int64 [windows, context]: y is x shifted by one token; windows start every
    `stride` tokens (default: `context`, no overlap)."""
    stride = context if stride is None else stride
    if context < 1 or stride < 1:
        raise TdslError(f"context and stride must be >= 1, got {context} and {stride}")
    if len(tokens) < context + 1:
        raise TdslError(f"{len(tokens)} tokens are too few for one window of {context} + 1")
    starts = np.arange(0, len(tokens) - context, stride)
    idx = starts[:, None] + np.arange(context)[None, :]
    data = np.asarray(tokens, np.int64)
    return torch.from_numpy(data[idx]), torch.from_numpy(data[idx + 1])


class NextToken(nn.Module):
    """Wraps a decoder (ids [N, T] -> logits [N, T, vocab]) for `Trainer`: int32 ids in,
    logits [N, vocab, T] out."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(ids.to(torch.int32)).transpose(1, 2)


def token_cross_entropy_sum(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sequence the mean token cross-entropy, summed over the batch (the trainer divides
    by the number of sequences)."""
    return F.cross_entropy(output.float(), target, reduction="none").mean(dim=1).sum()


@torch.no_grad()
def perplexity(decoder: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 32) -> float:
    """exp(mean token cross-entropy) of `decoder` on windows (x, y), in eval mode."""
    decoder.eval()
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = decoder(x[i:i + batch_size].to(torch.int32)).float()
        target = y[i:i + batch_size]
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
        count += target.numel()
    return math.exp(total / count)


def python_docs_corpus() -> str:
    """English prose that ships with every CPython: the Language Reference topics of
    `pydoc_data.topics` (what `help("assert")` prints; PSF licence), ~466 KB, in a fixed
    order. A text corpus that needs no download."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))
