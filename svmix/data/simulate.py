"""Signal simulation for augmentation and the mini corpus: noises, room impulse responses, mixing.

Generators return float32 arrays; noise-like signals are scaled to an RMS of ``NOISE_RMS`` so they can
be written as 16-bit wavs without clipping. Mixing functions never change the length of ``speech``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

NOISE_RMS = 0.1
SPEED_OF_SOUND = 343.0
COLOR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _scale_rms(x: np.ndarray, rms: float = NOISE_RMS) -> np.ndarray:
    current = _rms(x)
    return (x * (rms / current) if current > 0 else x).astype(np.float32)


def _fit_length(x: np.ndarray, num_samples: int, offset: int = 0) -> np.ndarray:
    """Tile ``x`` circularly from ``offset`` until it has ``num_samples`` samples."""
    if len(x) == 0:
        raise ValueError("cannot fit an empty signal to a length")
    idx = (offset + np.arange(num_samples)) % len(x)
    return x[idx]


def colored_noise(num_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a white, pink (1/f) or brown (1/f^2) power spectrum, RMS ``NOISE_RMS``."""
    if color not in COLOR_EXPONENTS:
        raise ValueError(f"unknown noise color '{color}' (known: {', '.join(COLOR_EXPONENTS)})")
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0  # DC is removed below; avoid dividing by zero
    spectrum *= freqs ** (-COLOR_EXPONENTS[color] / 2.0)
    spectrum[0] = 0.0
    return _scale_rms(np.fft.irfft(spectrum, n=num_samples))


