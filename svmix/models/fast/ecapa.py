"""Fast ``ECAPABackend`` (the fast path is described in the package docstring): the same (B, D) embeddings.

The reference runs channels-first (B, C, T) Conv1d layers: the k5 input conv below GEMM speed, the
dilated Res2Net k3 convs through PyTorch's slow non-oneDNN path (plus per-split copies and a
``torch.cat``), and the attention's 1×1 conv over a 3C-wide context. The fast backend instead:

- works channels-last on (B·T, C) frames, so every 1×1 conv is one GEMM over all frames
  (``addmm`` with the transposed weight, cached);
- runs the k5 input conv and the dilated k3 convs as k accumulating GEMMs over time-shifted views of
  one flat buffer of zero-padded utterances (B, T + 2p, C): output row b·(T+2p) + t is frame t of
  utterance b, the 2p rows between utterances are computed and dropped (BLAS needs a row stride ≥ the
  row width, so the overlapping windows of all taps cannot be one GEMM operand); all Res2Net convs
  share one buffer with as many zero frames as the widest needs;
- applies ReLU → eval BatchNorm (a per-channel scale and shift) in place, the ReLU of a k-tap conv
  while copying its valid rows into place;
- keeps the Res2Net splits as column slices of the (B·T, C) 1×1 conv output, each split overwritten
  by its conv's output (the input of the block's output conv, no ``torch.cat``), and writes each
  block's output into its column slice of the input of the 1×1 conv after the blocks;
- splits the attention's first 1×1 conv over [x, mean, std] into x·W_x plus a per-utterance term
  [mean, std]·W_ms broadcast over time, so the 3C-wide context is never built; leaves the softmax over
  time unnormalised (the weighted sums are divided by the total instead) and drops the last conv's
  bias, constant over time, which the softmax cancels;
- computes variances as a mean then a sum of centred squares: ``torch.var_mean`` is several times slower.

Scratch buffers live in the per-thread workspace (``common.py``); derived weights are cached until
a parameter or a BatchNorm statistic changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svmix.models.ecapa import ECAPABackend, Res2NetSEBlock
from svmix.models.fast.common import WORKSPACE, DerivedWeights, adopt_children, tracing


def _zero(buffer: torch.Tensor) -> None:
    buffer.zero_()


def _bn_scale_shift(bn: nn.BatchNorm1d) -> torch.Tensor:
    """Eval BatchNorm as (2, C): rows scale and shift."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return torch.stack([scale, bn.bias - bn.running_mean * scale])


def _affine_(x: torch.Tensor, scale_shift: torch.Tensor) -> torch.Tensor:
    """x·scale + shift over the last axis, in place (x may be a strided view)."""
    return torch.addcmul(scale_shift[1], x, scale_shift[0], out=x)


