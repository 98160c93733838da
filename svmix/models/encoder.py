"""What the frame encoders (students) share: the ``FrameEncoder`` base class with its block layouts,
and the channel MLPs that several students' blocks use.

A student's encoder subclasses ``FrameEncoder``, fills ``blocks`` and says in ``block_layout`` how its
blocks take frames; the encoders register themselves in ``ENCODERS`` from their own modules.
"""
from __future__ import annotations

import torch
from torch import nn

from svmix.registry import ENCODERS


class GroupedMLP(nn.Sequential):
    """1×1 grouped convolutions H→eH→H with GELU: SV-Mixer's GCM channel MLP (groups=1 is a dense MLP)."""

    def __init__(self, hidden: int, expansion: int, groups: int):
        super().__init__(nn.Conv1d(hidden, expansion * hidden, 1, groups=groups), nn.GELU(),
                         nn.Conv1d(expansion * hidden, hidden, 1, groups=groups))


class ChannelMLP(nn.Module):
    """Vanilla MLP-Mixer channel mixing: x + Dropout(Linear(H→eH) → GELU → Linear(eH→H))."""

    def __init__(self, hidden: int, expansion: int = 4, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = GroupedMLP(hidden, expansion, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T)
        return x + self.dropout(self.mlp(self.norm(x.transpose(1, 2)).transpose(1, 2)))


# How blocks want their frames, as a permutation of (B, T, H) (each is its own inverse)
BLOCK_LAYOUTS = {"BTH": (0, 1, 2), "BHT": (0, 2, 1), "TBH": (1, 0, 2)}


class FrameEncoder(nn.Module):
    """Base for students: input dropout, L blocks, final LayerNorm; returns the hidden-state stack
    (B, L+1, T, H) = [block-1 input, block-1 … block-(L−1) outputs, LN(block-L output)].

    ``block_layout`` says how the blocks take frames: (B, T, H), channels-first (B, H, T), or
    time-major (T, B, H) (the fast inference blocks); frames are permuted once on the way in, and
    the final stacking copies the states back to (B, T, H)."""

    block_layout = "BTH"
    fixed_length = False    # True when blocks are sized for exactly ``seq_len`` frames
    whole_utterance = False  # True: evaluation embeds a whole utterance in one pass, not segments

    def __init__(self, hidden: int, seq_len: int, num_layers: int, dropout: float = 0.1):
        super().__init__()
        self.hidden, self.seq_len, self.num_layers = hidden, seq_len, num_layers
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList()
        self.final_norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, H)
        if self.fixed_length and x.shape[1] != self.seq_len:
            raise ValueError(f"{type(self).__name__} needs {self.seq_len} frames, got {x.shape[1]}")
        permutation = BLOCK_LAYOUTS[self.block_layout]
        x = self.input_dropout(x).permute(permutation)
        states = []
        for block in self.blocks:
            states.append(x.permute(permutation))
            x = block(x)
        states.append(self.final_norm(x.permute(permutation)))
        return torch.stack(states, dim=1)


@ENCODERS.register("identity")
class IdentityEncoder(nn.Module):
    """No encoder (0 layers): frames (B, T, H) become a one-state stack (B, 1, T, H), and a stack a
    frontend already made (the frozen teacher's, (B, L+1, T, H)) passes through unchanged."""

    block_layout = "BTH"
    num_layers = 0

    def __init__(self, hidden: int, seq_len: int):
        super().__init__()
        self.hidden, self.seq_len = hidden, seq_len
        self.blocks = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.dim() == 4 else x.unsqueeze(1)
