"""Transformer student (Table I baseline): pre-LN layers with fused scaled-dot-product attention.

Per layer at H=1024 with 16 heads and FFN 2048: 8,399,872 parameters and 1.2499 GMACs in its
linear layers for 149 frames, plus 45.5M MACs of attention products (docs/method.md §Layer sizes).

Position information: the SV-Mixer and MLP-Mixer students have no positional encoding, but their
token mixing is position-aware, whereas self-attention is order-blind. The wav2vec 2.0 / HuBERT /
DistilHuBERT encoders that Transformer students are built from add a convolutional relative
position embedding (grouped Conv1d, kernel 128, 16 groups → GELU, added to the input) before the
layers; ``pos_conv_kernel`` reproduces it (weight normalisation omitted) and 0 turns it off. It is
part of the encoder, not of a layer, so per-layer counts are unaffected. Any sequence length works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svmix.models.encoder import FrameEncoder
from svmix.registry import ENCODERS


class SelfAttention(nn.Module):
    """Multi-head self-attention: one fused q/k/v projection (with bias), SDPA, output projection."""

    def __init__(self, hidden: int, num_heads: int = 16, dropout: float = 0.1):
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, H)
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, h))


class TransformerLayer(nn.Module):
    """x + Dropout(MHSA(LN(x))), then x + Dropout(FFN(LN(x))) with FFN = Linear → GELU → Dropout → Linear."""

    def __init__(self, hidden: int, num_heads: int = 16, ffn_dim: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden)
        self.attention = SelfAttention(hidden, num_heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden)
        self.feed_forward = nn.Sequential(nn.Linear(hidden, ffn_dim), nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(ffn_dim, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x)))
        return x + self.dropout(self.feed_forward(self.ffn_norm(x)))


class ConvPositionEmbedding(nn.Module):
    """wav2vec 2.0-style relative position embedding: x + GELU(grouped Conv1d over time)."""

    def __init__(self, hidden: int, kernel: int = 128, groups: int = 16):
        super().__init__()
        self.conv = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=groups)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, H)
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[..., :-self.trim]
        return x + F.gelu(y).transpose(1, 2)


@ENCODERS.register("transformer")
class TransformerEncoder(FrameEncoder):
    def __init__(self, hidden: int, seq_len: int, num_layers: int, num_heads: int = 16, ffn_dim: int = 2048,
                 dropout: float = 0.1, pos_conv_kernel: int = 0, pos_conv_groups: int = 16):
        super().__init__(hidden, seq_len, num_layers, dropout)
        self.position = ConvPositionEmbedding(hidden, pos_conv_kernel, pos_conv_groups) if pos_conv_kernel else None
        for _ in range(num_layers):
            self.blocks.append(TransformerLayer(hidden, num_heads, ffn_dim, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H) → (B, L+1, T, H)
        if self.position is not None:
            x = self.position(x)
        return super().forward(x)
