"""Inference-only SV-Mixer blocks that compute what ``svmix.models.svmixer`` computes, faster on a CPU.

Where the reference loses time (torch.profiler, 2-core CPU): grouped 1×1 and depthwise convolutions
in (B, H, T) run far below GEMM speed; out-of-place GELUs and bias broadcasts are extra passes over
the 4H-wide hiddens; tensors above glibc's 32 MB mmap threshold (a 4H hidden of 16 utterances)
page-fault on every call. The fast blocks instead:

- keep frames (B, T, H) (channels-last) between blocks; every grouped 1×1 conv is one ``bmm`` over
  groups on a strided (G, B·T, H/G) view (no copy), the dense 1×1 one ``addmm``;
- token mixing: LN, one transpose to (B, H, T), where the time MLP's first layer is a single GEMM
  over all utterances and channels and the depthwise convs are native; its second layer writes
  (B, T, H) directly through a transposed ``baddbmm``;
- fold biases into GEMMs as an extra input column of ones (for the 4H-wide outputs), the avg-pool's
  ½ into the first low-rate weights, linear interpolation into a fixed (T × T/2) matrix applied by
  the GEMM that also adds the full-rate path, the k3 merge conv into one GEMM of depth 3·H/G over
  zero-padded frames of all utterances; GELUs run in place;
- run the batch in chunks of ≤ ``CHUNK_ROWS`` frames so intermediates stay below the mmap threshold.

Derived weights (transposed, augmented, folded) are cached and recomputed when a parameter's
version changes. A fast module shares the reference module's children under the same names, so
``state_dict()`` keys and values are unchanged. Fast blocks take and return (B, T, H) (the reference
takes (B, H, T)), ignore dropout and compute no gradients: eval-mode inference only. While
tracing/exporting (torch.jit.trace, ONNX, torch.export) they use out-of-place ops with static shapes
and no chunking, so the batch axis stays dynamic.
``FAST_MODULES`` maps each reference module class to its fast class.
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
    out-of-place ops with static shapes are used, and the batch is not chunked."""
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


def _with_ones(x: torch.Tensor, groups: int, size: int) -> torch.Tensor:
    """(R, groups·size) → (R, groups, size+1) with a column of ones after each group, so a GEMM
    against :func:`_bias_row` weights adds the bias with no separate pass over its (wider) output.
    Sizes are passed as Python ints so that traced graphs keep them static."""
    grouped = x.view(-1, groups, size)
    if _tracing():
        return torch.cat([grouped, torch.ones_like(grouped[..., :1])], dim=-1)
    out = x.new_empty(grouped.shape[0], groups, size + 1)
    out[..., -1] = 1.0
    out[..., :-1] = grouped
    return out


