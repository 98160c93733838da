"""SV-Mixer encoder (docs/method.md §SV-Mixer block): blocks of Local-Global token mixing (LGM) and multi-scale
grouped channel mixing (MSM + GCM), as the authors' code builds them.

Tensors inside a block are (B, H, T) like the reference code; the encoder takes and returns
(B, T, H) frames. ``seq_len`` is fixed (149 frames = 3 s) because the global token MLP and the
multi-scale upsampling are sized for it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svmix.models.encoder import ChannelMLP, FrameEncoder, GroupedMLP
from svmix.registry import ENCODERS


class LocalGlobalMixing(nn.Module):
    """LGM: depthwise local convolutions (k7→GELU→k3) plus a global time MLP shared over channels.

    ``mode="parallel"`` (the code) sums the two branches; ``mode="sequential"`` (the paper's
    Fig. 2b) applies a depthwise k3 convolution and then the global MLP.
    """

    def __init__(self, hidden: int, seq_len: int, expansion: int = 4, dropout: float = 0.1,
                 mode: str = "parallel"):
        super().__init__()
        if mode not in ("parallel", "sequential"):
            raise ValueError(f"LGM mode must be 'parallel' or 'sequential', not {mode!r}")
        self.mode = mode
        self.norm = nn.LayerNorm(hidden)
        if mode == "parallel":
            self.local = nn.Sequential(
                nn.Conv1d(hidden, hidden, 7, padding=3, groups=hidden), nn.GELU(),
                nn.Conv1d(hidden, hidden, 3, padding=1, groups=hidden))
        else:
            self.local = nn.Conv1d(hidden, hidden, 3, padding=1, groups=hidden)
        self.global_mlp = TokenMLP(seq_len, expansion)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T)
        y = self.norm(x.transpose(1, 2)).transpose(1, 2)
        if self.mode == "parallel":
            y = self.local(y) + self.global_mlp(y)
        else:
            y = self.global_mlp(self.local(y))
        return x + self.dropout(y)


class TokenMLP(nn.Sequential):
    """Linear(T→eT) → GELU → Linear(eT→T) along time, weights shared over channels."""

    def __init__(self, seq_len: int, expansion: int = 4):
        super().__init__(nn.Linear(seq_len, expansion * seq_len), nn.GELU(), nn.Linear(expansion * seq_len, seq_len))


class TokenMixing(nn.Module):
    """Vanilla MLP-Mixer token mixing (the Table II 'no LGM' ablation): x + Dropout(TokenMLP(LN(x)))."""

    def __init__(self, hidden: int, seq_len: int, expansion: int = 4, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = TokenMLP(seq_len, expansion)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T)
        return x + self.dropout(self.mlp(self.norm(x.transpose(1, 2)).transpose(1, 2)))


class MultiScaleChannelMixing(nn.Module):
    """MSM + GCM as coded: a half-rate and a full-rate grouped MLP, summed, then a grouped k3
    convolution → GELU → dense 1×1 convolution, in a pre-LN residual.

    ``multi_scale=False`` keeps only the full-rate path (GCM alone); ``groups=1`` makes the MLPs
    and the merge k3 convolution dense (MSM alone; the same as group_dim = H).
    """

    def __init__(self, hidden: int, seq_len: int, expansion: int = 4, groups: int = 8,
                 dropout: float = 0.1, multi_scale: bool = True):
        super().__init__()
        if hidden % groups:
            raise ValueError(f"hidden size {hidden} is not divisible into {groups} groups")
        self.seq_len = seq_len
        self.norm = nn.LayerNorm(hidden)
        self.low_rate = GroupedMLP(hidden, expansion, groups) if multi_scale else None
        self.full_rate = GroupedMLP(hidden, expansion, groups)
        self.merge = nn.Sequential(nn.Conv1d(hidden, hidden, 3, padding=1, groups=groups), nn.GELU(),
                                   nn.Conv1d(hidden, hidden, 1))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T)
        y = self.norm(x.transpose(1, 2)).transpose(1, 2)
        z = self.full_rate(y)
        if self.low_rate is not None:
            low = self.low_rate(F.avg_pool1d(y, 2, 2))
            z = z + F.interpolate(low, size=self.seq_len, mode="linear", align_corners=False)
        return x + self.dropout(self.merge(z))


class SVMixerBlock(nn.Module):
    """Token mixing then channel mixing. Switches give the Table II ablations:
    ``lgm``, ``msm`` and ``gcm`` each replace their module by the vanilla MLP-Mixer one when False."""

    def __init__(self, hidden: int, seq_len: int, group_dim: int = 128, token_expansion: int = 4,
                 channel_expansion: int = 4, dropout: float = 0.1, channel_dropout: float = 0.1,
                 lgm: bool = True, msm: bool = True, gcm: bool = True, lgm_mode: str = "parallel"):
        super().__init__()
        if lgm:
            self.token_mixing = LocalGlobalMixing(hidden, seq_len, token_expansion, dropout, lgm_mode)
        else:
            self.token_mixing = TokenMixing(hidden, seq_len, token_expansion, dropout)
        if msm or gcm:
            groups = hidden // group_dim if gcm else 1
            self.channel_mixing = MultiScaleChannelMixing(hidden, seq_len, channel_expansion, groups,
                                                          channel_dropout, multi_scale=msm)
        else:
            self.channel_mixing = ChannelMLP(hidden, channel_expansion, channel_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T)
        return self.channel_mixing(self.token_mixing(x))


@ENCODERS.register("svmixer")
class SVMixerEncoder(FrameEncoder):
    block_layout = "BHT"
    fixed_length = True

    def __init__(self, hidden: int, seq_len: int, num_layers: int, group_dim: int = 128,
                 token_expansion: int = 4, channel_expansion: int = 4, dropout: float = 0.1,
                 lgm: bool = True, msm: bool = True, gcm: bool = True, lgm_mode: str = "parallel"):
        super().__init__(hidden, seq_len, num_layers, dropout)
        for i in range(num_layers):
            # The authors' code turns off the channel-mixing dropout of the last block.
            channel_dropout = 0.0 if i == num_layers - 1 else dropout
            self.blocks.append(SVMixerBlock(hidden, seq_len, group_dim, token_expansion, channel_expansion,
                                            dropout, channel_dropout, lgm, msm, gcm, lgm_mode))


@ENCODERS.register("mlpmixer")
class MLPMixerEncoder(SVMixerEncoder):
    """Vanilla MLP-Mixer student (Table I/II 'none'): SV-Mixer with LGM, MSM and GCM all off."""

    def __init__(self, hidden: int, seq_len: int, num_layers: int, token_expansion: int = 4,
                 channel_expansion: int = 4, dropout: float = 0.1):
        super().__init__(hidden, seq_len, num_layers, token_expansion=token_expansion,
                         channel_expansion=channel_expansion, dropout=dropout, lgm=False, msm=False, gcm=False)
