"""Inference-only SV-Mixer blocks that compute exactly what ``svmix.models.svmixer`` computes, fast on a CPU.

Why the reference is slow on a CPU, and what these blocks do instead (measured with torch.profiler):

- grouped 1×1 and depthwise convolutions in (B, H, T) run at a fraction of GEMM speed → every channel
  map here is a GEMM in a (B, T, H) channels-last layout: grouped maps are ``baddbmm`` over groups on
  strided views (no transposes copied), the dense 1×1 is one ``addmm``, the time MLP is ``baddbmm`` with
  the time dimension as rows; depthwise convolutions are a few shifted multiply-adds;
- fresh allocations above glibc's mmap threshold (32 MB: a 4H hidden of 16 utterances) page-fault on
  every call → the batch is processed in chunks whose intermediates stay well below it, and GELUs run
  in place;
- linear maps with nothing non-linear between them are folded: avg-pool and the first low-rate
  conv (the pool's ½ becomes the GEMM's ``alpha``), the low-rate output bias into the full-rate one
  (linear interpolation weights sum to one), the token MLP's output bias and the local conv bias into
  one residual term; the linear interpolation is a fixed two-tap gather; the merge k3 conv runs as three
  tap GEMMs over a zero-padded sequence that puts all utterances of a chunk into one matrix.

A fast module is built from a reference module and shares its submodules under the same names, so
``state_dict()`` keys and values are unchanged and loading weights afterwards still works. Fast
blocks take and return (B, T, H) frames (the reference blocks take (B, H, T)); dropout is ignored,
so they are for eval mode only. ``FAST_MODULES`` maps each reference module class to its fast class.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Type

import torch
import torch.nn.functional as F
from torch import nn

from svmix.models.svmixer import (ChannelMLP, LocalGlobalMixing, MultiScaleChannelMixing, SVMixerBlock,
                                  TokenMixing)

# Largest number of frames (rows) one chunk processes: its biggest intermediate, the 4H-wide grouped
# hidden, is then 4·1024·4 B · 1200 ≈ 20 MB, below glibc's 32 MB mmap threshold.
CHUNK_ROWS = 1200

FAST_MODULES: Dict[Type[nn.Module], Type[nn.Module]] = {}


def fast_version_of(reference_cls: Type[nn.Module]) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    def decorator(cls: Type[nn.Module]) -> Type[nn.Module]:
        FAST_MODULES[reference_cls] = cls
        return cls

    return decorator


def build_fast(reference: nn.Module) -> nn.Module:
    try:
        return FAST_MODULES[type(reference)](reference)
    except KeyError:
        raise TypeError(f"no fast inference version of {type(reference).__name__}") from None


def _adopt_children(fast: nn.Module, reference: nn.Module) -> None:
    """Register the reference's children on ``fast`` under the same names (shared parameters)."""
    for name, child in reference.named_children():
        fast.add_module(name, child)


