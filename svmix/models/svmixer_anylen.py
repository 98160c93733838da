"""Any-length SV-Mixer (encoder ``svmixer_anylen``; beyond the paper, docs/architecture.md §Any-length SV-Mixer).

The SV-Mixer block of :mod:`svmix.models.svmixer` with its global time MLP applied to windows of
``token_window`` frames (default: the training segment's frames, 149 for 3 s) instead of to the
whole, fixed-length input. Windows start every ``token_window`` frames; the last one is moved back
to end on the last frame, so every window holds real frames only, and a frame covered by two windows
takes the mean of their outputs. An input shorter than one window is tiled (frame indices wrap
round) to fill it, and each frame takes the mean over its copies. Everything else (depthwise local
convolutions, grouped channel MLPs, the half-rate path with its interpolation to the input's length,
the merge convolution) is length-agnostic already and unchanged. On an input of exactly
``token_window`` frames the block computes what the fixed-length SV-Mixer block computes, with the
same parameter names, so a ``svmixer`` state dict loads into it.

The encoder therefore embeds a whole utterance in one pass: it declares ``whole_utterance``, and
extraction, the Python API and export give it each utterance as one input instead of the
evaluation's fixed-length segments (``svmix.models.speaker_model.one_pass``).

Padded batches: ``forward(x, lengths)`` takes each item's number of real frames. Frames past an
item's length are zeroed before every operation that mixes frames (both local convolutions, the
merge convolution); windows and the half-rate path are built from each item's own frames, so an
item's outputs do not depend on what its padding holds or on the batch's longest item.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from svmix.models.encoder import FrameEncoder
from svmix.models.svmixer import LocalGlobalMixing, MultiScaleChannelMixing
from svmix.registry import ENCODERS


def window_index(lengths: torch.Tensor, window: int, num_windows: int):
    """For items of ``lengths`` frames, the frame index of every position of ``num_windows`` windows,
    (B, n·W), and the position's weight, (B, n·W): an item of L frames uses max(1, ⌈L/W⌉) windows,
    weight 1; its unused windows repeat its last one with weight 0. (Tensors are per position, never
    per window: a window axis of size 1 would make torch.export fix the number of windows.)"""
    positions = torch.arange(num_windows * window, device=lengths.device)
    starts = (positions // window) * window  # each position's window start
    offsets = positions % window
    length = lengths[:, None]
    used = (starts[None] < length) | (starts[None] == 0)
    starts = torch.minimum(starts[None], torch.clamp(length - window, min=0))  # the last window ends on the last frame
    index = (starts + offsets[None]) % length  # wraps only when L < W (tiling)
    return index, used.to(torch.float32)


def windowed_time_mlp(mlp: nn.Module, y: torch.Tensor, window: int,
                      lengths: Optional[torch.Tensor] = None, min_windows: int = 1) -> torch.Tensor:
    """``mlp`` (W → W along the last axis) applied to windows of W frames of ``y`` (B, H, T); each
    frame gets the mean of its outputs over the windows (and copies) that hold it. Frames past an
    item's length (``lengths``, (B,)) are never read and come out zero. ``min_windows`` > 1 computes
    at least that many windows (the extra ones weight 0: the same output), see :func:`prepare_for_export`."""
    b, h, t = y.shape
    if lengths is None:
        lengths = torch.full((b,), t, dtype=torch.long, device=y.device)
    num_windows = (t + window - 1) // window  # ⌈T/W⌉ ≥ 1
    if min_windows > 1:
        num_windows = torch.sym_max(num_windows, min_windows)  # symbolic under torch.export: no branch
    index, weights = window_index(lengths, window, num_windows)
    weights = weights.to(y.dtype)
    positions = index[:, None, :].expand(b, h, num_windows * window)
    mixed = mlp(y.gather(2, positions).view(b, h, num_windows, window)).view(b, h, num_windows * window)
    summed = torch.zeros_like(y).scatter_add(2, positions, mixed * weights[:, None, :])
    counts = torch.zeros(b, t, dtype=y.dtype, device=y.device).scatter_add(1, index, weights)
    return summed / counts.clamp(min=1.0)[:, None, :]


def frame_mask(lengths: Optional[torch.Tensor], t: int) -> Optional[torch.Tensor]:
    """(B, 1, T), True on real frames, False on padding; None without ``lengths``."""
    if lengths is None:
        return None
    return (torch.arange(t, device=lengths.device)[None] < lengths[:, None])[:, None, :]


def _masked(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Padding set to zero (a fill, not a product: padding holding inf or NaN stays out too)."""
    return x if mask is None else x.masked_fill(~mask, 0.0)


