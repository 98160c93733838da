"""ConvMixer student (Table I baseline), ConvMixer (Trockman & Kolter) adapted to 1-D frame sequences.

Block on (B, H, T):
- token mixing:   x + Dropout(BN(GELU(depthwise Conv1d(k=9)(x))))  (ConvMixer's residual depthwise conv)
- channel mixing: x + Dropout(pointwise Conv1d(eH→H)(BN(GELU(pointwise Conv1d(H→eH)(x)))))

The original ConvMixer's channel mixing is one pointwise conv (1.05M parameters at H=1024), far
below the paper's 9.02M per layer, which the paper does not explain. Widening the pointwise part
into an ``expansion``× MLP (as MLP-Mixer's channel MLP) makes it comparable: 8.41M parameters and
1.25 GMACs per layer at H=1024, T=149 with the default expansion 4. Works for any sequence length.
"""
from __future__ import annotations

import torch
from torch import nn

from svmix.models.encoder import FrameEncoder
from svmix.registry import ENCODERS


class ConvMixerBlock(nn.Module):
    def __init__(self, hidden: int, kernel: int = 9, expansion: int = 4, dropout: float = 0.1):
        super().__init__()
        self.token_mixing = nn.Sequential(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden),
                                          nn.GELU(), nn.BatchNorm1d(hidden))
        self.channel_mixing = nn.Sequential(nn.Conv1d(hidden, expansion * hidden, 1), nn.GELU(),
                                            nn.BatchNorm1d(expansion * hidden), nn.Conv1d(expansion * hidden, hidden, 1))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T)
        x = x + self.dropout(self.token_mixing(x))
        return x + self.dropout(self.channel_mixing(x))


@ENCODERS.register("convmixer")
class ConvMixerEncoder(FrameEncoder):
    block_layout = "BHT"

    def __init__(self, hidden: int, seq_len: int, num_layers: int, kernel: int = 9, expansion: int = 4,
                 dropout: float = 0.1):
        super().__init__(hidden, seq_len, num_layers, dropout)
        if kernel % 2 == 0:
            raise ValueError(f"ConvMixer kernel must be odd to keep the length, got {kernel}")
        for _ in range(num_layers):
            self.blocks.append(ConvMixerBlock(hidden, kernel, expansion, dropout))
