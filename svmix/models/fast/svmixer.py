"""Fast SV-Mixer blocks (``svmix.models.svmixer``; the fast path is described in the package docstring).

A reference block spends its time (torch.profiler, 2-core CPU) in grouped 1×1 and depthwise
convolutions that run far below GEMM speed, in transposes, in passes over 4H-wide hiddens that no
longer sit in cache, and in page faults of large fresh tensors. A fast block instead:

- works on **time-major** frames (T, B, H) (the encoder converts once, see ``FrameEncoder``): the
  time MLP of token mixing is then two dense GEMMs over all utterances and channels at once,
  (4T × T)·(T × B·H) and (T × 4T)·(4T × B·H), with no transpose; a time shift of one frame is a
  shift of B rows, so the merge k3 convolution is three accumulating GEMMs on shifted views of one
  zero-padded buffer;
- runs every grouped 1×1 convolution as a batched GEMM over groups on strided views, biases folded in
  as an input column (or row) of ones, the avg-pool's ½ folded into the half-rate weights;
- processes the 4H-wide hiddens in tiles (``HIDDEN_TILE`` elements of whole groups, ``COLUMN_TILE``
  columns of the time MLP) so each is activated (in-place exact GELU) and consumed while still in cache;
- keeps its scratch buffers in the per-thread workspace (``common.py``), reused across calls and
  blocks, whose constant parts (ones, zero padding) are written once; all MLP hiddens share one
  region, so its memory is still in cache when the next MLP writes it; results never alias it;
- adds the channel-mixing result to the token-mixing output in place (no new block output);
- on a CPU, runs the element-wise chains as the fused C++ kernels (``kernels.py``), one pass each:
  LayerNorm written straight into the GEMM input buffers, the whole LGM local branch (depthwise
  conv → GELU → depthwise conv → residual), full-rate path + linear upsampling of the half-rate path
  + biases, and GELU + transpose before the dense layer. Without them (switched off, not built,
  another device) the same steps run as PyTorch ops: the upsampling as one (T × T/2) GEMM per group,
  the depthwise convs as oneDNN convolutions.

Derived weights (transposed, augmented, folded) are cached (``DerivedWeights``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from svmix.models.encoder import ChannelMLP
from svmix.models.fast import kernels as cpu_kernels
from svmix.models.fast.common import WORKSPACE, DerivedWeights, adopt_children, gelu_, tracing
from svmix.models.svmixer import MultiScaleChannelMixing, SVMixerBlock

HIDDEN_TILE = 1 << 21  # elements of a grouped channel MLP's hidden processed at once (8 MB in float32)
COLUMN_TILE = 4096     # (utterance, channel) columns per tile of the time MLP (its 4T hidden: 9.8 MB at T=149)
HIDDEN_SCRATCH = "mlp_hidden"  # the one workspace region all MLP hiddens use in turn (it stays in cache)


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _layer_norm_into(norm: nn.LayerNorm, x: torch.Tensor, out: torch.Tensor,
                     pooled: Optional[torch.Tensor] = None) -> torch.Tensor:
    """LN(x) of (T, B, H) frames written into ``out`` (T·B, G, H/G), typically a strided view into a
    GEMM's input buffer; with ``pooled`` (T/2·B, G, H/G), also the sums of frame pairs (2l, 2l+1)."""
    t, b = x.shape[:2]
    rows, groups, size = out.shape
    kernels = cpu_kernels.usable(x)
    if kernels is not None:
        kernels.layer_norm_into(x.view(rows, -1), norm.weight, norm.bias, norm.eps, out, pooled, b)
        return out
    stats = WORKSPACE.get("layer_norm_stats", (2, rows, 1, 1), x)
    torch.ops.aten.native_layer_norm.out(x.view(rows, groups, size), [groups, size], norm.weight.view(groups, size),
                                         norm.bias.view(groups, size), norm.eps, out0=out, out1=stats[0], out2=stats[1])
    if pooled is not None:
        frames = out.view(t, b, groups, size)
        torch.add(frames[0:t - t % 2:2], frames[1:t:2], out=pooled.view(t // 2, b, groups, size))
    return out


def _tiles(size: int, tile: int):
    for start in range(0, size, tile):
        yield start, min(size, start + tile)


def _ones_last(buffer: torch.Tensor) -> None:
    """Initialise a (..., K+1) input buffer whose last column multiplies a bias row."""
    buffer[..., -1] = 1.0


def _with_bias(weight: torch.Tensor, bias: torch.Tensor, dim: int) -> torch.Tensor:
    """Append ``bias`` to ``weight`` along ``dim`` (the input axis), to be met by a column/row of ones."""
    return torch.cat([weight, bias.unsqueeze(dim)], dim=dim)


def _channels_last(y: torch.Tensor) -> torch.Tensor:
    """Time-major (T, B, H) frames seen as a channels-last (1, H, T, B) image (no copy)."""
    t, b, h = y.shape
    return y.view(1, t, b, h).permute(0, 3, 1, 2)


def _time_major(image: torch.Tensor) -> torch.Tensor:
    _, h, t, b = image.shape
    return image.permute(0, 2, 3, 1).reshape(t, b, h)


def _depthwise(conv: nn.Conv1d, y: torch.Tensor) -> torch.Tensor:
    """Depthwise Conv1d over time on time-major (T, B, H) frames: a (k × 1) conv2d on the same
    memory seen as channels-last (1, H, T, B), so no transpose is needed."""
    h, k = conv.out_channels, conv.kernel_size[0]
    return _time_major(F.conv2d(_channels_last(y), conv.weight.view(h, 1, k, 1), conv.bias,
                                padding=(conv.padding[0], 0), groups=h))


def _local_mixing(derived: DerivedWeights, first: nn.Conv1d, second: nn.Conv1d, y: torch.Tensor,
                  x: torch.Tensor) -> torch.Tensor:
    """x + second(GELU(first(y))) for depthwise convs on (T, B, H): one fused pass with the CPU
    kernels, else three PyTorch passes (measured faster than oneDNN's fused GELU/sum epilogues)."""
    kernels = cpu_kernels.usable(x)
    if kernels is None:
        return _depthwise(second, gelu_(_depthwise(first, y))).add_(x)
    taps = [derived.get(name, lambda conv=conv: conv.weight.view(conv.out_channels, -1).t(), conv.weight)
            for name, conv in (("local_taps1", first), ("local_taps2", second))]
    return kernels.local_mixing(x, y, taps[0], first.bias, taps[1], second.bias)


class _FastModule(nn.Module):
    """Holds a reference module's children under their own names (shared parameters, same
    ``state_dict()`` keys) and can still run the reference computation (``reference_forward``)."""

    def __init__(self, reference: nn.Module):
        super().__init__()
        adopt_children(self, reference)
        self._reference_forward = type(reference).forward
        self.mode = getattr(reference, "mode", None)
        self.derived = DerivedWeights()

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reference module's forward on (B, H, T) frames."""
        return self._reference_forward(self, x)


class FastTokenMixing(_FastModule):
    """LGM (parallel: x + local(y) + global(y); sequential: x + global(k3(y))) or the vanilla token
    MLP (x + global(y)), y = LN(x), on (T, B, H); the time MLP runs in column tiles."""

    def __init__(self, reference: nn.Module):
        super().__init__(reference)
        mlp = self.global_mlp if self.mode is not None else self.mlp
        self._time_linears = (mlp[0], mlp[2])  # plain tuples: bound once, not registered twice
        self._local_convs = (self.local[0], self.local[2]) if self.mode == "parallel" else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.mode
        first, last = self._time_linears
        t, b, h = x.shape
        columns = b * h
        inputs = WORKSPACE.get("time_in", (t + 1, columns), x, lambda buf: buf[-1].fill_(1.0))
        y = inputs[:t].view(t, b, h)
        if mode == "sequential":
            y.copy_(_depthwise(self.local, _layer_norm(self.norm, x)))
        else:
            _layer_norm_into(self.norm, x, y.view(t * b, 1, h))
        if mode == "parallel":
            acc = _local_mixing(self.derived, *self._local_convs, y, x)
        else:
            acc = x.clone()
        w1 = self.derived.get("w1", lambda: _with_bias(first.weight, first.bias, 1), first.weight, first.bias)
        w2 = self.derived.get("w2", lambda: _with_bias(last.weight, last.bias, 1), last.weight, last.bias)
        expanded = w1.shape[0]
        acc_flat = acc.view(t, columns)
        for start, stop in _tiles(columns, COLUMN_TILE):
            hidden = WORKSPACE.scratch(HIDDEN_SCRATCH, (expanded + 1, stop - start), x)
            hidden[-1].fill_(1.0)
            torch.mm(w1, inputs[:, start:stop], out=hidden[:expanded])
            gelu_(hidden[:expanded])
            acc_flat[:, start:stop].addmm_(w2, hidden)
        return acc


def _grouped(conv: nn.Conv1d, scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A grouped 1×1 Conv1d as (G, in/G, out/G) weights (times ``scale``) and (G, out/G) bias."""
    g = conv.groups
    out_ch, in_per_group = conv.weight.shape[:2]
    weight = conv.weight.view(g, out_ch // g, in_per_group).transpose(1, 2) * scale
    return weight, conv.bias.view(g, out_ch // g)


class _GroupedMLP:
    """A reference ``GroupedMLP`` (1×1 grouped conv → GELU → 1×1 grouped conv), without its output
    bias (``bias``, (G, 1, h), for the caller to add), as batched GEMMs over tiles of whole groups (or
    of rows, when one group's hidden alone is larger than ``HIDDEN_TILE``), so that each tile's
    output is a contiguous block (one batched GEMM call, no per-group loop)."""

    def __init__(self, derived: DerivedWeights, name: str, mlp: nn.Sequential, input_scale: float = 1.0):
        self.derived, self.name, self.input_scale = derived, name, input_scale
        self.first, self.last = mlp[0], mlp[2]
        self.groups = self.first.groups

    @property
    def bias(self) -> torch.Tensor:
        """The output bias as (G, 1, h)."""
        return self.last.bias.view(self.groups, 1, -1)

    def __call__(self, inputs: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> None:
        """``inputs`` (R, G, h+1) with ones in the last column → ``out`` (G, R, h), contiguous:
        written, or added to when ``accumulate``."""
        first, last = self.first, self.last
        w1 = self.derived.get(self.name + "1", lambda: _with_bias(*_grouped(first, self.input_scale), 1),
                              first.weight, first.bias)  # (G, h+1, eh)
        w2 = self.derived.get(self.name + "2", lambda: _grouped(last)[0], last.weight)  # (G, eh, h)
        rows, expanded = inputs.shape[0], w1.shape[-1]
        # a power of two: an odd batch of GEMMs leaves one of two threads idle at the end
        groups_per_tile = 1 << max(0, (HIDDEN_TILE // (rows * expanded)).bit_length() - 1)
        row_tile = rows if self.groups > 1 else max(1, HIDDEN_TILE // expanded)
        for g0, g1 in _tiles(self.groups, groups_per_tile):
            for r0, r1 in _tiles(rows, row_tile):
                hidden = WORKSPACE.scratch(HIDDEN_SCRATCH, (g1 - g0, r1 - r0, expanded), inputs)
                torch.bmm(inputs[r0:r1, g0:g1].transpose(0, 1), w1[g0:g1], out=hidden)
                gelu_(hidden)
                if accumulate:
                    out[g0:g1, r0:r1].baddbmm_(hidden, w2[g0:g1])
                else:
                    torch.bmm(hidden, w2[g0:g1], out=out[g0:g1, r0:r1])


def _grouped_inputs(name: str, norm: nn.LayerNorm, x: torch.Tensor, groups: int,
                    pooled: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(R, G, h+1) workspace holding LN(x) group by group (R = all frames), with a column of ones;
    see ``_layer_norm_into`` for ``pooled``."""
    hidden = x.shape[-1]
    inputs = WORKSPACE.get(name, (x.numel() // hidden, groups, hidden // groups + 1), x, _ones_last)
    _layer_norm_into(norm, x, inputs[..., :-1], pooled)
    return inputs


def _gelu_transpose_into(src: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` (R, G, h) = GELU(``src`` (G, R, h))."""
    kernels = cpu_kernels.usable(src)
    if kernels is not None:
        kernels.gelu_transpose_into(src, out)
    else:
        out.copy_(gelu_(src).transpose(0, 1))


def _zero_frames_and_ones(buffer: torch.Tensor) -> None:
    """Initialise the merge input (G, (T+2)·B, h+1): zero frames, and a ones column that meets the
    bias row of the centre tap (zero in the other taps, so the zero frames add nothing)."""
    buffer.zero_()
    buffer[..., -1] = 1.0


def _merge_taps(conv: nn.Conv1d, groups: int) -> torch.Tensor:
    """A grouped k3 Conv1d as (3, G, h+1, h) tap weights, the bias as the last input row of the centre tap."""
    h = conv.out_channels // groups
    taps = conv.weight.view(groups, h, h, 3).permute(3, 0, 2, 1)  # (3, G, in, out)
    bias_rows = torch.zeros(3, groups, 1, h, dtype=taps.dtype, device=taps.device)
    bias_rows[1, :, 0] = conv.bias.view(groups, h)
    return torch.cat([taps, bias_rows], dim=2)


class FastMultiScaleChannelMixing(_FastModule):
    """MSM + GCM on (T, B, H): x + dense(GELU(merge_k3(full(y) + upsample(low(pool(y)))))), y = LN(x)."""

    def __init__(self, reference: MultiScaleChannelMixing):
        super().__init__(reference)
        self.seq_len = reference.seq_len
        if reference.low_rate is None:
            self.low_rate = None
        self._full = _GroupedMLP(self.derived, "full", self.full_rate)
        self._low = _GroupedMLP(self.derived, "low", self.low_rate, 0.5) if self.low_rate is not None else None
        self._merge_convs = (self.merge[0], self.merge[2])
        low_len = reference.seq_len // 2
        # linear interpolation low_len → seq_len (align_corners=False) as a fixed (T, T/2) matrix, one
        # copy per group (a batched GEMM over groups runs as one call only on a materialised batch)
        upsample = F.interpolate(torch.eye(low_len)[None], size=reference.seq_len, mode="linear",
                                 align_corners=False)[0].t()
        self.register_buffer("upsample", upsample.expand(reference.full_rate[0].groups, -1, -1).contiguous(),
                             persistent=False)
        # the same interpolation as (T, 2) source frames and weights, for the fused CPU kernel
        weights, index = upsample.topk(2, dim=1)
        self.register_buffer("upsample_index", index, persistent=False)
        self.register_buffer("upsample_weight", weights, persistent=False)

    def forward(self, x: torch.Tensor, residual_in_place: bool = False) -> torch.Tensor:
        """``residual_in_place``: add the mixing result to ``x`` itself (which the caller owns)."""
        t, b, hidden = x.shape
        groups = self._full.groups
        h, rows = hidden // groups, t * b
        low_len = t // 2
        # y = LN(x) and, for the half-rate path, the sums of frame pairs (the pool's ½ is in the weights)
        low_in = WORKSPACE.get("low_in", (low_len * b, groups, h + 1), x, _ones_last) if self._low is not None else None
        full_in = _grouped_inputs("full_in", self.norm, x, groups, None if low_in is None else low_in[..., :h])
        # z = full(y) + upsample(low(pool(y))), written between zero frames: (G, (T+2)·B, h)
        padded = WORKSPACE.get("merge_in", (groups, (t + 2) * b, h + 1), x, _zero_frames_and_ones)
        z = WORKSPACE.get("full_out", (groups, rows, h), x)
        self._full(full_in, z)
        bias = self._full.bias
        kernels = None
        if self._low is not None:
            low = WORKSPACE.get("low_out", (groups, low_len * b, h), x)
            self._low(low_in, low)
            bias = bias + self._low.bias  # interpolation weights sum to 1: upsample(low + c) = upsample(low) + c
            kernels = cpu_kernels.usable(x)
            if kernels is not None:
                kernels.upsample_add_into(z, low, self.upsample_index, self.upsample_weight, bias,
                                          padded[:, b:b + rows, :h])
            else:
                z.view(groups, t, b * h).baddbmm_(self.upsample, low.view(groups, low_len, b * h))
        if kernels is None:
            torch.add(z, bias, out=padded[:, b:b + rows, :h])
        # merge: grouped k3 conv over time = three GEMMs on views shifted by one frame (B rows)
        conv, dense = self._merge_convs
        taps = self.derived.get("taps", lambda: _merge_taps(conv, groups), conv.weight, conv.bias)
        merged = WORKSPACE.get("merged", (groups, rows, h), x)
        torch.bmm(padded[:, :rows], taps[0], out=merged)
        merged.baddbmm_(padded[:, b:b + rows], taps[1])
        merged.baddbmm_(padded[:, 2 * b:2 * b + rows], taps[2])
        # dense 1×1 conv on channels-last frames, its bias met by a column of ones
        dense_in = WORKSPACE.get("dense_in", (rows, hidden + 1), x, _ones_last)
        _gelu_transpose_into(merged, dense_in[:, :hidden].view(rows, groups, h))
        dense_t = self.derived.get("dense", lambda: _with_bias(dense.weight.view(hidden, hidden).t(), dense.bias, 0),
                                   dense.weight, dense.bias)
        out = x if residual_in_place else x.clone()
        out.view(rows, hidden).addmm_(dense_in, dense_t)
        return out


class FastChannelMLP(_FastModule):
    """Vanilla MLP-Mixer channel MLP on (T, B, H): x + MLP(LN(x)), a one-group tiled MLP."""

    def __init__(self, reference: ChannelMLP):
        super().__init__(reference)
        self._mlp = _GroupedMLP(self.derived, "mlp", self.mlp)

    def forward(self, x: torch.Tensor, residual_in_place: bool = False) -> torch.Tensor:
        hidden = x.shape[-1]
        rows = x.numel() // hidden
        inputs = _grouped_inputs("mlp_in", self.norm, x, 1)
        mlp = self._mlp
        out = x.add_(mlp.bias[0, 0]) if residual_in_place else x + mlp.bias[0, 0]
        mlp(inputs, out.view(1, rows, hidden), accumulate=True)
        return out


FAST_CHANNEL_MIXING = {MultiScaleChannelMixing: FastMultiScaleChannelMixing, ChannelMLP: FastChannelMLP}


class FastSVMixerBlock(nn.Module):
    """Token mixing then channel mixing on time-major (T, B, H) frames; the reference block's parameters."""

    layout = "TBH"  # what ``FrameEncoder`` feeds it

    def __init__(self, reference: SVMixerBlock):
        super().__init__()
        self.token_mixing = FastTokenMixing(reference.token_mixing)
        self.channel_mixing = FAST_CHANNEL_MIXING[type(reference.channel_mixing)](reference.channel_mixing)
        self.train(reference.training)

    @torch.no_grad()  # inference only: in-place and out= ops
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("fast SV-Mixer blocks are for inference only (they ignore dropout)")
        if tracing():
            mixed = self.token_mixing.reference_forward(x.permute(1, 2, 0))  # on (B, H, T)
            return self.channel_mixing.reference_forward(mixed).permute(2, 0, 1)
        return self.channel_mixing(self.token_mixing(x.contiguous()), residual_in_place=True)
