"""Shared fixtures and helpers: small synthetic data directories made on the fly (no downloads), and a
scale-relative tensor comparison for the fast inference modules."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # makes `local` importable for data-preparation tests

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def assert_close_to_scale(got: torch.Tensor, expected: torch.Tensor, tol: float, min_scale: float) -> None:
    """Same shape, finite, and max |got − expected| ≤ tol × max |expected|, where max |expected| >
    ``min_scale`` (so the comparison is not between near-zero tensors)."""
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    scale = expected.abs().max().item()
    assert scale > min_scale
    assert (got - expected).abs().max().item() <= tol * scale


def compare_fast(ref, fast, inputs, tol: float, min_scale: float) -> torch.Tensor:
    """Run a reference module and its fast version on ``inputs`` (inference mode), compare them with
    :func:`assert_close_to_scale`, and return the fast output."""
    with torch.inference_mode():
        expected, got = ref(inputs), fast(inputs)
    assert_close_to_scale(got, expected, tol, min_scale)
    return got


def synth_voice(rng: np.random.Generator, f0: float, seconds: float, sr: int = 16000) -> np.ndarray:
    """A crude 'speaker': harmonic tone at f0 with a speaker-specific spectral tilt, plus noise."""
    t = np.arange(int(seconds * sr)) / sr
    vib = 1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    wav = sum((0.6 ** k) * np.sin(2 * np.pi * f0 * (k + 1) * vib * t + rng.uniform(0, 6.28)) for k in range(6))
    wav = wav * (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * rng.uniform(1, 3) * t)))
    wav = wav + 0.01 * rng.standard_normal(len(t))
    return (0.3 * wav / np.abs(wav).max()).astype(np.float32)


def make_datadir(root: Path, num_speakers: int = 4, utts_per_speaker: int = 3, seconds=(3.2, 4.5),
                 seed: int = 0, trials: bool = True) -> Path:
    """Write a Kaldi data dir of synthetic voices under ``root``; returns its path."""
    import soundfile as sf

    from svmix.data.datadir import Trial, write_datadir, write_trials

    rng = np.random.default_rng(seed)
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    wav_scp, utt2spk = {}, {}
    for s in range(num_speakers):
        f0 = 90 + 35 * s
        for u in range(utts_per_speaker):
            utt = f"spk{s:02d}-utt{u:02d}"
            path = wav_dir / f"{utt}.wav"
            sf.write(path, synth_voice(rng, f0, rng.uniform(*seconds)), 16000, subtype="PCM_16")
            wav_scp[utt] = str(path)
            utt2spk[utt] = f"spk{s:02d}"
    data = root / "data"
    write_datadir(data, wav_scp, utt2spk)
    if trials:
        utts = sorted(wav_scp)
        trial_list = [Trial(a, b, int(utt2spk[a] == utt2spk[b])) for i, a in enumerate(utts) for b in utts[i + 1:]]
        write_trials(data / "trials", trial_list, "kaldi")
    return data


def one_error_line(result, *names: str) -> str:
    """A CliRunner result of a user error: exit 1 through ``user_errors``, exactly one ``error:`` line
    on stderr naming every one of ``names``, no traceback. Returns that line."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert all(name in errors[0] for name in names), errors[0]
    return errors[0]


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy shared machine, thread spin-waits dominate tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_datadir(tmp_path) -> Path:
    return make_datadir(tmp_path)
