"""ReDimNet backend over the hidden-state stack (the paper's Table III), in svmix's reading.

ReDimNet (Yakovlev et al., Interspeech 2024) alternates 2-D processing of a (channels, frequency,
time) map with 1-D processing of the same numbers reshaped to (channels·frequency, time), keeping
channels·frequency constant from stage to stage, and sums the outputs of all stages with learned
weights. The SV-Mixer paper reports a ReDimNet backend on the student's states without releasing
its configuration; what is open there is chosen here and set in the ``backend:`` config:

- input: the weighted layer sum of all L+1 states (as the ECAPA backend), InstanceNorm over time,
  then H is read as ``H // freq`` channels × ``freq`` "frequency" rows (H = 1024, freq = 64 gives
  16 × 64, the split the authors' follow-up work uses);
- one stage per entry of ``freq_strides``; a stride of 2 halves the frequency rows and doubles the channels, so every stage's 1-D view stays H wide;
- a stage: a strided 2-D conv, ``blocks_2d`` ConvNeXt-style residual blocks (depthwise 3×3 → BN →
  1×1 expand ×``expansion`` → GELU → 1×1), reshape to 1-D, one residual time block (depthwise
  conv over time k=``time_kernel`` → BN → 1×1 → GELU), reshape back;
- aggregation: the stages' 1-D outputs (each (B, H, T)) summed with learned weights initialised 1;
- pooling: attentive statistics pooling with global context (as ECAPA) → BN → Linear → BN.

Sizes with the defaults: 5.35M parameters at H = 1024 (freq 64), against 9.58M for the paper's
ECAPA backend; 0.24M at the mini students' H = 128 with freq 16.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from svmix.models.backends import LayerWeightedSum
from svmix.models.ecapa import AttentiveStatsPooling
from svmix.registry import BACKENDS


class ConvNeXt2d(nn.Module):
    """Residual depthwise 3×3 → BN → 1×1 expand → GELU → 1×1 on a (B, C, F, T) map."""

    def __init__(self, channels: int, expansion: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.BatchNorm2d(channels),
            nn.Conv2d(channels, expansion * channels, 1), nn.GELU(), nn.Conv2d(expansion * channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TimeBlock1d(nn.Module):
    """Residual depthwise conv over time → BN → 1×1 → GELU on a (B, C·F, T) map."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width),
                                  nn.BatchNorm1d(width), nn.Conv1d(width, width, 1), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ReDimStage(nn.Module):
    def __init__(self, in_channels: int, freq_stride: int, blocks_2d: int, expansion: int, time_kernel: int,
                 width: int):
        super().__init__()
        out_channels = in_channels * freq_stride
        self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, (freq_stride, 1), stride=(freq_stride, 1)),
                                  nn.BatchNorm2d(out_channels))
        self.blocks = nn.Sequential(*(ConvNeXt2d(out_channels, expansion) for _ in range(blocks_2d)))
        self.time = TimeBlock1d(width, time_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, F, T) → (B, C·s, F/s, T)
        x = self.blocks(self.down(x))
        b, c, f, t = x.shape
        return self.time(x.reshape(b, c * f, t)).reshape(b, c, f, t)


@BACKENDS.register("redimnet")
class ReDimNetBackend(nn.Module):
    def __init__(self, hidden: int, num_states: int, embed_dim: int = 192, freq: int = 64,
                 freq_strides: Sequence[int] = (1, 2, 2, 2), blocks_2d: int = 2, expansion: int = 2,
                 time_kernel: int = 3, attention_bottleneck: int = 128):
        super().__init__()
        freq_strides = tuple(int(s) for s in freq_strides)
        if hidden % freq:
            raise ValueError(f"ReDimNet: hidden {hidden} is not divisible by freq {freq}")
        total_stride = 1
        for s in freq_strides:
            total_stride *= s
        if not freq_strides or min(freq_strides) < 1 or freq % total_stride:
            raise ValueError(f"ReDimNet: freq {freq} is not divisible by the product of freq_strides {list(freq_strides)}")
        self.hidden, self.freq = hidden, freq
        self.layer_sum = LayerWeightedSum(num_states)
        self.instance_norm = nn.InstanceNorm1d(hidden, affine=False)
        channels, stage_list = hidden // freq, []
        for s in freq_strides:
            stage_list.append(ReDimStage(channels, s, blocks_2d, expansion, time_kernel, hidden))
            channels *= s
        self.stages = nn.ModuleList(stage_list)
        self.stage_weights = nn.Parameter(torch.ones(len(freq_strides)))
        self.pooling = AttentiveStatsPooling(hidden, attention_bottleneck)
        self.pooled_norm = nn.BatchNorm1d(2 * hidden)
        self.embedding = nn.Linear(2 * hidden, embed_dim)
        self.embedding_norm = nn.BatchNorm1d(embed_dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, S, T, H) → (B, D)
        x = self.instance_norm(self.layer_sum(states).transpose(1, 2))  # (B, H, T)
        b, h, t = x.shape
        x = x.reshape(b, h // self.freq, self.freq, t)
        merged = 0
        for weight, stage in zip(self.stage_weights, self.stages):
            x = stage(x)
            merged = merged + weight * x.reshape(b, h, t)
        return self.embedding_norm(self.embedding(self.pooled_norm(self.pooling(merged))))
