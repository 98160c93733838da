"""The mini teacher: trains for a few steps, saves an HF-layout WavLM that stage 2 loads, evaluates."""
import json

import pytest
import torch
from click.testing import CliRunner

from conftest import make_datadir
from svmix.errors import SvmixError
from svmix.teachers import load_teacher
from svmix.teachers.mini import load_config, train_mini_teacher

TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
TINY_TRAIN = {"steps": 3, "batch_size": 2, "crop_seconds": 1.0, "warmup_steps": 1, "log_every": 1}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "teacher_tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"seed": 3, "model": TINY_MODEL, "train": TINY_TRAIN}))
    return load_config(path)



def test_mini_teacher_trains_saves_hf_layout_and_evaluates(tmp_path, tiny_config, one_thread):
    data = make_datadir(tmp_path / "corpus", num_speakers=3, utts_per_speaker=2, seconds=(1.2, 2.0))
    summary = train_mini_teacher(data, tmp_path / "teacher", tiny_config, trials_data=data, progress=False)
    assert summary["steps_done"] == 3 == summary["steps"]
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert config["model_type"] == "wavlm" and config["num_hidden_layers"] == 2
    teacher = load_teacher(tmp_path / "teacher")
    assert (teacher.num_layers, teacher.hidden_size, teacher.frame_shift) == (2, 32, 320)
    evaluation = json.loads((tmp_path / "teacher" / "eval.json").read_text())
    assert set(evaluation["eer_per_layer"]) == {"0", "1", "2"} and 0 <= evaluation["eer"] <= 100
    assert evaluation["eer"] == evaluation["eer_per_layer"]["2"] and evaluation["n_target"] == 3

    transformers = pytest.importorskip("transformers")
    reference = transformers.WavLMModel.from_pretrained(tmp_path / "teacher").eval()  # really the HF layout
    wav = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        out = reference(wav, output_hidden_states=True)
    for mine, theirs in zip(teacher(wav), list(out.hidden_states[:-1]) + [out.last_hidden_state]):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def test_mini_teacher_is_deterministic_given_the_seed(tmp_path, tiny_config, one_thread):
    data = make_datadir(tmp_path / "corpus", num_speakers=2, utts_per_speaker=2, seconds=(1.2, 1.6))
    train_mini_teacher(data, tmp_path / "a", tiny_config, progress=False)
    train_mini_teacher(data, tmp_path / "b", tiny_config, progress=False)
    tiny_config["seed"] = 4
    train_mini_teacher(data, tmp_path / "c", tiny_config, progress=False)
    weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in "abc"]
    assert weights[0] == weights[1] != weights[2]


def test_cli_and_config_errors(tmp_path, one_thread):
    from svmix.bin.train_teacher import main

    data = make_datadir(tmp_path / "corpus", num_speakers=2, utts_per_speaker=2, seconds=(1.2, 1.6))
    import yaml

    conf = tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {**TINY_TRAIN, "steps": 50}}))
    result = CliRunner().invoke(main, ["--data", str(data), "--out", str(tmp_path / "t"), "--config", str(conf),
                                       "--steps", "2", "--seed", "1", "--trials-data", str(data)])
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output and "EER" in result.output
    assert json.loads((tmp_path / "t" / "training.json").read_text())["config"]["seed"] == 1
    conf.write_text(yaml.safe_dump({"train": {"stepz": 3}}))
    with pytest.raises(SvmixError, match="unknown key 'stepz'"):
        load_config(conf)
    result = CliRunner().invoke(main, ["--data", str(data), "--out", str(tmp_path / "t2"), "--config", str(conf)])
    assert result.exit_code == 1 and "unknown key 'stepz'" in result.output


def test_time_limit_is_an_error_not_a_shorter_training(tmp_path, tiny_config, monkeypatch, one_thread):
    from svmix.teachers import mini

    data = make_datadir(tmp_path / "corpus", num_speakers=2, utts_per_speaker=2, seconds=(1.2, 1.6))
    clock = {"t": 0.0}

    def slow_clock():
        clock["t"] += 40.0  # every look at the clock finds 40 s more
        return clock["t"]

    monkeypatch.setattr(mini.time, "time", slow_clock)
    with pytest.raises(SvmixError, match=r"time limit of 1 min reached after \d of 3 steps; nothing was saved"):
        train_mini_teacher(data, tmp_path / "teacher", tiny_config, max_minutes=1, progress=False)
    assert not (tmp_path / "teacher" / "model.safetensors").exists()
    monkeypatch.undo()
    # Without a limit the same training runs all its steps, whatever the clock says.
    assert train_mini_teacher(data, tmp_path / "teacher", tiny_config, progress=False)["steps_done"] == 3
