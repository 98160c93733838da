"""The any-length SV-Mixer (encoder ``svmixer_anylen``): inputs of 1 s to 60 s in one pass, gradients,
no leakage from padding, equality with SV-Mixer on one segment, one-pass extraction, API, training."""
import kaldiio
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import ROOT, make_datadir, one_error_line
from svmix.checkpoint import load_model_checkpoint, save_model
from svmix.errors import SvmixError
from svmix.models import build_model, resolve_model_config
from svmix.models.svmixer_anylen import window_index, windowed_time_mlp
from svmix.models.svmixer import TokenMLP
from svmix.yaml_config import read_model_config

SR = 16000
TINY = {"hidden": 32, "embed_dim": 8, "segment_seconds": 1.0, "num_eval_segments": 1, "frontend": {"channels": 16},
        "encoder": {"name": "svmixer_anylen", "num_layers": 2, "group_dim": 8, "token_expansion": 2},
        "backend": {"name": "ecapa", "channels": 16, "se_bottleneck": 8, "pooled_channels": 48,
                    "attention_bottleneck": 8}}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(TINY).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("anylen") / "model.pt"
    save_model(path, model)
    return path


def test_one_pass_embeds_1_to_60_seconds(model):
    assert model.one_pass and model.seq_len == 49 and model.encoder.token_window == 49
    g = torch.Generator().manual_seed(0)
    for seconds in (1.0, 1.7, 3.0, 10.0, 60.0):
        wav = 0.1 * torch.randn(1, int(seconds * SR), generator=g)
        frames = model.frontend.num_frames(wav.shape[1])
        with torch.no_grad():
            states = model.hidden_states(wav)
            emb = model(wav)
        assert states.shape == (1, 3, frames, 32)
        assert emb.shape == (1, 8) and torch.isfinite(emb).all()


