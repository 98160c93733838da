"""Large-margin fine-tuning: svmix-train --init-from a trained student, a margin ramp, crop lengths."""
import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import make_datadir, one_error_line
from svmix.bin.train import main as train_cli
from svmix.checkpoint import read_checkpoint
from svmix.train.config import load_train_config
from test_train_e2e import TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = {"batch_size": 4, "log_every": 1, "val_every": 100, "num_workers": 0, "seed": 3, "kd": {"name": None},
        "augment": None, "early_stopping": None}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A tiny student trained for 2 steps (no teacher), and its data."""
    root = tmp_path_factory.mktemp("lmft")
    data = make_datadir(root / "train", num_speakers=3, utts_per_speaker=3, seconds=(1.2, 3.0), trials=False)
    config = root / "base.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {**BASE, "max_steps": 2}}))
    result = CliRunner().invoke(train_cli, ["--config", str(config), "--data", str(data), "--exp", str(root / "base"),
                                            "--no-progress"])
    assert result.exit_code == 0, result.output
    return root, data


def lmft(root, data, exp, *overrides, model_config=None):
    args = ["--config", "conf/lmft_mini.yaml", "--data", str(data), "--exp", str(root / exp), "--init-from",
            str(root / "base"), "--max-steps", "2", "--no-progress", "--override", "train.batch_size=4",
            "--override", "train.num_workers=0", "--override", "train.log_every=1",
            "--override", "train.margin_ramp.steps=2", *[w for o in overrides for w in ("--override", o)]]
    if model_config is not None:
        args += ["--model-config", str(model_config)]
    return CliRunner().invoke(train_cli, args)


def test_lmft_config_is_valid_and_says_what_it_does():
    train = load_train_config("conf/lmft_mini.yaml")["train"]
    assert train["aam"]["margin"] > train["margin_ramp"]["start"] and train["augment"] is None
    assert train["kd"]["name"] is None and train["optimizer"]["lr"] < 1e-3


def test_two_step_lmft_continues_from_the_student_with_a_ramped_margin(student):
    root, data = student
    # With a frozen learning rate LMFT must return the initial student's weights unchanged.
    result = lmft(root, data, "frozen", "train.optimizer.lr=0.0")
    assert result.exit_code == 0, result.output
    base, frozen = read_checkpoint(root / "base"), read_checkpoint(root / "frozen")
    assert frozen["config"] == base["config"] and frozen["init_from"] == str(root / "base")
    for key, value in base["state_dict"].items():
        if "running_" not in key and not key.endswith("num_batches_tracked"):  # BatchNorm statistics move
            assert torch.equal(frozen["state_dict"][key], value), key
    result = lmft(root, data, "tuned")
    assert result.exit_code == 0, result.output
    tuned = read_checkpoint(root / "tuned")
    assert any(not torch.equal(tuned["state_dict"][k], v) for k, v in base["state_dict"].items())
    records = [json.loads(line) for line in (root / "tuned" / "metrics.jsonl").read_text().splitlines()]
    margins = [r["margin"] for r in records if r["type"] == "train"]
    assert margins == pytest.approx([0.2, 0.3])  # steps 0 and 1 of a 2-step ramp 0.2 -> 0.4
    log = (root / "tuned" / "train.log").read_text()
    assert f"AAM classifier of {root / 'base'}" in log  # same speakers: the classifier continues too


def test_longer_crops_are_refused_for_svmixer_and_used_by_the_transformer(student, tmp_path):
    root, data = student
    result = lmft(root, data, "long", "train.crop_seconds=2.0")
    assert "cannot train on other crops" in one_error_line(result, "train.crop_seconds", "svmixer")
    transformer = {**TINY_MODEL, "encoder": {"name": "transformer", "num_layers": 1, "num_heads": 2, "ffn_dim": 16,
                                              "pos_conv_kernel": 4, "pos_conv_groups": 2}}
    config = tmp_path / "tr.yaml"
    config.write_text(yaml.safe_dump({"model": transformer, "train": {**BASE, "max_steps": 1}}))
    result = CliRunner().invoke(train_cli, ["--config", str(config), "--data", str(data), "--exp",
                                            str(tmp_path / "tr"), "--no-progress"])
    assert result.exit_code == 0, result.output
    from svmix.models import build_model
    from svmix.train.trainer import training_crop

    model = build_model(transformer)
    samples, frames = training_crop(model, 2.0)
    assert samples == 32000 and frames > model.seq_len
    states = model.hidden_states(torch.zeros(2, samples))
    assert states.shape[2] == frames
    result = CliRunner().invoke(train_cli, ["--config", "conf/lmft_mini.yaml", "--data", str(data), "--exp",
                                            str(tmp_path / "tr_lmft"), "--init-from", str(tmp_path / "tr"),
                                            "--max-steps", "1", "--no-progress", "--override", "train.batch_size=4",
                                            "--override", "train.num_workers=0", "--override",
                                            "train.crop_seconds=2.0"])
    assert result.exit_code == 0, result.output
