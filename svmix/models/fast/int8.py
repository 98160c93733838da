"""Int8 SV-Mixer blocks for the CPU (``prepare_for_inference(model, precision="int8")``).

What is quantised: every GEMM of an SV-Mixer block, i.e. the time MLP of token mixing (two
``nn.Linear`` over time), the grouped 1x1 MLPs of multi-scale channel mixing (full and half rate, one
GEMM per group), the grouped k3 merge convolution (one GEMM per group over three shifted frames) and
the dense 1x1 convolution (or the vanilla channel MLP). Each becomes a
``torch.ao.nn.quantized.dynamic.Linear``: int8 weights with one scale per output channel, made once
when the model is switched; activations quantised at run time (uint8, one scale per call, fbgemm's
reduced range as torch's dynamic quantisation uses on x86), int32 accumulation, float32 output.

What stays float32: LayerNorms, GELUs, the depthwise local convolutions of LGM, pooling and
upsampling (element-wise or memory-bound work), and the frontend and ECAPA backend (their fast
float32 modules, ``frontend.py`` and ``ecapa.py``): the frontend's first layer folds a
per-utterance GroupNorm into its weights, so they cannot be packed once.

torch marks its quantised-tensor API (``torch.ao.quantization``) deprecated in favour of torchao;
it is what this torch ships, and its deprecation warning is silenced here. Weights are snapshot when
the block is built: switch again after loading other weights. Blocks are inference-only, and refuse
graph capture (export int8 models with ``svmix-export --format onnx --quantize int8`` instead).
"""
from __future__ import annotations

import warnings
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from svmix.models.encoder import ChannelMLP
from svmix.models.fast.common import DerivedWeights, adopt_children, gelu_, tracing
from svmix.models.fast.svmixer import _depthwise, _layer_norm, _local_mixing
from svmix.models.svmixer import MultiScaleChannelMixing, SVMixerBlock