def test_on_one_segment_it_is_svmixer_with_the_same_weights():
    """Same parameter names and count; on exactly one window the function is SV-Mixer's."""
    torch.manual_seed(1)
    anylen = build_model(TINY).eval()
    standard = build_model({**TINY, "num_eval_segments": 10,
                            "encoder": {**TINY["encoder"], "name": "svmixer"}}).eval()
    standard.load_state_dict(anylen.state_dict())
    wav = 0.1 * torch.randn(3, SR)
    with torch.no_grad():
        torch.testing.assert_close(anylen(wav), standard(wav), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs 49 frames"):  # the fixed-length one cannot do what the other does
        standard(0.1 * torch.randn(1, 2 * SR))


def test_windows_cover_every_frame_with_real_frames_only():
    lengths = torch.tensor([49, 50, 130, 20])
    index, weights = window_index(lengths, 49, 3)
    for row, length in enumerate(lengths.tolist()):
        used = weights[row] > 0
        assert int(used.sum()) == 49 * max(1, -(-length // 49))
        assert set(index[row][used].tolist()) == set(range(length))  # every real frame, nothing else
        assert index[row].max() < length
    assert index[1, 49:98].tolist() == list(range(1, 50))  # the last window ends on the last frame
    assert index[3, :49].tolist() == [i % 20 for i in range(49)]  # shorter than a window: tiled
    # a window-long input is exactly the token MLP
    mlp, y = TokenMLP(49, 2), torch.randn(2, 4, 49)
    assert torch.equal(windowed_time_mlp(mlp, y, 49), mlp(y))


def test_gradients_reach_every_parameter(model):
    torch.manual_seed(2)
    trainable = build_model(TINY).train()
    trainable.load_state_dict(model.state_dict())
    emb = trainable(0.1 * torch.randn(2, int(2.3 * SR)))  # 114 frames: 3 windows, the last overlapping
    emb.pow(2).sum().backward()
    for name, p in trainable.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.startswith("backend."):  # (a BatchNorm bias before the last BatchNorm gets exactly 0)
            assert p.grad.abs().sum() > 0, name


def test_no_leakage_from_padding(model):
    """An item's states depend neither on what its padding holds nor on its batch-mates' lengths."""
    encoder = model.encoder
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 230, 32, generator=g)
    lengths = [230, 101, 37]  # several windows; odd and even; shorter than one window
    with torch.no_grad():
        batched = encoder(x, torch.tensor(lengths))
        poisoned = x.clone()
        poisoned[1, 101:] = 1e4 * torch.randn(129, 32, generator=g)
        poisoned[2, 37:] = float("nan")
        batched_poisoned = encoder(poisoned, torch.tensor(lengths))
        for i, length in enumerate(lengths):
            alone = encoder(x[i:i + 1, :length])[0]
            torch.testing.assert_close(batched[i, :, :length], alone, rtol=0, atol=1e-5)
            torch.testing.assert_close(batched_poisoned[i, :, :length], alone, rtol=0, atol=1e-5)
            assert (batched_poisoned[i, :, length:] == 0).all()
    with pytest.raises(ValueError, match="lengths must be 3 frame counts in 1..230"):
        encoder(x, torch.tensor([230, 0, 5]))


def test_config_requires_one_segment_and_declares_one_pass():
    with pytest.raises(SvmixError, match="model.num_eval_segments=10: the 'svmixer_anylen' encoder embeds a "
                                         "whole utterance in one pass; set it to 1"):
        build_model({**TINY, "num_eval_segments": 10})
    config = resolve_model_config(TINY)
    assert config["encoder"]["token_window"] is None
    assert resolve_model_config(config) == config  # a resolved config resolves to itself
    assert not build_model({**TINY, "num_eval_segments": 10, "encoder": {**TINY["encoder"], "name": "svmixer"}}).one_pass


def test_shipped_config_is_svmixer_mini_on_one_segment():
    anylen = read_model_config(ROOT / "conf" / "model" / "svmixer_mini_anylen.yaml")
    standard = read_model_config(ROOT / "conf" / "model" / "svmixer_mini.yaml")
    a, b = resolve_model_config(anylen), resolve_model_config(standard)
    assert a["encoder"]["name"] == "svmixer_anylen" and a["num_eval_segments"] == 1
    shared = {k: v for k, v in b["encoder"].items() if k not in ("name", "lgm", "msm", "gcm", "lgm_mode")}
    assert {k: a["encoder"][k] for k in shared} == shared
    assert {k: v for k, v in a.items() if k not in ("encoder", "num_eval_segments")} == \
        {k: v for k, v in b.items() if k not in ("encoder", "num_eval_segments")}


def test_profile_counts_one_pass_against_the_segment_rule():
    from svmix.profiling import evaluation_cost, profile_model

    standard = {**TINY, "num_eval_segments": 10, "encoder": {**TINY["encoder"], "name": "svmixer"}}
    one = [evaluation_cost(c, 1.0) for c in (standard, TINY)]  # one 1 s segment each
    assert [c["passes"] for c in one] == [1, 1] and one[0]["gmacs"] == pytest.approx(one[1]["gmacs"])
    five = [evaluation_cost(c, 5.0) for c in (standard, TINY)]
    assert five[0]["passes"] == 10 and five[0]["pass_seconds"] == 1.0 and not five[0]["one_pass"]
    assert five[1]["passes"] == 1 and five[1]["pass_seconds"] == 5.0 and five[1]["one_pass"]
    assert five[0]["gmacs"] == pytest.approx(10 * one[0]["gmacs"])
    assert 0.4 < five[1]["gmacs"] / five[0]["gmacs"] < 0.6  # 5 s of frames against 10 s
    profiled = profile_model(TINY, 5.0)  # built for its 1 s segment, run on 5 s
    assert profiled["frames"] == 249 and profiled["evaluation"] == five[1]


def _wav(seconds, seed):
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_extraction_embeds_a_long_utterance_in_one_forward_pass(checkpoint, tmp_path, monkeypatch):
    import soundfile as sf

    from svmix.inference.extract import extract_embeddings
    from svmix.models.speaker_model import SpeakerModel

    wavs = {"long": _wav(20.0, 0), "short": _wav(0.6, 1), "mid": _wav(4.2, 2)}
    utts = {}
    for utt, wav in wavs.items():
        sf.write(tmp_path / f"{utt}.wav", wav, SR, subtype="FLOAT")
        utts[utt] = str(tmp_path / f"{utt}.wav")
    calls = []
    forward = SpeakerModel.forward
    monkeypatch.setattr(SpeakerModel, "forward", lambda self, wav: calls.append(tuple(wav.shape)) or forward(self, wav))
    extract_embeddings(checkpoint, utts, tmp_path / "out", num_workers=0, progress=False)
    assert calls == [(1, len(wavs[u])) for u in utts]  # one pass per utterance, the whole of it
    reference, _ = load_model_checkpoint(checkpoint)
    stored = dict(kaldiio.load_scp(str(tmp_path / "out" / "xvector.scp")))
    monkeypatch.setattr(SpeakerModel, "forward", forward)
    for utt, wav in wavs.items():
        with torch.no_grad():
            expected = reference(torch.from_numpy(wav)[None]).numpy()
        assert stored[utt].shape == (1, 8)
        np.testing.assert_allclose(stored[utt], expected, rtol=0, atol=1e-4)


def test_api_embeds_whole_utterances_and_scores_plain_cosine(checkpoint):
    import svmix

    api = svmix.load_model(checkpoint)
    assert api.one_pass and api.num_segments == 1
    a, b = _wav(7.5, 3), _wav(2.0, 4)
    segments = api.embed(a, segments=True)
    assert segments.shape == (1, 8)
    ea, eb = api.embed(a), api.embed(b)
    assert api.score(a, b) == pytest.approx(float(ea @ eb), abs=1e-6)


def test_fixed_length_formats_refuse_a_one_pass_model(checkpoint, tmp_path):
    from svmix.bin.export import main

    for fmt in ("onnx", "torchscript"):
        result = CliRunner().invoke(main, ["--model", str(checkpoint), "--format", fmt, "--out", str(tmp_path / f"m.{fmt}")])
        assert result.exit_code == 1
        line = one_error_line(result)
        assert "a one-pass model ('svmixer_anylen' encoder) takes inputs of any length" in line
        assert f"--format {fmt} writes fixed-length segment embedders, --format pt2 exports it" in line
        assert not (tmp_path / f"m.{fmt}").exists()


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The any-length model as a pt2 program (svmix-export), next to its checkpoint, and the CLI's output."""
    from svmix.bin.export import main

    model_dir = tmp_path_factory.mktemp("anylen_pt2")
    (model_dir / "model.pt").write_bytes(checkpoint.read_bytes())
    result = CliRunner().invoke(main, ["--model", str(model_dir), "--format", "pt2", "--out", str(model_dir / "model.pt2")])
    assert result.exit_code == 0, result.output
    return model_dir, result.output


def test_pt2_export_embeds_any_length_in_one_program(checkpoint, exported):
    """One exported program for 0.1 s to beyond the window count it was traced with, at several batch
    sizes, equal to the eager model (window counts 1, 2, 3 and 8; lengths on and off window edges)."""
    from svmix.export import load_exported_program

    model_dir, output = exported
    assert "input (B, N = 1600..57600000)" in output and "max abs difference to PyTorch" in output
    module, metadata = load_exported_program(model_dir / "model.pt2")
    assert metadata["one_pass"] == "true" and metadata["min_samples"] == "1600"
    assert metadata["max_samples"] == str(3600 * SR) and "one pass" in metadata["segment_rule"]
    reference, _ = load_model_checkpoint(checkpoint)
    g = torch.Generator().manual_seed(3)
    for batch, samples in ((1, 1600), (2, 5000), (1, SR), (3, SR + 1), (1, 2 * SR - 321), (2, 3 * SR), (1, 8 * SR + 99)):
        wav = 0.1 * torch.randn(batch, samples, generator=g)
        with torch.inference_mode():
            torch.testing.assert_close(module(wav), reference(wav), rtol=0, atol=1e-4)


def test_pt2_runtime_embeds_whole_utterances_in_extract_and_the_api(checkpoint, exported, tmp_path):
    """svmix-extract --runtime pt2 and load_model(runtime="pt2") embed each utterance whole, as the
    eager model does; an utterance under the export's 0.1 s is an error naming it (or, with
    --skip-bad, skipped)."""
    import soundfile as sf

    import svmix
    from svmix.bin.extract import main as extract_cli

    model_dir, _ = exported
    wavs = {"long": _wav(7.3, 0), "short": _wav(0.4, 1), "mid": _wav(2.2, 2), "tiny": _wav(0.05, 3)}
    for utt, wav in wavs.items():
        (tmp_path / utt).mkdir()
        sf.write(tmp_path / utt / f"{utt}.wav", wav, SR, subtype="FLOAT")
        sf.write(tmp_path / f"{utt}.wav", wav, SR, subtype="FLOAT")
    args = ["--model", str(model_dir), "--runtime", "pt2", "--num-workers", "0"]
    result = CliRunner().invoke(extract_cli, args + ["--wav-dir", str(tmp_path / "tiny"), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 1
    assert "utterance tiny" in one_error_line(result)
    assert "800 samples, shorter than the 1600 samples this one-pass embedder takes" in one_error_line(result)
    wav_dir = tmp_path / "all"
    wav_dir.mkdir()
    for utt in wavs:
        (tmp_path / f"{utt}.wav").rename(wav_dir / f"{utt}.wav")
    result = CliRunner().invoke(extract_cli, args + ["--wav-dir", str(wav_dir), "--out", str(tmp_path / "out"), "--skip-bad"])
    assert result.exit_code == 0, result.output
    stored = dict(kaldiio.load_scp(str(tmp_path / "out" / "xvector.scp")))
    assert sorted(stored) == ["long", "mid", "short"]
    api = svmix.load_model(model_dir, runtime="pt2")
    assert api.one_pass
    reference, _ = load_model_checkpoint(checkpoint)
    for utt in stored:
        with torch.no_grad():
            expected = reference(torch.from_numpy(wavs[utt])[None]).numpy()
        assert stored[utt].shape == (1, 8)
        np.testing.assert_allclose(stored[utt], expected, rtol=0, atol=1e-4)
        np.testing.assert_allclose(api.embed(wavs[utt], segments=True), expected, rtol=0, atol=1e-4)
    with pytest.raises(SvmixError, match="^waveform: 800 samples, shorter than the 1600 samples"):
        api.embed(wavs["tiny"])


def test_an_export_without_the_window_floor_specialises_and_is_not_written(checkpoint, tmp_path, monkeypatch):
    """Without prepare_for_export, torch.export fixes the window count it was traced with: the parity
    check's longer input fails, and no file is left."""
    from svmix.export import exporter

    monkeypatch.setattr(exporter, "prepare_for_export", lambda model: model)
    out = tmp_path / "model.pt2"
    with pytest.raises(SvmixError, match=r"model\.pt2: the exported model fails on a \(3, 37340\) input .*; not written"):
        exporter.export_model(checkpoint, "pt2", out)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", range(6))
def test_a_window_floor_leaves_the_time_mlp_unchanged(case):
    """min_windows (the exported copy's floor of two) adds only weight-0 windows: the same output for
    inputs shorter than, equal to and longer than one window, padded or not."""
    rng = np.random.default_rng(case)
    window = int(rng.integers(3, 12))
    t = int(rng.choice([1, window - 1, window, window + 1, int(rng.integers(2, 4 * window))]))
    b, h = int(rng.integers(1, 4)), 5
    mlp = torch.nn.Sequential(
        torch.nn.Linear(window, 2 * window), torch.nn.GELU(), torch.nn.Linear(2 * window, window))
    y = torch.from_numpy(rng.standard_normal((b, h, t)).astype(np.float32))
    lengths = None if case % 2 else torch.from_numpy(rng.integers(1, t + 1, size=b))
    with torch.no_grad():
        one = windowed_time_mlp(mlp, y, window, lengths)
        for floor in (2, 3):
            torch.testing.assert_close(windowed_time_mlp(mlp, y, window, lengths, min_windows=floor), one,
                                       rtol=0, atol=1e-6)