def _tracing() -> bool:
    """True while torch.jit.trace, torch.export/ONNX or torch.compile records the graph: then plain
    out-of-place batched ops are used, with no Python loops over batch items or groups."""
    return (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or torch.onnx.is_in_onnx_export())


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place; out of place while tracing/exporting, where in-place ops buy nothing."""
    if _tracing() or x.requires_grad:
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _batch_chunks(batch: int, rows_per_item: int):
    """Slices of the batch whose chunks hold at most ``CHUNK_ROWS`` frames (one chunk while tracing)."""
    if _tracing():
        return [slice(0, batch)]
    per_chunk = max(1, CHUNK_ROWS // rows_per_item)
    n_chunks = math.ceil(batch / per_chunk)
    size = math.ceil(batch / n_chunks)
    return [slice(s, min(s + size, batch)) for s in range(0, batch, size)]


def _conv(conv: nn.Conv1d, y: torch.Tensor) -> torch.Tensor:
    return F.conv1d(y, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _token_mixing(x: torch.Tensor, norm: nn.LayerNorm, mlp: nn.Sequential,
                  local: Optional[Callable[[torch.Tensor], torch.Tensor]], sequential: bool) -> torch.Tensor:
    """x + [local(y) +] MLP_time(y), or x + MLP_time(local(y)) when ``sequential``, with y = LN(x).

    The normalised frames are transposed once to (B, H, T): there the time MLP is one GEMM over all
    utterances and channels, with its biases along rows, and the depthwise convolutions are native."""
    y = _layer_norm(norm, x).transpose(1, 2).contiguous()  # (B, H, T)
    first, last = mlp[0], mlp[2]
    if sequential:
        y = local(y)
    hidden = _gelu_(F.linear(y, first.weight, first.bias))
    if local is None or sequential:
        mixed = F.linear(hidden, last.weight, last.bias)
    elif _tracing():
        mixed = local(y) + F.linear(hidden, last.weight, last.bias)
    else:
        mixed = local(y).add_(last.bias)
        mixed.view(-1, mixed.shape[-1]).addmm_(hidden.view(-1, hidden.shape[-1]), last.weight.t())
    return x + mixed.transpose(1, 2)


@fast_version_of(LocalGlobalMixing)
class FastLocalGlobalMixing(nn.Module):
    """x + local(LN x) + global(LN x) (parallel) or x + global(local(LN x)) (sequential), (B, T, H)."""

    def __init__(self, reference: LocalGlobalMixing):
        super().__init__()
        _adopt_children(self, reference)
        self.mode = reference.mode

    def _local(self, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "sequential":
            return _conv(self.local, y)
        return _conv(self.local[2], _gelu_(_conv(self.local[0], y)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _token_mixing(x, self.norm, self.global_mlp, self._local, self.mode == "sequential")


@fast_version_of(TokenMixing)
class FastTokenMixing(nn.Module):
    """Vanilla MLP-Mixer token mixing on (B, T, H)."""

    def __init__(self, reference: TokenMixing):
        super().__init__()
        _adopt_children(self, reference)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _token_mixing(x, self.norm, self.mlp, None, False)


def _grouped(conv: nn.Conv1d):
    """A grouped 1×1 Conv1d as (G, in/G, out/G) weights (a transposed view) and (G, 1, out/G) bias."""
    g = conv.groups
    out_ch, in_per_group = conv.weight.shape[:2]
    weight = conv.weight.view(g, out_ch // g, in_per_group).transpose(1, 2)
    return weight, conv.bias.view(g, 1, out_ch // g)


def _by_group(y: torch.Tensor, groups: int) -> torch.Tensor:
    """(R, H) → (G, R, H/G) view, no copy."""
    return y.view(y.shape[0], groups, -1).transpose(0, 1)


@fast_version_of(MultiScaleChannelMixing)
class FastMultiScaleChannelMixing(nn.Module):
    """MSM + GCM on (B, T, H): every map is one batched GEMM over groups on strided views."""

    def __init__(self, reference: MultiScaleChannelMixing):
        super().__init__()
        _adopt_children(self, reference)
        if reference.low_rate is None:
            self.low_rate = None
        self.seq_len = reference.seq_len
        self.groups = reference.full_rate[0].groups
        # linear interpolation low_len → seq_len (align_corners=False) as a fixed (T, T/2) matrix
        low_len = self.seq_len // 2
        weights = F.interpolate(torch.eye(low_len)[None], size=self.seq_len, mode="linear", align_corners=False)[0]
        self.register_buffer("upsample", weights.t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, hidden = x.shape[1:]
        g, h = self.groups, hidden // self.groups
        x_norm = _layer_norm(self.norm, x)
        y = x_norm.view(-1, hidden)
        w1, b1 = _grouped(self.full_rate[0])
        w2, b2 = _grouped(self.full_rate[2])
        z = torch.baddbmm(b2, _gelu_(torch.baddbmm(b1, _by_group(y, g), w1)), w2)  # (G, B·T, h)
        if self.low_rate is not None:
            low_len = t // 2
            # avg-pool ½ folded into the first low-rate GEMM as alpha
            pooled = (x_norm[:, 0:2 * low_len:2] + x_norm[:, 1:2 * low_len:2]).view(-1, hidden)
            lw1, lb1 = _grouped(self.low_rate[0])
            lw2, lb2 = _grouped(self.low_rate[2])
            low = torch.baddbmm(lb2, _gelu_(torch.baddbmm(lb1, _by_group(pooled, g), lw1, alpha=0.5)), lw2)
            z = torch.baddbmm(z.view(-1, t, h), self.upsample.expand(z.shape[0] * z.shape[1] // t, -1, -1),
                              low.view(-1, low_len, h))
        # grouped k3 convolution: zero-pad every utterance by one frame, put the three taps side by side
        # (one copy), then one GEMM of depth 3·h per group over the frames of all utterances
        padded = F.pad(z.view(g, -1, t, h), (0, 0, 1, 1)).view(g, -1, h)
        n = padded.shape[1]
        windows = torch.cat([padded[:, 0:n - 2], padded[:, 1:n - 1], padded[:, 2:n]], dim=2)  # (G, N-2, 3h)
        merge_conv, dense = self.merge[0], self.merge[2]
        taps = merge_conv.weight.view(g, h, h, 3).permute(0, 3, 2, 1).reshape(g, 3 * h, h)
        merged = torch.baddbmm(merge_conv.bias.view(g, 1, h), windows, taps)  # padded rows 1 … N-2
        merged = _gelu_(merged).transpose(0, 1).reshape(n - 2, hidden)
        mixed = F.linear(merged, dense.weight.view(hidden, hidden), dense.bias)
        mixed = F.pad(mixed, (0, 0, 1, 1)).view(-1, t + 2, hidden)[:, 1:t + 1]
        return x + mixed


@fast_version_of(ChannelMLP)
class FastChannelMLP(nn.Module):
    """Vanilla MLP-Mixer channel MLP on (B, T, H)."""

    def __init__(self, reference: ChannelMLP):
        super().__init__()
        _adopt_children(self, reference)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, last = self.mlp[0], self.mlp[2]
        hidden = _gelu_(F.linear(_layer_norm(self.norm, x), first.weight.squeeze(-1), first.bias))
        return torch.addmm(x.reshape(-1, x.shape[-1]), hidden.reshape(-1, hidden.shape[-1]),
                           last.weight.squeeze(-1).t()).add_(last.bias).view_as(x)


@fast_version_of(SVMixerBlock)
class FastSVMixerBlock(nn.Module):
    """Token mixing then channel mixing on (B, T, H) frames; same parameters as the reference block."""

    channels_first = False

    def __init__(self, reference: SVMixerBlock):
        super().__init__()
        self.token_mixing = build_fast(reference.token_mixing)
        self.channel_mixing = build_fast(reference.channel_mixing)
        self.train(reference.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("fast SV-Mixer blocks are for inference only (they ignore dropout)")
        chunks = _batch_chunks(x.shape[0], x.shape[1])
        if len(chunks) == 1:
            return self.channel_mixing(self.token_mixing(x))
        out = torch.empty_like(x)
        for chunk in chunks:
            out[chunk] = self.channel_mixing(self.token_mixing(x[chunk]))
        return out
