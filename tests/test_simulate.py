"""Signal simulation: noise spectra, SNR accuracy, RIR shape and decay, reverberation, clipping, babble."""
import numpy as np
import pytest

from svmix.data import simulate


def _power(x):
    return float(np.mean(np.square(x, dtype=np.float64)))


def _speech(rng, n=32000):
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 5.0, 12.5, 20.0])
@pytest.mark.parametrize("noise_len", [8000, 32000, 50000])  # tiled, exact, cropped
def test_add_noise_reaches_snr(snr, noise_len):
    rng = np.random.default_rng(1)
    speech = _speech(rng)
    noise = simulate.colored_noise(noise_len, "pink", rng)
    mixed = simulate.add_noise(speech, noise, snr)
    assert mixed.dtype == np.float32 and len(mixed) == len(speech)
    achieved = 10 * np.log10(_power(speech) / _power(mixed.astype(np.float64) - speech))
    assert abs(achieved - snr) < 0.1


def test_add_noise_silent_noise_returns_speech():
    speech = _speech(np.random.default_rng(0))
    np.testing.assert_array_equal(simulate.add_noise(speech, np.zeros(100, np.float32), 10.0), speech)


def test_colored_noise_spectral_slopes():
    rng = np.random.default_rng(0)
    slopes = {}
    for color in ("white", "pink", "brown"):
        x = simulate.colored_noise(1 << 16, color, rng)
        assert x.dtype == np.float32 and len(x) == 1 << 16
        assert abs(np.sqrt(_power(x)) - simulate.NOISE_RMS) < 1e-3
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.arange(len(power))
        band = (freqs > 100) & (freqs < 20000)
        slopes[color] = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
    assert abs(slopes["white"]) < 0.2
    assert abs(slopes["pink"] + 1) < 0.2
    assert abs(slopes["brown"] + 2) < 0.2
    with pytest.raises(ValueError):
        simulate.colored_noise(100, "purple", rng)


def _schroeder_rt60(rir, sr=16000):
    energy = np.cumsum(np.square(rir.astype(np.float64))[::-1])[::-1]
    db = 10 * np.log10(energy / energy[0] + 1e-30)
    return 3 * (np.argmax(db < -25) - np.argmax(db < -5)) / sr  # T20 extrapolated to 60 dB


def test_simulated_rir_properties():
    rng = np.random.default_rng(3)
    for _ in range(10):
        rir = simulate.simulated_rir(rng, rt60_range=(0.3, 0.6))
        assert rir.dtype == np.float32
        assert np.argmax(np.abs(rir)) == 0 and rir[0] == 1.0  # direct path first, peak-normalised
        assert np.max(np.abs(rir[1:])) < 1.0
        assert 0.3 * 16000 <= len(rir) <= 0.6 * 16000 + 1
        rt60 = len(rir) / 16000
        assert 0.6 * rt60 < _schroeder_rt60(rir) < 1.3 * rt60
        # there is reverberant energy, but less than 1000x the direct sound
        assert 0.01 < np.sum(rir[1:] ** 2) < 1000
    a = simulate.simulated_rir(np.random.default_rng(5), room=(5.0, 4.0, 3.0))
    b = simulate.simulated_rir(np.random.default_rng(5), room=(5.0, 4.0, 3.0))
    np.testing.assert_array_equal(a, b)


def test_reverberate_length_and_identity():
    rng = np.random.default_rng(0)
    speech = _speech(rng)
    delta = np.zeros(100, np.float32)
    delta[0] = 0.5
    np.testing.assert_allclose(simulate.reverberate(speech, delta), speech, atol=1e-5)  # energy-normalised
    wet = simulate.reverberate(speech, simulate.simulated_rir(rng))
    assert wet.dtype == np.float32 and len(wet) == len(speech)
    assert not np.allclose(wet, speech, atol=1e-3)
    with pytest.raises(ValueError):
        simulate.reverberate(speech, np.zeros(10))


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_clip_ratio(ratio):
    speech = _speech(np.random.default_rng(0))
    peak = np.max(np.abs(speech))
    clipped = simulate.clip(speech, ratio)
    assert clipped.dtype == np.float32 and len(clipped) == len(speech)
    assert np.isclose(np.max(np.abs(clipped)), ratio * peak, rtol=1e-6)
    inside = np.abs(speech) < ratio * peak
    np.testing.assert_array_equal(clipped[inside], speech[inside])


def test_babble_mixes_sources_to_length():
    rng = np.random.default_rng(0)
    waves = [_speech(rng, n) for n in (8000, 20000, 50000)]
    out = simulate.babble(waves, 16000, rng)
    assert out.dtype == np.float32 and len(out) == 16000
    assert abs(np.sqrt(_power(out)) - simulate.NOISE_RMS) < 1e-3
    with pytest.raises(ValueError):
        simulate.babble([], 100, rng)


def test_harmonic_tones_are_tonal():
    x = simulate.harmonic_tones(32000, np.random.default_rng(0))
    assert x.dtype == np.float32 and len(x) == 32000 and np.max(np.abs(x)) < 1
    power = np.abs(np.fft.rfft(x)) ** 2
    # tonal: the strongest 1% of bins hold most of the energy (white noise would hold ~1%)
    assert np.sort(power)[-len(power) // 100:].sum() > 0.5 * power.sum()


def _gain_db(before, after, hz, sr=16000):
    """Gain of a linear filter at ``hz`` from white-noise input and output spectra (Welch)."""
    from scipy.signal import csd, welch

    f, pxx = welch(before, fs=sr, nperseg=1024)
    _, pxy = csd(before, after, fs=sr, nperseg=1024)
    k = int(np.argmin(np.abs(f - hz)))
    return 20 * np.log10(np.abs(pxy[k]) / pxx[k])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_gain_db", [0.0, 3.0, 6.0, 12.0])
def test_random_channel_is_a_bounded_seeded_filter(seed, max_gain_db):
    x = np.random.default_rng(100 + seed).standard_normal(48000).astype(np.float32)
    y = simulate.random_channel(x, np.random.default_rng(seed), max_gain_db)
    assert y.dtype == np.float32 and len(y) == len(x)
    np.testing.assert_allclose(np.max(np.abs(y)), np.max(np.abs(x)), rtol=1e-5)  # peak level kept
    np.testing.assert_array_equal(y, simulate.random_channel(x, np.random.default_rng(seed), max_gain_db))
    # Inside the narrowest pass band the response varies by at most the peaks' gains (plus the
    # band-pass's own roll-off near its edges and the estimate's noise).
    mid = [_gain_db(x, y, hz) for hz in (500, 1000, 2000, 3000)]
    assert max(mid) - min(mid) <= 2 * 3 * max_gain_db + 3.0
    # Far outside the widest pass band the band-pass attenuates.
    assert _gain_db(x, y, 7950) < max(mid) - 3.0
    assert _gain_db(x, y, 20) < max(mid) - 6.0


def test_random_channel_differs_between_draws_and_checks_its_gain():
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    rng = np.random.default_rng(0)
    assert not np.allclose(simulate.random_channel(x, rng, 6.0), simulate.random_channel(x, rng, 6.0))
    assert len(simulate.random_channel(np.zeros(0, np.float32), rng, 6.0)) == 0
    with pytest.raises(ValueError, match="max_gain_db"):
        simulate.random_channel(x, rng, -1.0)