def _bias_row(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(..., K, N) weights and (..., 1, N) bias → (..., K+1, N): the bias as the last input row."""
    return torch.cat([weight, bias], dim=-2)


class _DerivedWeights:
    """Weights derived from parameters (transposed, augmented, folded), recomputed only when a source
    parameter changes (its version counter moves, e.g. after ``load_state_dict``)."""

    def __init__(self):
        self._cache: Dict[str, tuple] = {}

    def get(self, name: str, make: Callable[[], torch.Tensor], *sources: torch.Tensor) -> torch.Tensor:
        if _tracing():
            return make()
        key = tuple((p.data_ptr(), p._version) for p in sources)
        hit = self._cache.get(name)
        if hit is None or hit[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # usable in and out of inference mode
                hit = self._cache[name] = (key, make().contiguous())
        return hit[1]


def _token_mixing(derived: _DerivedWeights, x: torch.Tensor, norm: nn.LayerNorm, mlp: nn.Sequential,
                  local: Optional[Callable[[torch.Tensor], torch.Tensor]], sequential: bool) -> torch.Tensor:
    """x + [local(y) +] MLP_time(y), or x + MLP_time(local(y)) when ``sequential``, with y = LN(x).

    The normalised frames are transposed once to (B, H, T): there the first time GEMM runs over all
    utterances and channels at once and the depthwise convolutions are native; the second GEMM
    writes (B, T, H) directly."""
    first, last = mlp[0], mlp[2]
    hidden_size, t = norm.normalized_shape[0], first.in_features
    y = _layer_norm(norm, x).transpose(1, 2).contiguous()  # (B, H, T)
    if sequential:
        y = local(y)
    w1 = derived.get("time1", lambda: _bias_row(first.weight.t(), first.bias[None]), first.weight, first.bias)
    hidden = _gelu_(torch.matmul(_with_ones(y.view(-1, t), 1, t).view(-1, hidden_size, t + 1), w1))  # (B, H, eT)
    if local is None or sequential:
        acc = x + last.bias[:, None]
    else:
        acc = x + local(y).add_(last.bias).transpose(1, 2)
    if _tracing():
        return acc + torch.matmul(last.weight, hidden.transpose(1, 2))
    return acc.baddbmm_(last.weight.expand(x.shape[0], -1, -1), hidden.transpose(1, 2))


@fast_version_of(LocalGlobalMixing)
class FastLocalGlobalMixing(nn.Module):
    """x + local(LN x) + global(LN x) (parallel) or x + global(local(LN x)) (sequential), (B, T, H)."""

    def __init__(self, reference: LocalGlobalMixing):
        super().__init__()
        _adopt_children(self, reference)
        self.mode = reference.mode
        self.derived = _DerivedWeights()

    def _local(self, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "sequential":
            return _conv(self.local, y)
        return _conv(self.local[2], _gelu_(_conv(self.local[0], y)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _token_mixing(self.derived, x, self.norm, self.global_mlp, self._local, self.mode == "sequential")


@fast_version_of(TokenMixing)
class FastTokenMixing(nn.Module):
    """Vanilla MLP-Mixer token mixing on (B, T, H)."""

    def __init__(self, reference: TokenMixing):
        super().__init__()
        _adopt_children(self, reference)
        self.derived = _DerivedWeights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _token_mixing(self.derived, x, self.norm, self.mlp, None, False)


def _grouped(conv: nn.Conv1d):
    """A grouped 1×1 Conv1d as (G, in/G, out/G) weights (a transposed view) and (G, 1, out/G) bias."""
    g = conv.groups
    out_ch, in_per_group = conv.weight.shape[:2]
    weight = conv.weight.view(g, out_ch // g, in_per_group).transpose(1, 2)
    return weight, conv.bias.view(g, 1, out_ch // g)


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
        self.derived = _DerivedWeights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, hidden = self.seq_len, self.norm.normalized_shape[0]
        g, h = self.groups, hidden // self.groups
        x_norm = _layer_norm(self.norm, x)
        full1, full2 = self.full_rate[0], self.full_rate[2]
        w1 = self.derived.get("full1", lambda: _bias_row(*_grouped(full1)), full1.weight, full1.bias)
        w2 = self.derived.get("full2", lambda: _grouped(full2)[0], full2.weight)
        b2 = _grouped(full2)[1]
        y = _with_ones(x_norm.view(-1, hidden), g, h).transpose(0, 1)  # (G, B·T, h+1)
        z = torch.baddbmm(b2, _gelu_(torch.bmm(y, w1)), w2)  # (G, B·T, h)
        if self.low_rate is not None:
            low_len = t // 2
            low1, low2 = self.low_rate[0], self.low_rate[2]
            pooled = x_norm[:, 0:2 * low_len:2] + x_norm[:, 1:2 * low_len:2]
            # the avg-pool's ½ is folded into the first low-rate weights
            lw1 = self.derived.get("low1", lambda: _bias_row(_grouped(low1)[0] * 0.5, _grouped(low1)[1]),
                                   low1.weight, low1.bias)
            lw2 = self.derived.get("low2", lambda: _grouped(low2)[0], low2.weight)
            lb2 = _grouped(low2)[1]
            low = torch.baddbmm(lb2, _gelu_(torch.bmm(_with_ones(pooled.view(-1, hidden), g, h).transpose(0, 1), lw1)),
                                lw2)
            low = low.view(-1, low_len, h)
        merge_conv, dense = self.merge[0], self.merge[2]
        if _tracing():  # the reference grouped convolution keeps every traced shape static
            if self.low_rate is not None:
                z = z.view(-1, t, h) + torch.matmul(self.upsample, low)
            merged = _gelu_(_conv(merge_conv, z.view(g, -1, t, h).permute(1, 0, 3, 2).reshape(-1, hidden, t)))
            return x + F.linear(merged.transpose(1, 2), dense.weight.view(hidden, hidden), dense.bias)

        # z = full + upsampled low, written into frames zero-padded by one on each side of every utterance
        padded = z.new_empty(g, z.shape[1] // t, t + 2, h)
        padded[:, :, 0] = 0.0
        padded[:, :, -1] = 0.0
        inner = padded[:, :, 1:t + 1].flatten(0, 1)  # (G·B, T, h) view
        if self.low_rate is not None:
            torch.baddbmm(z.view(-1, t, h), self.upsample.expand(low.shape[0], -1, -1), low, out=inner)
        else:
            inner.copy_(z.view(-1, t, h))
        # grouped k3 convolution: the three taps side by side (one copy), then one GEMM of depth 3·h
        # per group over the padded frames of all utterances (the rows between utterances are discarded)
        padded = padded.view(g, -1, h)
        windows = torch.cat([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], dim=2)  # (G, N-2, 3h)
        taps = self.derived.get("merge", lambda: merge_conv.weight.view(g, h, h, 3).permute(0, 3, 2, 1)
                                .reshape(g, 3 * h, h), merge_conv.weight)
        merged = torch.baddbmm(merge_conv.bias.view(g, 1, h), windows, taps)  # padded rows 1 … N-2
        merged = _gelu_(merged).transpose(0, 1).reshape(-1, hidden)
        mixed = x.new_empty(x.shape[0], t + 2, hidden)
        torch.addmm(dense.bias, merged, dense.weight.view(hidden, hidden).t(), out=mixed.view(-1, hidden)[1:-1])
        return x + mixed[:, 1:t + 1]


@fast_version_of(ChannelMLP)
class FastChannelMLP(nn.Module):
    """Vanilla MLP-Mixer channel MLP on (B, T, H)."""

    def __init__(self, reference: ChannelMLP):
        super().__init__()
        _adopt_children(self, reference)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, last = self.mlp[0], self.mlp[2]
        hidden = _gelu_(F.linear(_layer_norm(self.norm, x), first.weight.squeeze(-1), first.bias))
        return x + F.linear(hidden, last.weight.squeeze(-1), last.bias)


@fast_version_of(SVMixerBlock)
class FastSVMixerBlock(nn.Module):
    """Token mixing then channel mixing on (B, T, H) frames; same parameters as the reference block."""

    channels_first = False

    def __init__(self, reference: SVMixerBlock):
        super().__init__()
        self.token_mixing = build_fast(reference.token_mixing)
        self.channel_mixing = build_fast(reference.channel_mixing)
        self.train(reference.training)

    @torch.no_grad()  # inference only: no gradients (in-place and out= ops)
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

