"""The baselines of docs/method.md §Baselines: the frozen teacher + backend, ECAPA-TDNN on filterbanks,
and the mean-MFCC floor; and the frontend registry that the first two are entries of."""
import json
import shutil

import kaldiio
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import ROOT, TINY_TEACHER_HF, make_datadir, make_tiny_teacher, one_error_line
from svmix.checkpoint import load_model_checkpoint, save_model
from svmix.errors import SvmixError
from svmix.models import build_model, resolve_model_config
from svmix.models.fbank import StackedFbank
from svmix.profiling import profile_model
from svmix.teachers import load_teacher
from svmix.train.config import read_yaml

CONF = ROOT / "conf" / "model"


def shipped(name, **model):
    """A shipped model config with some keys replaced (a tiny teacher, a short segment)."""
    config = read_yaml(CONF / f"{name}.yaml", "model config")["model"]
    for key, value in model.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


@pytest.fixture
def teacher_dir(tmp_path):
    return make_tiny_teacher(tmp_path / "teacher")


def teacher_config(path, **extra):
    return shipped("teacher_ecapa", hidden=TINY_TEACHER_HF["hidden_size"], segment_seconds=1.0,
                   num_eval_segments=2, frontend={"path": str(path)}, **extra)


# ---------------------------------------------------------------- the frontend registry
def test_old_configs_without_a_frontend_name_are_the_conv_frontend_with_identical_results():
    old = {"hidden": 16, "embed_dim": 8, "segment_seconds": 1.0, "frontend": {"channels": 8},
           "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8}, "backend": {"name": "linear"}}
    new = {**old, "frontend": {"name": "conv", "channels": 8}}
    assert resolve_model_config(old) == resolve_model_config(new)
    assert resolve_model_config(old)["frontend"]["name"] == "conv"
    assert resolve_model_config({})["frontend"]["channels"] == 512  # the default frontend's own default
    models = []
    for config in (old, new):
        torch.manual_seed(0)
        models.append(build_model(config).eval())
    wav = torch.randn(2, 16000)
    assert models[0].state_dict().keys() == models[1].state_dict().keys()
    assert torch.equal(models[0](wav), models[1](wav))
    assert any(k.startswith("frontend.feature_extractor.conv_layers.0") for k in models[0].state_dict())


@pytest.mark.parametrize("frontend,message", [
    ({"name": "nope"}, "model.frontend.name: unknown frontend 'nope'; known: conv, fbank, fbank_projected, teacher"),
    ({"name": "fbank", "channels": 8}, "model.frontend: unknown key 'channels' for frontend 'fbank'"),
    ({"name": "teacher", "path": "no/such/teacher"}, "model.frontend.path: teacher 'no/such/teacher'")])
def test_frontend_config_errors_name_the_key(frontend, message):
    with pytest.raises(SvmixError) as info:
        resolve_model_config({"frontend": frontend})
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# ---------------------------------------------------------------- teacher + backend
def test_teacher_backend_states_are_the_frozen_teachers_on_its_normalised_input(teacher_dir, one_thread):
    config = resolve_model_config(teacher_config(teacher_dir))
    recorded = config["frontend"]["teacher"]
    assert recorded["normalize_waveform"] is True and recorded["params"]["encoder_num_layers"] == 2
    assert recorded["fingerprint"].startswith("sha256:")
    assert resolve_model_config(config) == config  # closed: resolves to itself, reading nothing
    assert config["backend"] == resolve_model_config(shipped("svmixer_mini"))["backend"]  # the students' backend

    model = build_model(config).train()  # training mode: the teacher still runs in eval mode
    assert not model.frontend.teacher.training and model.backend.training
    teacher = load_teacher(teacher_dir)
    wav = 0.1 * torch.randn(3, model.segment_samples) + 0.05  # an offset and scale the teacher normalises away
    states = model.hidden_states(wav)
    assert states.shape == (3, 3, 49, 32) and model.seq_len == 49
    expected = torch.stack(teacher(wav), dim=1)  # SSLTeacher normalises, then runs
    assert torch.allclose(states, expected, atol=1e-5)
    assert torch.equal(states, model.hidden_states(wav))  # no dropout
    assert torch.allclose(model.hidden_states(3 * wav), states, atol=1e-4)  # input normalised per segment
    assert model.backend.layer_sum.weights.shape[1] == 3  # L + 1 states weighted

    emb = model(wav)
    assert emb.shape == (3, 192)
    emb.square().sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {f"backend.{n}" for n, _ in model.backend.named_parameters()}
    assert not any(p.requires_grad for p in model.frontend.parameters())


def test_teacher_backend_checkpoint_needs_no_teacher_dir(teacher_dir, tmp_path, one_thread):
    model = build_model(teacher_config(teacher_dir)).eval()
    wav = 0.1 * torch.randn(2, model.segment_samples)
    with torch.no_grad():
        expected = model(wav)
    save_model(tmp_path / "model.pt", model)
    shutil.rmtree(teacher_dir)
    loaded, ckpt = load_model_checkpoint(tmp_path / "model.pt")
    assert ckpt["config"]["frontend"]["path"] == str(teacher_dir)
    with torch.no_grad():
        assert torch.allclose(loaded(wav), expected, atol=1e-6)
    result = profile_model(ckpt["config"])  # sizes from the recorded architecture alone
    teacher = loaded.frontend.teacher.model
    cnn = sum(p.numel() for m in (teacher.feature_extractor, teacher.encoder.feature_projection)
              for p in m.parameters())
    parts = result["parts"]
    assert parts["frontend"]["params"] == cnn and parts["frontend"]["gmacs"] > 0
    assert parts["encoder"]["params"] == sum(p.numel() for p in teacher.encoder.transformer.parameters())
    assert len(parts["encoder"]["layers"]) == 2 and parts["encoder"]["gmacs"] > sum(
        layer["gmacs"] for layer in parts["encoder"]["layers"])  # + the position convolution
    assert result["params"] == sum(p.numel() for p in loaded.parameters())
    with pytest.raises(SvmixError, match="model.frontend.path: teacher"):  # training needs the weights
        build_model(ckpt["config"])


def test_a_changed_teacher_or_a_mismatched_config_is_an_error(teacher_dir, tmp_path):
    config = resolve_model_config(teacher_config(teacher_dir))
    make_tiny_teacher(teacher_dir, seed=1)  # other weights at the same path
    with pytest.raises(SvmixError, match="is not the one this config records .*fingerprint"):
        build_model(config)
    with pytest.raises(SvmixError, match=r"model.hidden=64: the 'teacher' frontend gives 32-dim frames"):
        build_model({**config, "hidden": 64}, pretrained=False)
    encoder = resolve_model_config(shipped("svmixer_mini"))["encoder"]
    with pytest.raises(SvmixError, match="model.encoder.name: .* use the 'identity' encoder"):
        build_model({**config, "encoder": encoder}, pretrained=False)


def _train_cli(tmp_path, model_config, data, *extra):
    from svmix.bin.train import main

    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"model": model_config}))
    exp = tmp_path / "exp"
    args = ["--config", str(ROOT / "conf" / "train_mini.yaml"), "--model-config", str(path), "--data", str(data),
            "--exp", str(exp), "--no-progress", "--override", "train.kd.lambda=0",
            "--override", "train.batch_size=2", "--override", "train.max_steps=2", "--override", "train.num_workers=0",
            "--override", "train.log_every=1", *extra]
    result = CliRunner().invoke(main, args)
    return result, exp


