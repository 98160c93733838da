"""Log-mel filterbank frontends: ``fbank`` (the input of a conventional ECAPA-TDNN) and
``fbank_projected`` (filterbanks at the teacher's frame rate, projected to a student's hidden size),
and the same stacked filterbanks as a teacher's feature extractor (``TeacherFbankExtractor``).

Batched Kaldi-style filterbanks that compute what ``torchaudio.compliance.kaldi.fbank`` computes
with its defaults (snip_edges, no dither, per-frame DC removal, pre-emphasis 0.97, Povey window,
FFT size rounded up to a power of two, power spectrum, Kaldi mel banks from 20 Hz to Nyquist,
natural log floored at float eps) for a whole batch at once, so it traces and exports with a free
batch axis; tests/test_baselines.py checks it against torchaudio frame by frame. The waveform is
taken as read (float in [-1, 1]): Kaldi's int16 scale would only add a constant to every log
energy, which the ECAPA backend's instance norm removes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from svmix.data.audio import SAMPLE_RATE
from svmix.models.frontend import FeatureProjection
from svmix.registry import FRONTENDS

PREEMPHASIS = 0.97
POVEY_EXPONENT = 0.85
LOW_FREQ_HZ = 20.0


@FRONTENDS.register("fbank")
class FbankFrontend(nn.Module):
    """Waveform (B, N) → log-mel filterbank frames (B, T, num_mel_bins); no trainable parameters."""

    num_states = None

    def __init__(self, hidden: int, num_mel_bins: int = 80, frame_length_ms: float = 25.0,
                 frame_shift_ms: float = 10.0):
        super().__init__()
        from torchaudio.compliance.kaldi import get_mel_banks

        self.dim = int(num_mel_bins)
        self.window = int(SAMPLE_RATE * frame_length_ms / 1000)   # samples, as Kaldi rounds them
        self.shift = int(SAMPLE_RATE * frame_shift_ms / 1000)
        if self.window < 2 or self.shift < 1:
            raise ValueError(f"fbank frames of {frame_length_ms} ms every {frame_shift_ms} ms are too short")
        self.fft_size = 1 << math.ceil(math.log2(self.window))
        banks, _ = get_mel_banks(self.dim, self.fft_size, float(SAMPLE_RATE), LOW_FREQ_HZ, 0.0, 100.0, -500.0, 1.0)
        banks = nn.functional.pad(banks, (0, 1))  # the Nyquist bin gets no weight, as in Kaldi
        self.register_buffer("mel_banks", banks.T.contiguous().float(), persistent=False)  # (F, M)
        self.register_buffer("window_function",
                             torch.hann_window(self.window, periodic=False).pow(POVEY_EXPONENT), persistent=False)

    @property
    def hop(self) -> int:
        return self.shift

    @property
    def receptive_field(self) -> int:
        return self.window

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.window else (num_samples - self.window) // self.shift + 1

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) → (B, T, window) frames every ``shift`` samples: a view (``unfold``), or, after
        :func:`use_onnx_operators`, an index gather (the TorchScript-based ONNX exporter mis-shapes unfold)."""
        if getattr(self, "dft_basis", None) is None:
            return wav.unfold(-1, self.window, self.shift)
        starts = torch.arange(self.num_frames(wav.shape[-1]), device=wav.device) * self.shift
        return wav[:, starts[:, None] + torch.arange(self.window, device=wav.device)[None, :]]

    def power_spectrum(self, frames: torch.Tensor) -> torch.Tensor:
        """|rfft(frames, fft_size)|² (B, T, F); after :func:`use_onnx_operators`, the same from one
        matrix product with the DFT's cosine and sine rows (that exporter has no rfft either)."""
        if getattr(self, "dft_basis", None) is None:
            return torch.fft.rfft(frames, n=self.fft_size).abs().pow(2)
        real, imag = torch.matmul(frames, self.dft_basis).chunk(2, dim=-1)     # (B, T, F) each
        return real.square() + imag.square()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        frames = self.frames(wav.float())                                      # (B, T, W)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - PREEMPHASIS * previous) * self.window_function
        energies = torch.matmul(self.power_spectrum(frames), self.mel_banks)
        return energies.clamp(min=torch.finfo(torch.float32).eps).log()


