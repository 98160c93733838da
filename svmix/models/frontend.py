"""Frontends (registry ``FRONTENDS``): waveform (B, N) → what the encoder takes.

Every frontend has ``dim`` (the feature size of its frames, which must equal ``model.hidden``),
``hop`` (samples between frames), ``num_frames(num_samples)`` and ``num_states``: None for a
frontend that gives frames (B, T, dim), or L+1 for one that gives a whole hidden-state stack
(B, L+1, T, dim) itself (the frozen teacher), which then goes to the ``identity`` encoder.

This module holds the students' frontend ``conv``: the wav2vec 2.0 / WavLM-style convolutional
frontend and feature projection (docs/method.md §Frontend).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from svmix.registry import FRONTENDS

DEFAULT_KERNELS = (10, 3, 3, 3, 3, 2, 2)
DEFAULT_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def num_frames(num_samples: int, kernels: Sequence[int] = DEFAULT_KERNELS,
               strides: Sequence[int] = DEFAULT_STRIDES) -> int:
    """Frames the frontend produces for ``num_samples`` (149 for 3 s at 16 kHz)."""
    t = num_samples
    for k, s in zip(kernels, strides):
        t = (t - k) // s + 1
    return max(t, 0)


def receptive_field(kernels: Sequence[int] = DEFAULT_KERNELS, strides: Sequence[int] = DEFAULT_STRIDES) -> int:
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return field


def hop_length(strides: Sequence[int] = DEFAULT_STRIDES) -> int:
    hop = 1
    for s in strides:
        hop *= s
    return hop


class ConvFrontend(nn.Module):
    """Bias-free Conv1d stack: layer 1 conv→GroupNorm(C groups)→GELU, the others conv→GELU.

    Parameter names follow torchaudio's ``FeatureExtractor`` (``conv_layers.i.conv``,
    ``conv_layers.0.layer_norm``) so a teacher's frontend can be copied in when shapes match.
    """

    def __init__(self, channels: Union[int, Sequence[int]] = 512,
                 kernels: Sequence[int] = DEFAULT_KERNELS, strides: Sequence[int] = DEFAULT_STRIDES):
        super().__init__()
        if isinstance(channels, int):
            channels = [channels] * len(kernels)
        if not (len(channels) == len(kernels) == len(strides)):
            raise ValueError("frontend channels, kernels and strides must have the same length")
        self.kernels, self.strides = tuple(kernels), tuple(strides)
        self.out_channels = channels[-1]
        layers = []
        in_ch = 1
        for i, (ch, k, s) in enumerate(zip(channels, kernels, strides)):
            layers.append(_ConvLayer(in_ch, ch, k, s, group_norm=(i == 0)))
            in_ch = ch
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform → (B, T, C) features."""
        x = wav.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x.transpose(1, 2)


class _ConvLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, group_norm: bool):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, bias=False)
        self.layer_norm = nn.GroupNorm(out_ch, out_ch, affine=True) if group_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return nn.functional.gelu(x)


class FeatureProjection(nn.Module):
    """LayerNorm(C) → Linear(C→H) → Dropout, as in wav2vec 2.0 / WavLM."""

    def __init__(self, in_features: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_features, eps=1e-5)
        self.projection = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.projection(self.layer_norm(x)))


@FRONTENDS.register("conv")
class Frontend(nn.Module):
    """Waveform (B, N) → projected frames (B, T, H): the students' frontend (the default)."""

    num_states = None

    def __init__(self, hidden: int, channels: Union[int, Sequence[int]] = 512,
                 kernels: Sequence[int] = DEFAULT_KERNELS, strides: Sequence[int] = DEFAULT_STRIDES,
                 dropout: float = 0.1):
        super().__init__()
        self.feature_extractor = ConvFrontend(channels, kernels, strides)
        self.feature_projection = FeatureProjection(self.feature_extractor.out_channels, hidden, dropout)
        self.dim = hidden

    @property
    def hop(self) -> int:
        return hop_length(self.feature_extractor.strides)

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.feature_extractor.kernels, self.feature_extractor.strides)

    def num_frames(self, num_samples: int) -> int:
        return num_frames(num_samples, self.feature_extractor.kernels, self.feature_extractor.strides)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.feature_projection(self.feature_extractor(wav))