def _conv_taps(padded: torch.Tensor, pad: int, taps: torch.Tensor, bias: torch.Tensor, dilation: int) -> torch.Tensor:
    """Conv1d ('same' padding) with ``taps`` (k, C_in, C_out) over channels-last utterances ``padded``
    (B, T + 2·pad, C_in) between zero frames (pad ≥ the conv's padding) → (B, T, C_out), a view of a
    workspace buffer (module docstring)."""
    b, rows, c_in = padded.shape
    k, _, c_out = taps.shape
    start = pad - dilation * (k // 2)  # row of tap 0 for output frame 0
    n = b * rows - 2 * pad  # output rows: the last utterance's trailing 2·pad rows are not needed
    flat = padded.view(b * rows, c_in)
    out = WORKSPACE.get("ecapa_taps_out", (b * rows, c_out), padded)
    torch.addmm(bias, flat[start:start + n], taps[0], out=out[:n])
    for j in range(1, k):
        out[:n].addmm_(flat[start + j * dilation:start + j * dilation + n], taps[j])
    return out.view(b, rows, c_out)[:, :rows - 2 * pad]


class FastECAPABackend(nn.Module):
    """``ECAPABackend`` on the fast path: (B, S, T, H) hidden-state stacks → (B, D) embeddings."""

    def __init__(self, reference: ECAPABackend):
        super().__init__()
        adopt_children(self, reference)
        self.noise_std = reference.noise_std  # read by the reference forward (tracing)
        # zero frames around each utterance in the Res2Net convs' input, enough for all of them
        self.res2_pad = max((res2[0].padding[0] for block in self.blocks for res2 in block.res2), default=0)
        self.derived = DerivedWeights()
        self.train(reference.training)

    @torch.no_grad()  # inference only: in-place and out= ops
    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("the fast ECAPA backend is for inference only (no training noise, no BatchNorm updates)")
        if tracing():
            return ECAPABackend.forward(self, states)
        b, _, t, _ = states.shape
        x = self._input_conv(states)  # (B·T, C), then the running block input
        channels = x.shape[1]
        block_outputs = WORKSPACE.get("ecapa_block_outputs", (b * t, len(self.blocks) * channels), x)
        for i, block in enumerate(self.blocks):
            out = block_outputs[:, i * channels:(i + 1) * channels]
            self._block(f"blocks.{i}", block, x, out, b)
            if i + 1 < len(self.blocks):
                x.add_(out)
        conv = self.conv_cat[0]
        pooled_in = WORKSPACE.get("ecapa_pooled_in", (b * t, conv.out_channels), x)
        torch.addmm(conv.bias, block_outputs, self._pointwise("conv_cat", conv), out=pooled_in).relu_()
        pooled = self._pooling(pooled_in.view(b, t, -1))
        return self.embedding_norm(self.embedding(self.pooled_norm(pooled)))

    def _pointwise(self, name: str, conv: nn.Conv1d) -> torch.Tensor:
        """1×1 conv weight (C_out, C_in, 1) as (C_in, C_out), cached."""
        return self.derived.get(name, lambda: conv.weight[:, :, 0].t(), conv.weight)

    def _taps(self, name: str, conv: nn.Conv1d) -> torch.Tensor:
        """k-tap conv weight (C_out, C_in, k) as (k, C_in, C_out), cached."""
        return self.derived.get(name, lambda: conv.weight.permute(2, 1, 0), conv.weight)

    def _bn(self, name: str, bn: nn.BatchNorm1d) -> torch.Tensor:
        """Eval BatchNorm as (2, C) scale and shift, cached until a parameter or running statistic changes."""
        return self.derived.get(name, lambda: _bn_scale_shift(bn), bn.weight, bn.bias, bn.running_mean,
                                bn.running_var)

    def _input_conv(self, states: torch.Tensor) -> torch.Tensor:
        """Layer sum → InstanceNorm over time → k5 conv → ReLU → BN: (B, S, T, H) → (B·T, C), workspace."""
        b, s, t, h = states.shape
        conv, bn = self.conv_in[0], self.conv_in[2]
        pad = conv.padding[0]
        padded = WORKSPACE.get("ecapa_input", (b, t + 2 * pad, h), states, _zero)
        x = padded[:, pad:pad + t]
        weights = self.layer_sum.weights.view(s)
        torch.mul(states[:, 0], weights[0], out=x)
        for i in range(1, s):
            x.addcmul_(states[:, i], weights[i])
        # biased variance, as InstanceNorm
        x.sub_(x.mean(dim=1, keepdim=True))
        var = torch.linalg.vecdot(x, x, dim=1).div_(t)
        x.mul_(var.add_(self.instance_norm.eps).rsqrt_()[:, None])
        conv_out = _conv_taps(padded, pad, self._taps("conv_in", conv), conv.bias, conv.dilation[0])
        out = WORKSPACE.get("ecapa_block_input", (b * t, conv.out_channels), states)
        _affine_(torch.clamp_min(conv_out, 0, out=out.view(b, t, -1)), self._bn("conv_in.bn", bn))
        return out

    def _block(self, name: str, block: Res2NetSEBlock, x: torch.Tensor, out: torch.Tensor, batch: int) -> None:
        """``out`` (B·T, C) ← x + SE(conv_out(Res2Net(conv_in(x)))), x (B·T, C)."""
        rows, channels = x.shape
        t = rows // batch
        conv, bn = block.conv_in[0], block.conv_in[2]
        # conv_in's output; splits 0…scale−2 are overwritten by their convs' outputs, the last passes through
        splits = WORKSPACE.get("ecapa_splits", (rows, channels), x)
        torch.addmm(conv.bias, x, self._pointwise(f"{name}.conv_in", conv), out=splits).relu_()
        _affine_(splits, self._bn(f"{name}.conv_in.bn", bn))
        width, pad, y = channels // (len(block.res2) + 1), self.res2_pad, None
        padded = WORKSPACE.get("ecapa_res2_in", (batch, t + 2 * pad, width), x, _zero)
        for j, res2 in enumerate(block.res2):
            conv, bn = res2[0], res2[2]
            split = splits[:, j * width:(j + 1) * width].view(batch, t, width)
            if y is None:
                padded[:, pad:pad + t].copy_(split)
            else:
                torch.add(y, split, out=padded[:, pad:pad + t])
            conv_out = _conv_taps(padded, pad, self._taps(f"{name}.res2.{j}", conv), conv.bias, conv.dilation[0])
            y = _affine_(torch.clamp_min(conv_out, 0, out=split), self._bn(f"{name}.res2.{j}.bn", bn))
        conv, bn = block.conv_out[0], block.conv_out[2]
        z = WORKSPACE.get("ecapa_block_z", (rows, channels), x)
        torch.addmm(conv.bias, splits, self._pointwise(f"{name}.conv_out", conv), out=z).relu_()
        z = _affine_(z, self._bn(f"{name}.conv_out.bn", bn)).view(batch, t, channels)
        gate = block.se.gate
        squeezed = F.relu(F.linear(z.mean(dim=1), gate[0].weight[:, :, 0], gate[0].bias))
        g = torch.sigmoid(F.linear(squeezed, gate[2].weight[:, :, 0], gate[2].bias))
        torch.addcmul(x.view(batch, t, channels), z, g[:, None], out=out.view(batch, t, channels))

    def _pooling(self, x: torch.Tensor) -> torch.Tensor:
        """Attentive statistics pooling of channels-last x (B, T, C) → weighted mean ‖ std (B, 2C)."""
        b, t, channels = x.shape
        first, bn, last = self.pooling.attention[0], self.pooling.attention[2], self.pooling.attention[4]
        scratch = WORKSPACE.get("ecapa_pooling_scratch", (b * t, channels), x)  # centred x², then the logits
        mean = x.mean(dim=1)
        squares = torch.sub(x, mean[:, None], out=scratch.view(b, t, channels)).square_()
        std = squares.sum(dim=1).div_(t - 1).clamp_(min=1e-4).sqrt_()  # unbiased variance, as Tensor.var
        w_x = self.derived.get("attention.x", lambda: first.weight[:, :channels, 0].t(), first.weight)
        w_ms = self.derived.get("attention.mean_std", lambda: first.weight[:, channels:, 0].t(), first.weight)
        context = torch.addmm(first.bias, torch.cat([mean, std], dim=1), w_ms)  # (B, A): constant over time
        frames = x.view(b * t, channels)
        hidden = WORKSPACE.get("ecapa_attention_hidden", (b * t, first.out_channels), x)
        torch.mm(frames, w_x, out=hidden).view(b, t, -1).add_(context[:, None]).relu_()
        _affine_(hidden, self._bn("attention.bn", bn)).tanh_()
        # unnormalised softmax over time (module docstring), the max subtracted against overflow
        e = torch.mm(hidden, self._pointwise("attention.out", last), out=scratch).view(b, t, channels)
        e.sub_(e.amax(dim=1, keepdim=True)).exp_()
        total = e.sum(dim=1)
        mu = e.mul_(x).sum(dim=1).div_(total)            # Σ_t w·x
        second = e.mul_(x).sum(dim=1).div_(total)        # Σ_t w·x²
        sigma = torch.sqrt(second.sub_(mu ** 2).clamp_(min=1e-4))
        return torch.cat([mu, sigma], dim=1)