def int8_linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """y = x·Wᵀ + b for ``weight`` (N, K) as a dynamic-quantised Linear (per-output-channel int8)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    weight = weight.detach().float()
    out_features, in_features = weight.shape
    scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    with warnings.catch_warnings():  # torch's quantised tensors are deprecated (module docstring)
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(weight, scales.double(), torch.zeros(out_features, dtype=torch.long),
                                             0, torch.qint8)
        linear = DynamicLinear(in_features, out_features, dtype=torch.qint8)
        linear.set_weight_bias(qweight, None if bias is None else bias.detach().float())
    return linear


def _grouped_linears(conv: nn.Conv1d) -> List[nn.Module]:
    """A grouped 1x1 Conv1d as one int8 Linear per group."""
    g = conv.groups
    weight = conv.weight[:, :, 0].view(g, conv.out_channels // g, -1)
    bias = conv.bias.view(g, -1)
    return [int8_linear(weight[i], bias[i]) for i in range(g)]


def _merge_linears(conv: nn.Conv1d) -> List[nn.Module]:
    """A grouped k-tap Conv1d (stride 1) as one int8 Linear per group over the k shifted frames, the
    taps concatenated in input order: (h_out, k·h_in)."""
    g, k = conv.groups, conv.kernel_size[0]
    h_out = conv.out_channels // g
    weight = conv.weight.view(g, h_out, -1, k).permute(0, 1, 3, 2).reshape(g, h_out, -1)
    bias = conv.bias.view(g, -1)
    return [int8_linear(weight[i], bias[i]) for i in range(g)]


def _per_group(linears: List[nn.Module], y: torch.Tensor) -> torch.Tensor:
    """(R, G·h_in) → (R, G·h_out), group i through ``linears[i]``."""
    chunks = y.chunk(len(linears), dim=1)
    return torch.cat([linear(chunk.contiguous()) for linear, chunk in zip(linears, chunks)], dim=1)


def _mlp(first: List[nn.Module], last: List[nn.Module], y: torch.Tensor) -> torch.Tensor:
    """Grouped MLP first → GELU → last on (R, H) rows, group by group."""
    chunks = y.chunk(len(first), dim=1)
    return torch.cat([b(gelu_(a(chunk.contiguous()))) for a, b, chunk in zip(first, last, chunks)], dim=1)


class Int8TokenMixing(nn.Module):
    """LGM (parallel / sequential) or vanilla token mixing on (T, B, H), the time MLP in int8."""

    def __init__(self, reference: nn.Module):
        super().__init__()
        adopt_children(self, reference)
        self.mode = getattr(reference, "mode", None)
        mlp = reference.global_mlp if self.mode is not None else reference.mlp
        self._time_mlp = [int8_linear(mlp[0].weight, mlp[0].bias), int8_linear(mlp[2].weight, mlp[2].bias)]
        self.derived = DerivedWeights()

    def _global(self, y: torch.Tensor) -> torch.Tensor:
        """The time MLP of (T, B, H) frames, returned as (T, B, H)."""
        t, b, h = y.shape
        columns = y.permute(1, 2, 0).reshape(b * h, t)
        first, last = self._time_mlp
        return last(gelu_(first(columns))).view(b, h, t).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _layer_norm(self.norm, x)
        if self.mode == "parallel":
            return _local_mixing(self.derived, self.local[0], self.local[2], y, x).add_(self._global(y))
        if self.mode == "sequential":
            return x + self._global(_depthwise(self.local, y))
        return x + self._global(y)


class Int8MultiScaleChannelMixing(nn.Module):
    """MSM + GCM on (T, B, H): x + dense(GELU(merge_k3(full(y) + upsample(low(pool(y)))))), GEMMs in int8."""

    def __init__(self, reference: MultiScaleChannelMixing):
        super().__init__()
        adopt_children(self, reference)
        if reference.low_rate is None:
            self.low_rate = None
        self.seq_len = reference.seq_len
        self._full = (_grouped_linears(reference.full_rate[0]), _grouped_linears(reference.full_rate[2]))
        self._low = None if reference.low_rate is None else \
            (_grouped_linears(reference.low_rate[0]), _grouped_linears(reference.low_rate[2]))
        merge, dense = reference.merge[0], reference.merge[2]
        self._merge = _merge_linears(merge)
        self._merge_pad, self._merge_taps = merge.padding[0], merge.kernel_size[0]
        self._dense = [int8_linear(dense.weight[:, :, 0], dense.bias)]  # a list: not a registered submodule
        low_len = reference.seq_len // 2  # linear upsampling low_len → seq_len as a (T, T/2) matrix
        upsample = F.interpolate(torch.eye(low_len)[None], size=reference.seq_len, mode="linear",
                                 align_corners=False)[0].t()
        self.register_buffer("upsample", upsample.contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, hidden = x.shape
        y = _layer_norm(self.norm, x)
        z = _mlp(*self._full, y.view(t * b, hidden)).view(t, b, hidden)
        if self._low is not None:
            low_len = t // 2
            pooled = (y[0:2 * low_len:2] + y[1:2 * low_len:2]).mul_(0.5)
            low = _mlp(*self._low, pooled.view(low_len * b, hidden))
            z.view(t, b * hidden).addmm_(self.upsample, low.view(low_len, b * hidden))
        pad, k = self._merge_pad, self._merge_taps
        padded = F.pad(z, (0, 0, 0, 0, pad, k - 1 - pad))  # zero frames around the time axis
        groups = len(self._merge)
        size = hidden // groups
        merged = []
        for i, linear in enumerate(self._merge):
            group = padded[..., i * size:(i + 1) * size]
            taps = torch.cat([group[j:j + t] for j in range(k)], dim=2)  # (T, B, k·h)
            merged.append(linear(taps.view(t * b, -1)))
        dense_in = gelu_(torch.cat(merged, dim=1))
        return x + self._dense[0](dense_in).view(t, b, hidden)


class Int8ChannelMLP(nn.Module):
    """Vanilla MLP-Mixer channel MLP on (T, B, H) in int8: x + MLP(LN(x))."""

    def __init__(self, reference: ChannelMLP):
        super().__init__()
        adopt_children(self, reference)
        self._mlp = (_grouped_linears(reference.mlp[0]), _grouped_linears(reference.mlp[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, hidden = x.shape
        return x + _mlp(*self._mlp, _layer_norm(self.norm, x).view(t * b, hidden)).view(t, b, hidden)


INT8_CHANNEL_MIXING = {MultiScaleChannelMixing: Int8MultiScaleChannelMixing, ChannelMLP: Int8ChannelMLP}


class Int8SVMixerBlock(nn.Module):
    """Token mixing then channel mixing on time-major (T, B, H) frames with int8 GEMMs."""

    layout = "TBH"  # what ``FrameEncoder`` feeds it

    def __init__(self, reference: SVMixerBlock):
        super().__init__()
        self.token_mixing = Int8TokenMixing(reference.token_mixing)
        self.channel_mixing = INT8_CHANNEL_MIXING[type(reference.channel_mixing)](reference.channel_mixing)
        self.train(reference.training)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("int8 SV-Mixer blocks are for inference only")
        if tracing():
            raise RuntimeError("int8 SV-Mixer blocks cannot be exported; export the float model "
                               "(svmix-export --format onnx --quantize int8 quantises the ONNX file)")
        if x.device.type != "cpu":
            raise RuntimeError("int8 SV-Mixer blocks run on the CPU only")
        return self.channel_mixing(self.token_mixing(x.contiguous()))