@pytest.fixture(params=["conv", "fbank"])
def any_teacher_dir(request, tmp_path):
    """A tiny teacher of each feature extractor; the filterbank one as the shipped mini-world teacher is."""
    if request.param == "conv":
        return make_tiny_teacher(tmp_path / "teacher")
    return make_tiny_teacher(tmp_path / "teacher", do_normalize=False, svmix_feature_extractor="fbank")


def test_teacher_backend_trains_with_lambda_zero_and_no_teacher_cache(any_teacher_dir, tmp_path, one_thread):
    data = make_datadir(tmp_path / "d", num_speakers=2, utts_per_speaker=2, seconds=(1.2, 1.5))
    result, exp = _train_cli(tmp_path, teacher_config(any_teacher_dir), data)
    assert result.exit_code == 0, (result.output, result.exception)
    saved = yaml.safe_load((exp / "config.yaml").read_text())
    assert saved["train"]["kd"]["lambda"] == 0 and saved["train"]["kd"]["layers"] is None
    records = [yaml.safe_load(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2]
    assert all(r["kd"] == 0 for r in records if r["type"] == "train")
    fbank = json.loads((any_teacher_dir / "config.json").read_text()).get("svmix_feature_extractor") == "fbank"
    shutil.rmtree(any_teacher_dir)
    model, ckpt = load_model_checkpoint(exp)  # self-contained: the teacher's weights are inside
    assert ckpt["step"] == 2 and model.frontend.teacher.num_layers == 2
    assert isinstance(model.frontend.teacher.model.feature_extractor, StackedFbank) == fbank


def test_lambda_zero_builds_no_kd_head_and_ignores_a_given_teacher(tmp_path):
    from svmix.train.objective import DistillationObjective, kd_active

    assert not kd_active({"name": "last_mse", "lambda": 0.0}) and not kd_active({"name": None, "lambda": 1.0})
    assert kd_active({"name": "last_mse", "lambda": 0.5})
    student = build_model({"hidden": 16, "embed_dim": 8, "segment_seconds": 1.0, "frontend": {"channels": 8},
                           "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8}, "backend": {"name": "linear"}})
    aam = {"name": "aam_topk"}
    objective = DistillationObjective(student, [2, 2], aam, {"name": "last_mse", "layers": None, "lambda": 0.0})
    assert objective.kd is None
    out = objective(torch.randn(2, 16000), torch.tensor([0, 1]))
    assert out["kd"] == 0 and torch.equal(out["loss"], out["aam"])


# ---------------------------------------------------------------- ECAPA-TDNN on filterbanks
def test_fbank_frontend_is_torchaudios_kaldi_fbank_batched():
    from torchaudio.compliance.kaldi import fbank

    model = build_model(shipped("ecapa_fbank"), pretrained=False)
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(3, 16000, generator=g)
    wav[1] += 0.3 * torch.sin(torch.arange(16000) / 7.0)  # one tonal, non-zero-mean segment
    feats = model.frontend(wav)
    assert feats.shape == (3, 98, 80) and model.frontend.num_frames(16000) == 98
    for i in range(3):
        reference = fbank(wav[i:i + 1], num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0,
                          sample_frequency=16000.0)
        assert torch.allclose(feats[i], reference, atol=1e-3), (feats[i] - reference).abs().max()


def test_ecapa_fbank_is_a_c512_ecapa_that_trains_without_a_teacher(tmp_path, one_thread):
    config = resolve_model_config(shipped("ecapa_fbank"))
    assert config["backend"]["channels"] == 512 and config["encoder"] == {"name": "identity"}
    model = build_model(config)
    assert model.seq_len == 298  # 3 s: (48000 - 400) // 160 + 1 frames
    result = profile_model(config, 3.0)
    assert result["params"] == sum(p.numel() for p in model.parameters()) == result["parts"]["backend"]["params"]
    assert result["parts"]["frontend"]["params"] == 0 and result["parts"]["encoder"]["params"] == 0
    assert 6.1e6 < result["params"] < 6.3e6  # WeSpeaker's ECAPA c512 has about 6.2M

    small = shipped("ecapa_fbank", segment_seconds=1.0)
    model = build_model(small).train()
    wav = 0.1 * torch.randn(2, model.segment_samples)
    emb = model(wav)
    assert emb.shape == (2, 192)
    emb.square().sum().backward()
    assert all(p.grad is not None for p in model.backend.parameters())

    data = make_datadir(tmp_path / "d", num_speakers=2, utts_per_speaker=2, seconds=(1.2, 1.5))
    result, exp = _train_cli(tmp_path, {**small, "backend": {**small["backend"], "channels": 32,
                                                              "pooled_channels": 96, "se_bottleneck": 8,
                                                              "attention_bottleneck": 8}}, data)
    assert result.exit_code == 0, (result.output, result.exception)
    model, ckpt = load_model_checkpoint(exp)
    assert ckpt["step"] == 2 and ckpt["config"]["frontend"]["name"] == "fbank"


# ---------------------------------------------------------------- mean-MFCC floor
def test_floor_writes_extract_format_embeddings_that_score(tmp_path, one_thread):
    from svmix.baselines import mean_mfcc
    from svmix.bin.floor import main as floor
    from svmix.bin.score import main as score
    from svmix.data.audio import load_audio
    from svmix.data.datadir import DataDir
    from svmix.scoring.embeddings import load_embeddings

    data = make_datadir(tmp_path / "d", num_speakers=3, utts_per_speaker=2, seconds=(1.0, 1.6))
    result = CliRunner().invoke(floor, ["--data", str(data), "--out", str(tmp_path / "floor")])
    assert result.exit_code == 0, (result.output, result.exception)
    out = tmp_path / "floor"
    summary = yaml.safe_load((out / "floor.json").read_text())
    assert summary["num_utts"] == 6 and summary["embed_dim"] == 19 and summary["keep_c0"] is False
    wav_scp = DataDir(data).wav_scp
    stored = dict(kaldiio.load_scp(str(out / "xvector.scp")))
    assert list(stored) == list(wav_scp)
    utt = next(iter(wav_scp))
    wav = load_audio(wav_scp[utt], utt)
    np.testing.assert_allclose(stored[utt], mean_mfcc(wav), rtol=1e-6)
    np.testing.assert_allclose(mean_mfcc(wav, keep_c0=True)[1:], mean_mfcc(wav), rtol=1e-6)
    assert load_embeddings(out / "xvector.scp").segmented is False  # one vector per utterance

    result = CliRunner().invoke(floor, ["--data", str(data), "--out", str(tmp_path / "floor2"), "--nj", "2",
                                        "--keep-c0"])
    assert result.exit_code == 0, (result.output, result.exception)
    kept = dict(kaldiio.load_scp(str(tmp_path / "floor2" / "xvector.scp")))
    assert all(kept[u].shape == (20,) and np.allclose(kept[u][1:], stored[u], rtol=1e-6) for u in stored)

    result = CliRunner().invoke(score, ["--trials", str(data / "trials"), "--embeddings", str(out / "xvector.scp"),
                                        "--output", str(tmp_path / "scores")])
    assert result.exit_code == 0, (result.output, result.exception)
    lines = (tmp_path / "scores").read_text().splitlines()
    assert len(lines) == 15 and all(np.isfinite(float(line.split()[-1])) for line in lines)


def test_floor_names_a_bad_utterance(tmp_path):
    from svmix.bin.floor import main as floor

    data = make_datadir(tmp_path / "d", num_speakers=2, utts_per_speaker=1, seconds=(1.0, 1.2), trials=False)
    (tmp_path / "d" / "wav" / "spk01-utt00.wav").write_bytes(b"RIFF broken")
    for nj in ("1", "2"):
        result = CliRunner().invoke(floor, ["--data", str(data), "--out", str(tmp_path / nj),
                                                            "--nj", nj])
        one_error_line(result, "spk01-utt00")
        assert not (tmp_path / nj / "floor.json").exists()
