"""Attention and recurrent zoo models: a small ViT and an LSTM on the 8×8 digits, and a small
GPT-style character model on the embedded pydocs corpus (mc_engine/data/pydocs.py).

Their weights sit in layers the analog conversion maps (Linear; the q, k, v and output
projections of ``nn.MultiheadAttention``; the matrices of ``nn.LSTM``); the embeddings
(``nn.Embedding``), LayerNorms, the attention products and the recurrence's gates stay digital
(docs/physics.md). Defined at module level so that they pickle by reference.
"""

from __future__ import annotations

import torch
from torch import nn

from mc_engine.data.pydocs import DEFAULT_SEQ_LEN, VOCAB


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))`` (GELU
    MLP of ``4 × width``); ``causal``: each position attends to itself and earlier ones only."""

    def __init__(self, width: int, heads: int, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        mask = None
        if self.causal:
            n = x.shape[-2]
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ViTDigits(nn.Module):
    """Vision transformer for the flat 8×8 digits: 16 patches of 2×2 pixels, a linear patch
    embedding and a learned position embedding (width 32), 2 blocks of 4 heads, mean pooling,
    a LayerNorm and a linear head (10 classes)."""

    def __init__(self, width: int = 32, heads: int = 4, depth: int = 2, patch: int = 2):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch * patch, width)
        self.pos = nn.Embedding((8 // patch) ** 2, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, side = self.patch, 8 // self.patch
        img = x.reshape(-1, side, p, side, p).transpose(2, 3)           # N, row, col, p, p
        tokens = self.embed(img.reshape(-1, side * side, p * p))
        tokens = tokens + self.pos.weight
        return self.head(self.ln(self.blocks(tokens).mean(dim=1)))


class LSTMDigits(nn.Module):
    """The 8 rows of a flat 8×8 digit as a sequence of 8 steps: one LSTM layer (32 hidden),
    its last hidden state into a linear head (10 classes)."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.reshape(-1, 8, 8))
        return self.head(out[:, -1])


class CharLM(nn.Module):
    """GPT-style character model: token and position embeddings (width 64), 2 causal blocks of
    4 heads, a final LayerNorm and a linear head over the ``VOCAB`` characters; reads up to
    ``context`` tokens (N × T int64) and gives next-token scores N × T × VOCAB."""

    def __init__(self, width: int = 64, heads: int = 4, depth: int = 2,
                 context: int = DEFAULT_SEQ_LEN):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads, causal=True) for _ in range(depth)))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok(tokens) + self.pos.weight[:tokens.shape[-1]]
        return self.head(self.ln(self.blocks(h)))


def vit_digits() -> nn.Module:
    """A small ViT on the 8×8 digits (2×2 patches, 2 blocks)."""
    return ViTDigits()


def lstm_digits() -> nn.Module:
    """An LSTM over the 8 rows of the 8×8 digits."""
    return LSTMDigits()


def charlm() -> nn.Module:
    """A small GPT-style character model for the pydocs corpus (context 64)."""
    return CharLM()
