"""Self-supervised teacher pretraining: HF layout loadable by load_teacher, exact resume, time limit."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from svmix.errors import SvmixError
from svmix.teachers import load_teacher
from svmix.teachers import pretrain as pretrain_mod
from svmix.teachers.pretrain import MfccTargets, pretrain_teacher, pretrain_config, span_mask

from conftest import make_datadir

TINY = {
    "seed": 3,
    "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4},
    "kmeans": {"clusters": 8, "frames": 2000, "utterances": 20},
    "train": {"steps": 6, "batch_size": 2, "crop_seconds": 1.0, "warmup_steps": 2, "log_every": 2,
              "checkpoint_every": 2, "mix_p": 0.5, "speaker_weight": 0.5},
}


@pytest.fixture
def pool(tmp_path):
    return make_datadir(tmp_path / "pool", num_speakers=3, utts_per_speaker=2, seconds=(1.2, 1.8), trials=False)


def test_pretrained_teacher_loads_like_a_downloaded_wavlm(tmp_path, pool, one_thread):
    out = tmp_path / "teacher"
    summary = pretrain_teacher(pool, out, TINY, command="svmix-train-teacher ...", progress=False)
    teacher = load_teacher(out)
    assert teacher.num_layers == 2 and teacher.hidden_size == 32 and teacher.frame_shift == 320
    states = teacher(torch.zeros(1, 16000))
    assert len(states) == 3 and states[-1].shape == (1, 49, 32)
    card = (out / "MODEL_CARD.md").read_text()
    assert "masked prediction of 8 k-means clusters" in card and "partly supervised" in card
    assert "svmix-train-teacher ..." in card and "seed 3" in card
    assert summary["final"]["step"] == 6 and np.isfinite(summary["final"]["loss"])
    assert not (out / "pretrain_state.pt").exists()  # the shipped directory holds no training state
    # A rerun with the same config and data does nothing; another config is refused.
    before = (out / "model.safetensors").read_bytes()
    assert pretrain_teacher(pool, out, TINY, progress=False)["fingerprint"] == summary["fingerprint"]
    assert (out / "model.safetensors").read_bytes() == before
    with pytest.raises(SvmixError, match="another config"):
        pretrain_teacher(pool, out, {**TINY, "seed": 4}, progress=False)


def test_killed_pretraining_resumes_to_identical_weights(tmp_path, pool, monkeypatch, one_thread):
    pretrain_teacher(pool, tmp_path / "straight", TINY, progress=False)

    real = pretrain_mod.span_mask
    calls = {"n": 0}

    def dies_at_step_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain_mod, "span_mask", dies_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        pretrain_teacher(pool, tmp_path / "resumed", TINY, progress=False)
    state = torch.load(tmp_path / "resumed" / "pretrain_state.pt", weights_only=False)
    assert state["step"] == 4  # the last checkpoint before the kill
    monkeypatch.setattr(pretrain_mod, "span_mask", real)
    pretrain_teacher(pool, tmp_path / "resumed", TINY, progress=False)
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hist = [json.loads((tmp_path / d / "training.json").read_text())["history"] for d in ("straight", "resumed")]
    assert hist[0] == hist[1]


def test_time_limit_is_an_error_that_keeps_the_state(tmp_path, pool, monkeypatch, one_thread):
    clock = {"t": 0.0}

    def monotonic():
        clock["t"] += 30.0  # every call advances half a minute
        return clock["t"]

    monkeypatch.setattr(pretrain_mod.time, "monotonic", monotonic)
    with pytest.raises(SvmixError, match=r"time limit of 1 min reached at step \d+ of 6.*rerun"):
        pretrain_teacher(pool, tmp_path / "t", TINY, max_minutes=1, progress=False)
    assert (tmp_path / "t" / "pretrain_state.pt").exists()
    assert not (tmp_path / "t" / "model.safetensors").exists()


NUMERIC_KEYS = sorted(k for k, rule in pretrain_mod._schema().items() if type(rule).__name__ == "Num")


@pytest.mark.parametrize("key", NUMERIC_KEYS)
@pytest.mark.parametrize("bad", [-1, 10**12, "x", None, True, float("nan")])
def test_every_numeric_key_is_range_checked(key, bad):
    section, _, name = key.rpartition(".")
    rule = pretrain_mod._schema()[key]
    if rule.ok(bad):
        pytest.skip(f"{bad!r} is in range for {key}")
    override = {name: bad} if not section else {section: {name: bad}}
    with pytest.raises(SvmixError, match=re.escape(key)):
        pretrain_config(override)


def test_pretraining_keys_are_all_checked():
    assert {"train.mask_prob", "train.mix_p", "kmeans.clusters", "train.steps", "model.hidden_size"} <= set(NUMERIC_KEYS)


def test_unknown_key_is_an_error():
    with pytest.raises(SvmixError, match="unknown key 'stepz'"):
        pretrain_config({"train": {"stepz": 3}})


def test_mfcc_frames_align_with_the_conv_frontend():
    targets = MfccTargets(13)
    for n in (400, 719, 720, 16000, 48000):
        assert targets.features(torch.zeros(1, n)).shape == (1, (n - 400) // 320 + 1, 39)


def test_span_mask_masks_spans_and_is_seeded():
    a = span_mask(np.random.default_rng(0), 4, 100, 0.08, 10)
    b = span_mask(np.random.default_rng(0), 4, 100, 0.08, 10)
    assert torch.equal(a, b) and a.any(dim=1).all()
    assert 0.2 < a.float().mean() < 0.8


def test_cli_pretrain_records_the_command_and_refuses_trials(tmp_path, pool, one_thread):
    """svmix-train-teacher --pretrain: the config file and --seed/--steps reach pretrain_teacher, the
    model card records the exact command, and --trials-data (a classification-teacher option) is refused."""
    import yaml
    from click.testing import CliRunner

    from svmix.bin.train_teacher import main

    conf = tmp_path / "pretrain.yaml"
    conf.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "t"
    args = ["--pretrain", "--data", str(pool), "--out", str(out), "--config", str(conf), "--steps", "4", "--seed", "5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "training.json").read_text())
    assert summary["steps"] == 4 and summary["seed"] == 5 and summary["config"]["train"]["batch_size"] == 2
    assert "svmix-train-teacher --pretrain --data" in (out / "MODEL_CARD.md").read_text()
    assert (out / "pretrain.log").read_text().count("step 4/4") == 1
    result = CliRunner().invoke(main, args[:-4] + ["--trials-data", str(pool)])
    assert result.exit_code != 0 and "--trials-data" in result.output
    result = CliRunner().invoke(main, ["--pretrain", "--data", str(pool), "--out", str(tmp_path / "u"),
                                       "--config", str(conf), "--steps", "0"])
    assert result.exit_code != 0 and "--steps" in result.output


def _plain_sampler(channel_p, channel_db, seed=5):
    """A pretraining sampler whose only augmentation is the session channel (no noise, reverb, gain)."""
    from svmix.teachers.pretrain import PretrainSampler

    cfg = pretrain_config({"train": {"reverb_p": 0.0, "augment_p": 0.0, "gain_db": [0.0, 0.0],
                                     "channel_p": channel_p, "channel_db": channel_db}})["train"]
    return PretrainSampler([np.zeros(16000, np.float32)], [0], cfg, seed)


@pytest.mark.parametrize("seed", range(4))
def test_session_channel_augmentation_is_opt_in_seeded_and_level_preserving(seed):
    wav = np.random.default_rng(seed).standard_normal(8000).astype(np.float32)
    off = _plain_sampler(0.0, 20.0, seed)
    assert np.array_equal(off.augment(wav), wav)
    # p = 0 draws nothing: the stream is the reverb, noise and gain draws of configs without channels
    reference = np.random.default_rng(seed)
    reference.random(), reference.random(), reference.uniform(0.0, 0.0)
    assert off.rng.random() == reference.random()
    on = [_plain_sampler(1.0, 6.0, seed).augment(wav) for _ in range(2)]
    assert np.array_equal(on[0], on[1]) and not np.allclose(on[0], wav, atol=1e-3)
    assert np.max(np.abs(on[0])) == pytest.approx(np.max(np.abs(wav)), rel=1e-4)
    flat = _plain_sampler(1.0, 0.0, seed).augment(wav)  # 0 dB peaks: only the band-pass is left
    assert np.abs(np.fft.rfft(flat)[400:2000]).mean() > 0.5 * np.abs(np.fft.rfft(wav)[400:2000]).mean()


@pytest.mark.parametrize("seed", range(6))
def test_speaker_pooling_ignores_masked_frames(seed):
    """Generated states and masks: the unmasked pooling equals the mean over the frames left
    unmasked, whatever the masked frames hold; a fully masked row falls back to the plain mean."""
    rng = np.random.default_rng(seed)
    batch, frames, hidden = int(rng.integers(1, 5)), int(rng.integers(1, 30)), int(rng.integers(1, 8))
    states = torch.from_numpy(rng.standard_normal((batch, frames, hidden)).astype(np.float32))
    mask = torch.from_numpy(rng.random((batch, frames)) < rng.random())
    mask[0] = True
    pooled = pretrain_mod.speaker_pooling(states, mask)
    garbage = states.masked_fill(mask.unsqueeze(-1), 1e6)
    seen_rows = (~mask).any(dim=1)
    torch.testing.assert_close(pretrain_mod.speaker_pooling(garbage, mask)[seen_rows], pooled[seen_rows])
    for b in range(batch):
        seen = states[b][~mask[b]]
        want = seen.mean(dim=0) if len(seen) else states[b].mean(dim=0)
        torch.testing.assert_close(pooled[b], want)
    torch.testing.assert_close(pretrain_mod.speaker_pooling(states), states.mean(dim=1))


def test_unmasked_speaker_pooling_trains_and_says_so(tmp_path, pool, one_thread):
    cfg = {**TINY, "train": {**TINY["train"], "speaker_pool": "unmasked"}}
    summary = pretrain_teacher(pool, tmp_path / "t", cfg, progress=False)
    assert np.isfinite(summary["final"]["loss"])
    assert "on the unmasked frames" in summary["objective"]
    with pytest.raises(SvmixError, match="speaker_pool"):
        pretrain_config({"train": {"speaker_pool": "masked"}})
