"""Fast ``ConvFrontend`` (the fast path is described in the package docstring): the same (B, T, C) features.

Layer 0 (conv K=10 → GroupNorm(C, C) → GELU) with the GroupNorm folded into the conv. The conv output
of channel c at frame t is w_c·x_t, x_t the K-sample window at t. Over an utterance its mean is
w_c·m and its (biased) variance w_cᵀ Σ w_c, with m and Σ the mean and K×K covariance of the windows
(computed per utterance in float64 on the mean-removed waveform: a constant offset leaves the
normalised output unchanged and removing it avoids cancellation). Hence, with σ_c = sqrt(var_c + eps),

    GroupNorm(conv(x))_{c,t} = x_t · (w_c γ_c / σ_c) + (β_c − (w_c·m) γ_c / σ_c),

one GEMM of the (T0, K) windows and a column of ones by per-utterance (K+1, C) weights (the folded
taps and the bias row), then an in-place GELU: GroupNorm's passes over the (C × T0) conv output and
the out-of-place GELU are gone.

Layers 1… as GEMMs on channels-last (T, C) frames: the k consecutive input frames of an output frame
are contiguous, so a stride-s conv is a GEMM of the windows view ``(T_out, n·C)`` with row stride
``s·C`` by the weight reshaped to (n·C, C_out). BLAS needs the row stride ≥ the row width, so the taps
go in groups of n ≤ s (k=3, s=2: one GEMM over taps 0–1, one accumulating tap 2); no copy is made.
On a 2-core CPU these 2-D GEMMs beat mkldnn's conv1d on every layer.

After folding, the whole stack is local in time, so it runs per utterance and in chunks of output
frames (inputs overlapping by the receptive field minus the hop) whose intermediates stay below
glibc's 32 MB mmap threshold: the reference's batch-wide intermediates are fresh allocations that
page-fault on every call (~400k minor faults for 10 × 3 s), which costs more than layer 0 itself.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from svmix.models.fast.common import DerivedWeights, adopt_children, gelu_, tracing
from svmix.models.frontend import ConvFrontend, hop_length, num_frames, receptive_field

# Most elements of the largest intermediate of one chunk (28 MB in float32: below the mmap threshold).
CHUNK_ELEMENTS = 7 * 2 ** 20


class FastConvFrontend(nn.Module):
    """``ConvFrontend`` on the fast path: (B, samples) waveforms → (B, T, C) features."""

    def __init__(self, reference: ConvFrontend):
        super().__init__()
        adopt_children(self, reference)
        self.kernels, self.strides = reference.kernels, reference.strides
        self.out_channels = reference.out_channels
        self.hop, self.receptive_field = hop_length(self.strides), receptive_field(self.kernels, self.strides)
        channels = [layer.conv.out_channels for layer in self.conv_layers]
        # frames of layer l per output frame × its channels: elements per output frame of a chunk
        per_frame = max(hop_length(self.strides[i + 1:]) * c for i, c in enumerate(channels))
        self.max_chunk_frames = max(1, CHUNK_ELEMENTS // per_frame)
        self.derived = DerivedWeights()

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform → (B, T, C) features."""
        if tracing():
            return ConvFrontend.forward(self, wav)
        if wav.dim() != 2:
            raise ValueError(f"expected a (batch, samples) waveform, got shape {tuple(wav.shape)}")
        frames = num_frames(wav.shape[1], self.kernels, self.strides)
        if frames < 1:
            raise ValueError(f"{wav.shape[1]} samples is shorter than the frontend's receptive field "
                             f"({self.receptive_field})")
        weights = [self._layer_weight(i) for i in range(1, len(self.conv_layers))]
        dtype = self.conv_layers[0].conv.weight.dtype
        out = torch.empty(wav.shape[0], frames, self.out_channels, dtype=dtype, device=wav.device)
        n_chunks = math.ceil(frames / self.max_chunk_frames)
        size = math.ceil(frames / n_chunks)
        for b in range(wav.shape[0]):
            x, w0 = self._fold_layer0(wav[b])
            for f0 in range(0, frames, size):
                f1 = min(frames, f0 + size)
                segment = x[f0 * self.hop:(f1 - 1) * self.hop + self.receptive_field]
                self._chunk(segment, w0, weights, out[b, f0:f1])
        return out

    def _layer_weight(self, i: int) -> torch.Tensor:
        """Conv weight (C_out, C_in, k) of layer ``i`` as (k, C_in, C_out), cached."""
        weight = self.conv_layers[i].conv.weight
        return self.derived.get(f"conv{i}", lambda: weight.permute(2, 1, 0), weight)

    def _fold_layer0(self, wav: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One utterance → (waveform, (K+1, C) weights: K taps and the bias) of layer 0 with its
        GroupNorm folded in (module docstring); the waveform is mean-removed when there is a GroupNorm."""
        conv, norm = self.conv_layers[0].conv, self.conv_layers[0].layer_norm
        k, s = conv.kernel_size[0], conv.stride[0]
        weight = conv.weight.view(conv.out_channels, k)
        if norm is None:  # a plain conv: nothing to fold, zero bias, and the offset matters
            taps = self.derived.get("conv0", lambda: torch.cat([weight.t(), weight.new_zeros(1, weight.shape[0])]),
                                    weight)
            return wav.to(weight.dtype).contiguous(), taps
        x = wav.double()
        x = (x - x.mean()).contiguous()
        centred = x.to(weight.dtype)
        windows = x.as_strided(((x.numel() - k) // s + 1, k), (s, 1))
        mean = windows.mean(0)
        cov = torch.addmm(torch.outer(mean, mean), windows.t(), windows, beta=-1, alpha=1 / windows.shape[0])
        w = weight.double()
        var = ((w @ cov) * w).sum(1).clamp_min_(0)
        scale = norm.weight.double() / torch.sqrt(var + norm.eps)
        bias = norm.bias.double() - (w @ mean) * scale
        return centred, torch.cat([(w * scale[:, None]).t(), bias[None]]).to(weight.dtype)

    def _chunk(self, segment: torch.Tensor, w0: torch.Tensor, weights, out: torch.Tensor) -> None:
        """Frontend over one contiguous waveform segment, written into ``out`` (T_chunk, C)."""
        last = len(self.conv_layers) - 1
        k, s = self.kernels[0], self.strides[0]
        # The (T0, K) windows overlap (row stride s < K), which BLAS cannot take: copy them (tiny),
        # next to a column of ones that meets the bias row of w0 (addmm would first broadcast the
        # bias over the whole (T0, C) output: one more pass).
        t0 = (segment.numel() - k) // s + 1
        windows = segment.new_ones(t0, k + 1)
        windows[:, :k] = segment.as_strided((t0, k), (s, 1))
        y = gelu_(torch.mm(windows, w0, out=out if last == 0 else None))
        for i, weight in enumerate(weights, start=1):
            y = _conv_gemm(y, weight, self.strides[i], out if i == last else None)


def _conv_gemm(y: torch.Tensor, weight: torch.Tensor, stride: int, out: Optional[torch.Tensor]) -> torch.Tensor:
    """GELU(conv1d) of channels-last frames y (T, C_in) with ``weight`` (k, C_in, C_out): GEMMs over
    strided windows views, taps in groups of ≤ stride so every view is a valid BLAS operand."""
    k, c_in, c_out = weight.shape
    t_in = y.shape[0]
    t_out = (t_in - k) // stride + 1
    for j in range(0, k, stride):
        n = min(stride, k - j)
        windows = y.as_strided((t_out, n * c_in), (stride * c_in, 1), y.storage_offset() + j * c_in)
        taps = weight[j:j + n].view(n * c_in, c_out)
        if j == 0:
            out = torch.mm(windows, taps, out=out)
        else:
            out.addmm_(windows, taps)
    return gelu_(out)
