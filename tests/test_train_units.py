"""Training building blocks: sampler, config, schedules, averaging, augmentation, crops and masks."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from svmix.checkpoint import read_checkpoint
from svmix.errors import SvmixError
from svmix.models import build_model
from svmix.train.augment import AugmentResources, Augmenter
from svmix.train.checkpointing import BestCheckpoints, average_checkpoints
from svmix.train.config import load_train_config
from svmix.train.dataset import TrainingSet, valid_frames
from svmix.train.optim import EarlyStopping, PlateauSchedule, WarmRestartSchedule, optimizer_config_at
from svmix.train.sampler import ShardedBatchSampler

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_MODEL = {"segment_seconds": 1.0, "hidden": 16, "embed_dim": 8, "frontend": {"channels": 8},
              "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8}, "backend": {"name": "linear"}}


def test_sampler_is_deterministic_sharded_and_resumable():
    labels = [i % 5 for i in range(23)]
    one = ShardedBatchSampler(labels, 6, seed=3)
    one.set_epoch(2)
    batches = list(one)
    assert len(batches) == 3 == one.batches_per_epoch  # drop_last
    again = ShardedBatchSampler(labels, 6, seed=3)
    again.set_epoch(2)
    assert list(again) == batches
    again.set_epoch(1)
    assert list(again) != batches
    ranks = [ShardedBatchSampler(labels, 6, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    for full, b0, b1 in zip(batches, *ranks):
        assert sorted(b0 + b1) == sorted(full) and len(b0) == len(b1) == 3
    one.set_epoch(2, start_batch=2)
    assert list(one) == batches[2:] and len(one) == 1
    with pytest.raises(SvmixError):
        ShardedBatchSampler(labels, 6, seed=3, world_size=4)


def test_speaker_balanced_sampler_draws_speakers_uniformly():
    labels = [0] * 90 + [1] * 10  # speaker 1 is rare
    sampler = ShardedBatchSampler(labels, 10, seed=0, speaker_balanced=True)
    drawn = [labels[i] for e in range(20) for b in (sampler.set_epoch(e) or sampler) for i, _ in b]
    assert 0.4 < np.mean(drawn) < 0.6


def test_config_include_overrides_and_errors(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "m.yaml").write_text(yaml.safe_dump({"model": TINY_MODEL}))
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump({"model_config": "model/m.yaml", "model": {"embed_dim": 12},
                                    "train": {"max_steps": 5, "kd": {"lambda": 0.5}}}))
    cfg = load_train_config(conf, ["train.batch_size=8", "train.aam.top_k=3", "train.kd.layers=[4]"])
    assert cfg["model"]["hidden"] == 16 and cfg["model"]["embed_dim"] == 12  # included, then overridden
    assert cfg["train"]["batch_size"] == 8 and cfg["train"]["aam"]["top_k"] == 3 and cfg["train"]["aam"]["scale"] == 30
    assert cfg["train"]["kd"] == {"name": "last_mse", "layers": [4], "lambda": 0.5, "target_norm": None}
    assert cfg["train"]["checkpoint_every"] == cfg["train"]["val_every"]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY_MODEL, "hidden": 24}))  # a bare model mapping works too
    assert load_train_config(conf, model_config=other)["model"]["hidden"] == 24
    with pytest.raises(SvmixError, match="train: unknown key 'bacth_size'"):
        load_train_config(conf, ["train.bacth_size=8"])
    with pytest.raises(SvmixError, match="key.sub=value"):
        load_train_config(conf, ["train.batch_size"])
    conf.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {}}))
    with pytest.raises(SvmixError, match="max_steps or epochs"):
        load_train_config(conf)


def test_shipped_train_configs_resolve():
    for name in ("train_mini", "train_paper", "train_released"):
        cfg = load_train_config(CONF / f"{name}.yaml")
        assert cfg["train"]["max_steps"] or cfg["train"]["epochs"]
    paper = load_train_config(CONF / "train_paper.yaml")["train"]
    assert {k: paper["optimizer"][k] for k in ("name", "lr", "weight_decay")} == {"name": "adamw", "lr": 2e-4, "weight_decay": 2e-5}
    assert paper["optimizer"]["betas"] == [0.9, 0.999] and paper["batch_size"] == 128  # closed: AdamW defaults too
    released = load_train_config(CONF / "train_released.yaml")["train"]
    assert released["kd"]["name"] == "distilhubert" and released["kd"]["layers"] == [8, 16, 24]


def test_cli_reports_config_errors_in_one_line(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("train: [not, a, mapping\n")
    proc = subprocess.run([sys.executable, "-m", "svmix.bin.train", "--config", str(conf), "--data", str(tmp_path),
                           "--exp", str(tmp_path / "exp")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "not valid YAML" in proc.stderr


def test_plateau_halves_after_patience_and_early_stopping():
    sched, stop = PlateauSchedule(2e-4, factor=0.5, patience=2), EarlyStopping(3)
    lrs = []
    for eer in [5.0, 4.0, 4.0, 4.5, 4.2, 4.1, 4.3]:
        sched.on_validation(eer)
        stop.update(eer)
        lrs.append(sched.lr(0))
    assert lrs == [2e-4] * 4 + [1e-4] * 3
    assert stop.should_stop and not EarlyStopping(None).should_stop
    again = PlateauSchedule(2e-4, patience=2)
    again.load_state_dict(sched.state_dict())
    assert again.lr(0) == sched.lr(0)


def test_released_warm_restart_schedule():
    s = WarmRestartSchedule(1e-4, t_0=32000, t_up=2000, eta_max=1e-3, t_mult=9, gamma=100)
    assert s.lr(0) == pytest.approx(1e-4)
    assert s.lr(1000) == pytest.approx(5.5e-4)
    assert s.lr(2000) == pytest.approx(1e-3)
    assert s.lr(17000) == pytest.approx((1e-3 + 1e-4) / 2)
    assert s.lr(31999) == pytest.approx(1e-4, abs=1e-8)
    assert s.lr(32000) == pytest.approx(1e-4)  # restart; SGD warms up to 0.1
    assert s.lr(34000) == pytest.approx(0.1)
    assert s.lr(34000 + 143000) == pytest.approx((0.1 + 1e-4) / 2)
    cfg = {"optimizer": {"name": "adamw"}, "optimizer_switch": {"at_step": 32000, "optimizer": {"name": "sgd"}}}
    assert optimizer_config_at(cfg, 31999)["name"] == "adamw" and optimizer_config_at(cfg, 32000)["name"] == "sgd"


def test_best_checkpoints_and_averaging(tmp_path):
    models = []
    best = BestCheckpoints(tmp_path, keep=2)
    for step, eer in [(10, 5.0), (20, 3.0), (30, 4.0), (40, 6.0)]:
        torch.manual_seed(step)
        model = build_model(TINY_MODEL)
        models.append(model)
        kept = best.offer(step, eer, model, {"num_speakers": 3})
        best.commit(tmp_path)
        assert kept == (step != 40)
    assert [e["step"] for e in best.entries] == [20, 30]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "best").iterdir()) == ["step00000020.pt",
                                                                                  "step00000030.pt"]
    out = average_checkpoints(tmp_path, 2)
    avg = read_checkpoint(out)
    assert avg["num_speakers"] == 3 and avg["step"] == 20 and avg["val_eer"] == 3.0
    for key, value in avg["state_dict"].items():
        a, b = models[1].state_dict()[key], models[2].state_dict()[key]
        if torch.is_floating_point(value):
            torch.testing.assert_close(value, (a + b) / 2)
        else:
            assert torch.equal(value, a)
    proc = subprocess.run([sys.executable, "-m", "svmix.bin.average", "--exp", str(tmp_path), "--num", "1",
                           "--out", str(tmp_path / "best.pt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    one = read_checkpoint(tmp_path / "best.pt")["state_dict"]
    assert all(torch.equal(v, models[1].state_dict()[k]) for k, v in one.items())


def _tone(n, seed=0):
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(np.arange(n) * 0.05) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_augmenter_types_resources_and_determinism(tmp_path):
    speech = _tone(8000)
    plain = Augmenter({"p": 0.8}, AugmentResources())
    assert set(plain.names) == {"reverb", "colored_noise", "clip"}  # no lists, no training speech
    voices = AugmentResources(other_speech=lambda rng, n, label: [_tone(9000, i) for i in range(n)])
    with_babble = Augmenter({"p": 0.8}, voices)
    assert "babble" in with_babble.names
    (tmp_path / "noise.wav").parent.mkdir(exist_ok=True)
    sf.write(tmp_path / "noise.wav", np.random.default_rng(1).standard_normal(20000).astype(np.float32) * 0.1, 16000)
    (tmp_path / "noise.scp").write_text(f"n1 {tmp_path / 'noise.wav'}\n")
    (tmp_path / "music.scp").write_text("")  # empty list: skipped
    with_noise = Augmenter({"p": 1.0}, AugmentResources(tmp_path))
    assert set(with_noise.names) == {"reverb", "colored_noise", "clip", "noise"}
    for name, aug in with_noise.augmentations.items():
        out = aug(speech, np.random.default_rng(5), 0)
        assert out.shape == speech.shape and out.dtype == np.float32 and not np.allclose(out, speech), name
    clipped = with_noise.augmentations["clip"](speech, np.random.default_rng(0), 0)
    assert np.abs(clipped).max() <= 0.9 * np.abs(speech).max() + 1e-6
    a = with_noise(speech, np.random.default_rng(11))
    assert np.array_equal(a, with_noise(speech, np.random.default_rng(11)))
    assert Augmenter({"p": 0.0}, AugmentResources(tmp_path))(speech, np.random.default_rng(0)) is speech
    with pytest.raises(SvmixError, match="train.augment: unknown key 'snr'"):
        Augmenter({"snr": 3}, AugmentResources())


class FrameIndexCache:
    """A stand-in cache whose frame j of every layer holds the value j (to check alignment)."""
    layers, hidden_size, frame_shift = [3, 5], 2, 320

    def __init__(self, lengths):
        self.lengths = lengths

    def num_frames(self, utt):
        return valid_frames(self.lengths[utt])

    def frames(self, utt, start, n):
        assert start + n <= self.num_frames(utt)
        return np.broadcast_to(np.arange(start, start + n, dtype=np.float32)[None, :, None], (2, n, 2)).copy()


def test_crops_align_with_teacher_frames_and_mask_padding(tmp_path):
    lengths = {"long": 40000, "short": 9000}
    paths = []
    for utt, n in lengths.items():
        sf.write(tmp_path / f"{utt}.wav", _tone(n, 3), 16000, subtype="FLOAT")
        paths.append(str(tmp_path / f"{utt}.wav"))
    ds = TrainingSet(list(lengths), paths, [0, 1], segment_samples=16000, seq_len=49,
                     cache=FrameIndexCache(lengths), cache_layers=[5], return_clean=True, preload=True)
    full = ds.load(0)
    for seed in range(5):
        ex = ds[(0, seed)]
        k = int(ex["target"][0, 0, 0])
        assert ex["target"].shape == (1, 49, 2) and ex["mask"].all()
        assert torch.equal(ex["target"][0, :, 0], torch.arange(k, k + 49, dtype=torch.float32))
        assert np.array_equal(ex["clean"].numpy(), full[320 * k: 320 * k + 16000])
        assert torch.equal(ex["wav"], ex["clean"])  # no augmenter
    short = ds[(1, 0)]
    n_valid = valid_frames(9000)
    assert short["mask"].sum() == n_valid == 27 and not short["mask"][n_valid:].any()
    assert short["target"][0, n_valid:].abs().sum() == 0
    assert np.array_equal(short["clean"].numpy()[:9000], ds.load(1)) and short["clean"].shape == (16000,)
    assert np.array_equal(short["clean"].numpy()[9000:18000 - 2000], ds.load(1)[:7000])  # wrap-padded
