"""CycleMLP student (Table I baseline), CycleMLP (Chen et al.) reduced to one time axis.

Token mixing is a Cycle FC: a channel FC (H→H) whose input channel c is read at time t + o(c),
with offsets o(c) cycling through −s//2 … s//2 over the channels (stepsize s = 7, zeros beyond
the edges), in a pre-LN residual; channel mixing is the MLP-Mixer channel MLP (H→4H→H). On 1-D
frames the 2-D CycleMLP's height/width/channel branches and their reweighting collapse to this
single Cycle FC; the result, 9.45M parameters and 1.41 GMACs per layer at H=1024, T=149, is the
paper's 9.45M / 1.42G. Works for any sequence length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svmix.models.encoder import ChannelMLP, FrameEncoder
from svmix.registry import ENCODERS


class CycleFC(nn.Module):
    def __init__(self, hidden: int, stepsize: int = 7):
        super().__init__()
        self.pad = stepsize // 2
        offsets = (torch.arange(hidden) + self.pad) % stepsize - self.pad
        self.register_buffer("offsets", offsets.view(1, hidden, 1), persistent=False)
        self.fc = nn.Conv1d(hidden, hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T)
        b, h, t = x.shape
        index = torch.arange(t, device=x.device).view(1, 1, t) + self.offsets + self.pad
        shifted = torch.gather(F.pad(x, (self.pad, self.pad)), 2, index.expand(b, h, t))
        return self.fc(shifted)


class CycleTokenMixing(nn.Module):
    """x + Dropout(CycleFC(LN(x)))."""

    def __init__(self, hidden: int, stepsize: int = 7, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.cycle_fc = CycleFC(hidden, stepsize)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T)
        return x + self.dropout(self.cycle_fc(self.norm(x.transpose(1, 2)).transpose(1, 2)))


class CycleMLPBlock(nn.Module):
    def __init__(self, hidden: int, stepsize: int = 7, expansion: int = 4, dropout: float = 0.1):
        super().__init__()
        self.token_mixing = CycleTokenMixing(hidden, stepsize, dropout)
        self.channel_mixing = ChannelMLP(hidden, expansion, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixing(self.token_mixing(x))


@ENCODERS.register("cyclemlp")
class CycleMLPEncoder(FrameEncoder):
    block_layout = "BHT"

    def __init__(self, hidden: int, seq_len: int, num_layers: int, stepsize: int = 7, expansion: int = 4,
                 dropout: float = 0.1):
        super().__init__(hidden, seq_len, num_layers, dropout)
        for _ in range(num_layers):
            self.blocks.append(CycleMLPBlock(hidden, stepsize, expansion, dropout))