class WindowedLocalGlobalMixing(LocalGlobalMixing):
    """LGM (parallel, as the authors' code) with the global time MLP over windows of ``window`` frames."""

    def __init__(self, hidden: int, window: int, expansion: int = 4, dropout: float = 0.1):
        super().__init__(hidden, window, expansion, dropout, mode="parallel")
        self.window = window
        self.min_windows = 1  # 2 in exported programs (prepare_for_export)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # x: (B, H, T)
        y = _masked(self.norm(x.transpose(1, 2)).transpose(1, 2), mask)
        first, gelu, second = self.local
        local = second(_masked(gelu(first(y)), mask))
        return x + self.dropout(local + windowed_time_mlp(self.global_mlp, y, self.window, lengths,
                                                          self.min_windows))


EXPORT_MIN_WINDOWS = 2


def prepare_for_export(model: nn.Module) -> nn.Module:
    """``model`` (in place) with every windowed time MLP computing at least two windows, for
    ``torch.export`` with a dynamic time axis. Traced with one window, torch.export fixes the window
    count at 1 (a size-1 dimension is specialised); traced with more, it guards on "not 1", and a
    3 s input fails. With a floor of two the count stays symbolic for every length: an input that
    fits one window computes one extra window of weight 0, so the output is unchanged and the token
    MLP costs twice as much on inputs up to one window long."""
    for module in model.modules():
        if isinstance(module, WindowedLocalGlobalMixing):
            module.min_windows = EXPORT_MIN_WINDOWS
    return model


class AnyLengthChannelMixing(MultiScaleChannelMixing):
    """MSM + GCM with the half-rate path interpolated to each input's (each item's) own length."""

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # x: (B, H, T)
        y = _masked(self.norm(x.transpose(1, 2)).transpose(1, 2), mask)
        z = self.full_rate(y)
        if lengths is None:
            low = self.low_rate(F.avg_pool1d(y, 2, 2))
            z = z + F.interpolate(low, size=y.shape[-1], mode="linear", align_corners=False)
        else:  # each item at its own length: the pairs and the interpolation grid depend on it
            upsampled = torch.zeros_like(z)
            for length in sorted(set(lengths.tolist())):
                items = (lengths == length).nonzero().flatten()
                low = self.low_rate(F.avg_pool1d(y[items, :, :length], 2, 2))
                upsampled[items, :, :length] = F.interpolate(low, size=length, mode="linear", align_corners=False)
            z = z + upsampled
        return x + self.dropout(self.merge(_masked(z, mask)))


class AnyLengthSVMixerBlock(nn.Module):
    """Windowed LGM then MSM + GCM; parameter names as in ``SVMixerBlock`` (deliberately not a
    subclass: the fast inference path, which is sized for fixed-length blocks, leaves it alone)."""

    def __init__(self, hidden: int, window: int, group_dim: int = 128, token_expansion: int = 4,
                 channel_expansion: int = 4, dropout: float = 0.1, channel_dropout: float = 0.1):
        super().__init__()
        self.token_mixing = WindowedLocalGlobalMixing(hidden, window, token_expansion, dropout)
        self.channel_mixing = AnyLengthChannelMixing(hidden, window, channel_expansion, hidden // group_dim,
                                                     channel_dropout)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        mask = frame_mask(lengths, x.shape[-1])
        return self.channel_mixing(self.token_mixing(x, lengths, mask), lengths, mask)


@ENCODERS.register("svmixer_anylen")
class AnyLengthSVMixerEncoder(FrameEncoder):
    """SV-Mixer for inputs of any length (≥ 1 frame); ``token_window`` null means the segment's frames."""

    block_layout = "BHT"
    whole_utterance = True  # embeds a whole utterance in one pass (no evaluation segments)

    def __init__(self, hidden: int, seq_len: int, num_layers: int, group_dim: int = 128,
                 token_expansion: int = 4, channel_expansion: int = 4, dropout: float = 0.1,
                 token_window: Optional[int] = None):
        super().__init__(hidden, seq_len, num_layers, dropout)
        if hidden % group_dim:
            raise ValueError(f"hidden size {hidden} is not divisible into groups of {group_dim}")
        self.token_window = int(token_window or seq_len)
        for i in range(num_layers):
            channel_dropout = 0.0 if i == num_layers - 1 else dropout  # as SVMixerEncoder
            self.blocks.append(AnyLengthSVMixerBlock(hidden, self.token_window, group_dim, token_expansion,
                                                     channel_expansion, dropout, channel_dropout))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, H) frames, optionally each item's real frames ``lengths`` (B,) → (B, L+1, T, H)
        states (zero past each item's length when ``lengths`` is given)."""
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long, device=x.device)
            if lengths.shape != (x.shape[0],) or bool((lengths < 1).any()) or bool((lengths > x.shape[1]).any()):
                raise ValueError(f"lengths must be {x.shape[0]} frame counts in 1..{x.shape[1]}, got {lengths.tolist()}")
        x = self.input_dropout(x).transpose(1, 2)
        states = []
        for block in self.blocks:
            states.append(x.transpose(1, 2))
            x = block(x, lengths)
        states.append(self.final_norm(x.transpose(1, 2)))
        stack = torch.stack(states, dim=1)
        mask = frame_mask(lengths, stack.shape[2])
        return stack if mask is None else _masked(stack, mask[:, :, :, None])