def use_onnx_operators(model: nn.Module) -> nn.Module:
    """Switch every filterbank frontend in ``model`` (in place) to operators that the TorchScript-based
    ONNX exporter handles: frames by index gather instead of ``unfold``, and the power spectrum from a
    matrix product with the DFT's cosine and sine rows instead of ``torch.fft.rfft``; the same features
    to float32 rounding. The DFT product costs window × (fft_size + 2) MACs per frame more (0.06
    GMACs per 3 s), so only ONNX exports use it."""
    for module in model.modules():
        if isinstance(module, FbankFrontend):
            n = torch.arange(module.window, dtype=torch.float64)[:, None]
            k = torch.arange(module.fft_size // 2 + 1, dtype=torch.float64)[None, :]
            angle = 2.0 * math.pi * n * k / module.fft_size
            basis = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=1).float()  # (W, 2F)
            module.register_buffer("dft_basis", basis.to(module.mel_banks.device), persistent=False)
    return model


class StackedFbank(nn.Module):
    """Waveform (B, N) → (B, T, stack · num_mel_bins): log-mel filterbanks, mean-normalised over the
    input's frames, ``stack`` consecutive frames concatenated. With the default ``stack: 2`` its hop
    is 320 samples (20 ms) and a 3 s segment has 149 frames: the frame grid of wav2vec 2.0-style
    convolutions (frame t covers samples 320t .. 320t + 560, a conv frame 320t .. 320t + 400), and
    for every length the same number of frames as a conv stack with a 560-sample receptive field."""

    def __init__(self, num_mel_bins: int = 80, stack: int = 2, mean_norm: bool = True):
        super().__init__()
        if int(stack) < 1:  # configs range-check it first (stack: 1..8)
            raise ValueError(f"fbank stack must be at least 1 frame, got {stack}")
        self.fbank = FbankFrontend(0, num_mel_bins=int(num_mel_bins))
        self.stack, self.mean_norm = int(stack), bool(mean_norm)
        self.dim = self.fbank.dim * self.stack

    @property
    def hop(self) -> int:
        return self.fbank.shift * self.stack

    @property
    def receptive_field(self) -> int:
        return self.fbank.window + (self.stack - 1) * self.fbank.shift

    def num_frames(self, num_samples: int) -> int:
        return self.fbank.num_frames(num_samples) // self.stack

    def stacked(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.fbank(wav)                                                    # (B, T', M)
        if self.mean_norm:
            x = x - x.mean(dim=1, keepdim=True)
        frames = x.shape[1] // self.stack
        return x[:, :frames * self.stack].reshape(x.shape[0], frames, self.stack * self.fbank.dim)


class TeacherFbankExtractor(StackedFbank):
    """:class:`StackedFbank` in the place of a torchaudio ``Wav2Vec2Model``'s conv feature extractor
    (the same call: ``(wav, lengths) → (features, lengths)``; lengths are not tracked, as svmix's
    teachers run on unpadded batches). The shipped teacher's input:
    docs/mini-world.md §The teacher on filterbanks."""

    def forward(self, wav: torch.Tensor, lengths=None):
        return self.stacked(wav), None


@FRONTENDS.register("fbank_projected")
class ProjectedFbankFrontend(StackedFbank):
    """Waveform (B, N) → (B, T, H): :class:`StackedFbank` features, then LayerNorm → Linear → Dropout
    to ``hidden``, as the ``conv`` frontend's feature projection.

    A student encoder on filterbanks instead of the learned waveform convolutions; with the default
    ``stack: 2`` its frames line up with the teacher's frame for frame, so distillation targets need
    no resampling.
    """

    num_states = None

    def __init__(self, hidden: int, num_mel_bins: int = 80, stack: int = 2, mean_norm: bool = True,
                 dropout: float = 0.1):
        super().__init__(num_mel_bins, stack, mean_norm)
        self.feature_projection = FeatureProjection(self.fbank.dim * self.stack, hidden, float(dropout))
        self.dim = hidden

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.feature_projection(self.stacked(wav))
