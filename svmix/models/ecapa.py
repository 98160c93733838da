"""ECAPA-TDNN backend over the hidden-state stack, as in the authors' code (docs/method.md §Backends).

(B, L+1, T, H) → weighted layer sum → InstanceNorm over time (+ training-only noise) →
Conv1d(H→C, k5) → three Res2Net-SE blocks → 1×1 conv to 1536 → attentive statistics pooling
with global context → BN → Linear → BN → (B, D).
"""
from __future__ import annotations

import torch
from torch import nn

from svmix.models.backends import LayerWeightedSum
from svmix.registry import BACKENDS


class ConvReluBN(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1):
        super().__init__(nn.Conv1d(in_ch, out_ch, kernel, dilation=dilation, padding=dilation * (kernel // 2)),
                         nn.ReLU(), nn.BatchNorm1d(out_ch))


class SqueezeExcitation(nn.Module):
    """Channel gates from the time average: C → bottleneck → ReLU → C → sigmoid."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.gate = nn.Sequential(nn.Conv1d(channels, bottleneck, 1), nn.ReLU(),
                                  nn.Conv1d(bottleneck, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=2, keepdim=True))


class Res2NetSEBlock(nn.Module):
    """1×1 conv → Res2Net dilated k-convs over ``scale`` channel splits (hierarchical, the last split
    passed through) → 1×1 conv → SE, plus the input (each conv followed by ReLU → BN)."""

    def __init__(self, channels: int, kernel: int = 3, dilation: int = 1, scale: int = 4, se_bottleneck: int = 128):
        super().__init__()
        if channels % scale:
            raise ValueError(f"ECAPA channels {channels} are not divisible by scale {scale}")
        width = channels // scale
        self.conv_in = ConvReluBN(channels, channels)
        self.res2 = nn.ModuleList(ConvReluBN(width, width, kernel, dilation) for _ in range(scale - 1))
        self.conv_out = ConvReluBN(channels, channels)
        self.se = SqueezeExcitation(channels, se_bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = torch.chunk(self.conv_in(x), len(self.res2) + 1, dim=1)
        outputs, y = [], None
        for split, conv in zip(splits, self.res2):
            y = conv(split if y is None else y + split)
            outputs.append(y)
        outputs.append(splits[-1])
        return x + self.se(self.conv_out(torch.cat(outputs, dim=1)))


class AttentiveStatsPooling(nn.Module):
    """Attention over time from [x, mean, std] (global context); returns weighted mean ‖ std."""

    def __init__(self, channels: int, bottleneck: int = 256):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(3 * channels, bottleneck, 1), nn.ReLU(), nn.BatchNorm1d(bottleneck),
                                       nn.Tanh(), nn.Conv1d(bottleneck, channels, 1), nn.Softmax(dim=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) → (B, 2C)
        t = x.shape[2]
        mean = x.mean(dim=2, keepdim=True)
        std = torch.sqrt(x.var(dim=2, keepdim=True).clamp(min=1e-4))
        context = torch.cat([x, mean.expand(-1, -1, t), std.expand(-1, -1, t)], dim=1)
        w = self.attention(context)
        mu = (x * w).sum(dim=2)
        sigma = torch.sqrt(((x ** 2) * w).sum(dim=2).sub(mu ** 2).clamp(min=1e-4))
        return torch.cat([mu, sigma], dim=1)


@BACKENDS.register("ecapa")
class ECAPABackend(nn.Module):
    def __init__(self, hidden: int, num_states: int, embed_dim: int = 192, channels: int = 512,
                 dilations=(2, 3, 4), scale: int = 4, se_bottleneck: int = 128, pooled_channels: int = 1536,
                 attention_bottleneck: int = 256, noise_std=(0.001, 0.01)):
        super().__init__()
        self.layer_sum = LayerWeightedSum(num_states)
        self.instance_norm = nn.InstanceNorm1d(hidden, affine=False)
        self.noise_std = tuple(noise_std)
        self.conv_in = ConvReluBN(hidden, channels, kernel=5)
        self.blocks = nn.ModuleList(Res2NetSEBlock(channels, 3, d, scale, se_bottleneck) for d in dilations)
        self.conv_cat = nn.Sequential(nn.Conv1d(len(dilations) * channels, pooled_channels, 1), nn.ReLU())
        self.pooling = AttentiveStatsPooling(pooled_channels, attention_bottleneck)
        self.pooled_norm = nn.BatchNorm1d(2 * pooled_channels)
        self.embedding = nn.Linear(2 * pooled_channels, embed_dim)
        self.embedding_norm = nn.BatchNorm1d(embed_dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, S, T, H) → (B, D)
        x = self.instance_norm(self.layer_sum(states).transpose(1, 2))
        if self.training:
            low, high = self.noise_std
            std = torch.empty(x.shape[0], 1, 1, device=x.device, dtype=x.dtype).uniform_(low, high)
            x = x + torch.randn_like(x) * std
        x = self.conv_in(x)
        outputs, block_input = [], x
        for block in self.blocks:
            outputs.append(block(block_input))
            block_input = block_input + outputs[-1]
        x = self.conv_cat(torch.cat(outputs, dim=1))
        return self.embedding_norm(self.embedding(self.pooled_norm(self.pooling(x))))
