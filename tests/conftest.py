"""Shared fixtures and helpers: small synthetic data directories made on the fly (no downloads), and a
scale-relative tensor comparison for the fast inference modules, and a directory snapshot for comparing
two runs."""
import os
import sys
from pathlib import Path
from typing import Dict

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


def max_concurrent(intervals) -> int:
    """The most (start, end) intervals open at one time (steps run side by side: the pool's bound)."""
    intervals = list(intervals)
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def one_error_line(result, *names: str) -> str:
    """A CliRunner result of a user error: exit 1 through ``user_errors``, exactly one ``error:`` line
    on stderr naming every one of ``names``, no traceback. Returns that line."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert all(name in errors[0] for name in names), errors[0]
    return errors[0]


@pytest.fixture(autouse=True)
def _private_svmix_cache(tmp_path_factory, monkeypatch):
    """Tests keep svmix's user cache (e.g. the audio-scan cache) out of the home directory."""
    monkeypatch.setenv("SVMIX_CACHE_DIR", str(tmp_path_factory.mktemp("svmix-cache")))


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


# A tiny WavLM (2 layers, H = 32) in the Hugging Face layout, as the mini world's teacher is shipped.
TINY_TEACHER_HF = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                   "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
                   "hidden_dropout": 0.1, "attention_dropout": 0.1}


def make_tiny_teacher(directory: Path, seed: int = 0, do_normalize: bool = True, **config: object) -> Path:
    """Write a random tiny WavLM teacher (weights perturbed so no LayerNorm is trivial) to ``directory``;
    ``config`` overrides HF config keys (e.g. ``svmix_feature_extractor="fbank"``)."""
    from svmix.teachers.hf_format import HF_DEFAULTS, HF_MODEL_TYPES, save_hf_wavlm
    from svmix.teachers.model import build_torchaudio_model

    _, params = HF_MODEL_TYPES.get("wavlm")({**HF_DEFAULTS, **TINY_TEACHER_HF, **config})
    torch.manual_seed(seed)
    model = build_torchaudio_model("wavlm", params)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_hf_wavlm(model, params, directory, do_normalize=do_normalize,
                  extra_config={"hidden_dropout": 0.1, "attention_dropout": 0.1})
    return directory


# What model.frontend.teacher records for such a teacher (for config tests that read no teacher files)
TINY_TEACHER_ARCHITECTURE = {
    "arch": "wavlm", "normalize_waveform": True, "normalize_eps": 1e-7, "feat_proj_layer_norm": True,
    "fingerprint": "sha256:" + "0" * 64,
    "params": {"extractor_mode": "group_norm", "extractor_conv_layer_config": [[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2,
               "extractor_conv_bias": False, "encoder_embed_dim": 32, "encoder_projection_dropout": 0.0,
               "encoder_pos_conv_kernel": 16, "encoder_pos_conv_groups": 4, "encoder_num_layers": 2,
               "encoder_num_heads": 2, "encoder_attention_dropout": 0.0, "encoder_ff_interm_features": 64,
               "encoder_ff_interm_dropout": 0.0, "encoder_dropout": 0.0, "encoder_layer_norm_first": False,
               "encoder_layer_drop": 0.0, "encoder_num_buckets": 320, "encoder_max_distance": 800}}


def snapshot(path: Path, logs: bool = True) -> Dict[str, bytes]:
    """Every file below ``path`` (or ``path`` itself) by relative name, with its bytes. ``logs=False``
    leaves out the tools' logs (``*.log``): two runs that make the same output log different times."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and (logs or p.suffix != ".log")}
