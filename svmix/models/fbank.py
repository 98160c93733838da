"""The log-mel filterbank frontend ``fbank``: the input of a conventional ECAPA-TDNN.

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

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        frames = wav.float().unfold(-1, self.window, self.shift)               # (B, T, W)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - PREEMPHASIS * previous) * self.window_function
        power = torch.fft.rfft(frames, n=self.fft_size).abs().pow(2)           # (B, T, F)
        energies = torch.matmul(power, self.mel_banks)
        return energies.clamp(min=torch.finfo(torch.float32).eps).log()