def babble(waves: Sequence[np.ndarray], num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Average of ``waves`` (each at a random circular offset, equalised in level), RMS ``NOISE_RMS``."""
    if len(waves) == 0:
        raise ValueError("babble needs at least one source waveform")
    mix = np.zeros(num_samples, dtype=np.float64)
    for wave in waves:
        mix += _scale_rms(_fit_length(np.asarray(wave), num_samples, int(rng.integers(len(wave)))), 1.0)
    return _scale_rms(mix / len(waves))


def harmonic_tones(num_samples: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """A 'music-like' sequence of notes (and chords) with harmonics and decaying envelopes."""
    out = np.zeros(num_samples, dtype=np.float64)
    note_len = int(sample_rate * 60.0 / rng.uniform(70, 180))  # one beat at a random tempo
    timbre = rng.uniform(0.3, 0.8) ** np.arange(int(rng.integers(3, 9)))  # harmonic amplitudes
    root = rng.uniform(45, 60)  # MIDI note of the key
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    for start in range(0, num_samples, note_len):
        length = min(note_len * int(rng.integers(1, 3)), num_samples - start)
        t = np.arange(length) / sample_rate
        envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t * rng.uniform(2, 8))
        for degree in rng.choice(scale, size=int(rng.integers(1, 4)), replace=False):
            f0 = 440.0 * 2 ** ((root + degree + 12 * int(rng.integers(0, 2)) - 69) / 12)
            for k, amp in enumerate(timbre, 1):
                if f0 * k < sample_rate / 2:
                    out[start:start + length] += amp * envelope * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
    return _scale_rms(out)


def simulated_rir(rng: np.random.Generator, sample_rate: int = 16000,
                  rt60_range: Tuple[float, float] = (0.2, 0.8),
                  room: Optional[Tuple[float, float, float]] = None) -> np.ndarray:
    """A shoebox-room impulse response: direct path at sample 0 (the peak, value 1), first-order
    image-source reflections, and an exponentially decaying diffuse tail with the drawn RT60.

    ``room`` is (length, width, height) in metres; drawn at random when None.
    """
    rt60 = float(rng.uniform(*rt60_range))
    dims = np.asarray(room if room is not None else rng.uniform([3, 3, 2.4], [10, 8, 4]), dtype=np.float64)
    source = rng.uniform(0.5, dims - 0.5)
    mic = rng.uniform(0.5, dims - 0.5)
    direct = max(float(np.linalg.norm(source - mic)), 0.3)

    # Sabine: RT60 = 0.161 V / (S alpha) gives the wall absorption, hence the reflection coefficient.
    volume = float(np.prod(dims))
    surface = 2 * float(dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2])
    alpha = min(0.161 * volume / (surface * rt60), 0.99)
    beta = np.sqrt(1 - alpha)

    length = int(rt60 * sample_rate)
    rir = np.zeros(length, dtype=np.float64)
    for axis in range(3):
        for wall in (0.0, dims[axis]):
            image = source.copy()
            image[axis] = 2 * wall - source[axis]
            distance = float(np.linalg.norm(image - mic))
            delay = int(round((distance - direct) / SPEED_OF_SOUND * sample_rate))
            if 0 < delay < length:
                rir[delay] += beta * direct / distance * rng.choice([-1.0, 1.0])

    # Diffuse tail from the mixing time (about sqrt(V) ms) on, decaying 60 dB over rt60; its level
    # sets a direct-to-reverberant ratio between -2 and 8 dB.
    mixing = int(np.sqrt(volume) * 1e-3 * sample_rate)
    t = np.arange(length - mixing) / sample_rate
    tail = rng.standard_normal(len(t)) * np.exp(-6.9078 * t / rt60)
    tail *= np.minimum(t / 0.01, 1.0)  # soft onset
    drr_db = rng.uniform(-2.0, 8.0)
    tail *= np.sqrt(10 ** (-drr_db / 10) / max(np.sum(tail ** 2), 1e-12))
    rir[mixing:] += tail
    rir[1:] = np.clip(rir[1:], -0.95, 0.95)
    rir[0] = 1.0
    return rir.astype(np.float32)


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` (tiled or cropped to ``len(speech)``) scaled so the mixture has SNR ``snr_db``."""
    noise = _fit_length(np.asarray(noise, dtype=np.float64), len(speech))
    speech_power = np.mean(np.square(speech, dtype=np.float64))
    noise_power = np.mean(noise ** 2)
    if noise_power == 0:
        return np.asarray(speech, dtype=np.float32).copy()
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with the unit-energy ``rir`` and keep the first ``len(speech)`` samples."""
    from scipy.signal import fftconvolve

    rir = np.asarray(rir, dtype=np.float64)
    energy = np.sqrt(np.sum(rir ** 2))
    if energy == 0:
        raise ValueError("room impulse response is all zeros")
    return fftconvolve(speech, rir / energy, mode="full")[: len(speech)].astype(np.float32)


def clip(speech: np.ndarray, ratio: float) -> np.ndarray:
    """Hard-clip at ``ratio`` times the absolute peak of ``speech``."""
    limit = ratio * float(np.max(np.abs(speech))) if len(speech) else 0.0
    return np.clip(speech, -limit, limit).astype(np.float32)


#: Ranges of ``random_channel``: peaking-filter centres, their Q, and the band-pass edges (Hz).
CHANNEL_PEAK_HZ = (150.0, 6000.0)
CHANNEL_Q = (0.5, 2.0)
CHANNEL_LOW_EDGE_HZ = (50.0, 400.0)
CHANNEL_HIGH_EDGE_HZ = (3400.0, 7800.0)


def _peaking_biquad(centre_hz: float, gain_db: float, q: float, sample_rate: int) -> Tuple[np.ndarray, np.ndarray]:
    """The audio-EQ-cookbook peaking filter: ``gain_db`` at ``centre_hz``, unity far from it."""
    a_gain = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * centre_hz / sample_rate
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * a_gain, -2.0 * np.cos(w0), 1.0 - alpha * a_gain])
    a = np.array([1.0 + alpha / a_gain, -2.0 * np.cos(w0), 1.0 - alpha / a_gain])
    return b / a[0], a / a[0]


def random_channel(speech: np.ndarray, rng: np.random.Generator, max_gain_db: float, num_peaks: int = 3,
                   sample_rate: int = 16000) -> np.ndarray:
    """Colour ``speech`` by a random microphone-and-room response, as a recording session would.

    ``num_peaks`` peaking filters (centres log-uniform in ``CHANNEL_PEAK_HZ``, gains uniform in
    ±``max_gain_db``, Q uniform in ``CHANNEL_Q``), then a 2nd-order Butterworth band-pass with
    log-uniform edges in ``CHANNEL_LOW_EDGE_HZ`` and ``CHANNEL_HIGH_EDGE_HZ``. The peak level is kept
    and the length never changes. A fixed channel adds the same vector to every frame's cepstrum, so
    it moves an utterance's mean cepstrum by as much as a change of speaker can.
    """
    from scipy.signal import butter, lfilter, sosfilt

    if max_gain_db < 0:
        raise ValueError(f"max_gain_db must be >= 0, got {max_gain_db}")
    x = np.asarray(speech, dtype=np.float64)
    if not len(x):
        return x.astype(np.float32)
    y = x
    for _ in range(num_peaks):
        centre = float(np.exp(rng.uniform(*np.log(CHANNEL_PEAK_HZ))))
        b, a = _peaking_biquad(centre, float(rng.uniform(-max_gain_db, max_gain_db)),
                               float(rng.uniform(*CHANNEL_Q)), sample_rate)
        y = lfilter(b, a, y)
    low = float(np.exp(rng.uniform(*np.log(CHANNEL_LOW_EDGE_HZ))))
    high = min(float(np.exp(rng.uniform(*np.log(CHANNEL_HIGH_EDGE_HZ)))), 0.49 * sample_rate)
    y = sosfilt(butter(2, [low, high], btype="bandpass", fs=sample_rate, output="sos"), y)
    peak_in, peak_out = float(np.max(np.abs(x))), float(np.max(np.abs(y)))
    if peak_out > 0:
        y = y * (peak_in / peak_out)
    return y.astype(np.float32)
