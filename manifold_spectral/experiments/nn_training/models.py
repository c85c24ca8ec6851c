"""The models of the NN comparison: ``MLP`` (the teacher-student task's student and teacher)
and ``TinyGPT``, a small pre-LayerNorm causal transformer (the Markov task's model, the
``stdlib`` real-data task's and ``benchmarks/gpu_train.py``'s)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "Block", "TinyGPT"]


class MLP(nn.Sequential):
    """``d_in -> width (GELU) -> ... -> d_out`` with ``depth`` hidden layers."""

    def __init__(self, d_in: int, width: int, d_out: int, depth: int = 2) -> None:
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(d_in if i == 0 else width, width), nn.GELU()]
        super().__init__(*layers, nn.Linear(width, d_out))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal multi-head attention and a GELU MLP."""

    def __init__(self, dim: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, ff), nn.Linear(ff, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        qkv = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """A small GPT: token and position embeddings, ``layers`` blocks, a final norm and head."""

    def __init__(
        self,
        vocab: int,
        seq_len: int,
        dim: int = 64,
        heads: int = 4,
        ff: int = 128,
        layers: int = 2,
    ) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(seq_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, ff) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab)

    def forward(self, idx: Tensor) -> Tensor:
        h = self.tok(idx) + self.pos.weight[: idx.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h))
