"""The tools' long loops report through svmix.utils.progress: off a terminal no carriage-return stream
reaches stderr, and the log gets periodic lines with rate and ETA plus a closing line; training writes
them into the experiment's train.log."""
import logging
import types

import pytest
import yaml

from conftest import make_datadir
from svmix.data.datadir import DataDir
from svmix.utils import progress as progress_mod

INTERVAL = progress_mod.DEFAULT_EVERY


@pytest.fixture
def off_terminal(monkeypatch):
    """stderr is not a terminal, and every clock reading is one log interval after the previous one
    (so each update is due a log line). Yields the messages of the ``svmix.progress`` logger."""
    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: False)
    now = [0.0]

    def monotonic():
        now[0] += INTERVAL
        return now[0]

    monkeypatch.setattr(progress_mod, "time", types.SimpleNamespace(monotonic=monotonic))
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("svmix.progress")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _scan(data, tmp_path, progress):
    from svmix.data.audio import scan_audio

    scan_audio(DataDir(data).wav_scp, progress=progress)
    return "checking audio", "file", len(DataDir(data).wav_scp)


def _validate(data, tmp_path, progress):
    from svmix.data.validate import validate_datadir

    validate_datadir(data, progress=progress)
    return "checking audio", "file", len(DataDir(data).wav_scp)


def _synthesize(data, tmp_path, progress):
    from svmix.data.augment_resources import synthesize

    if not progress:
        pytest.skip("synthesis always reports progress")
    synthesize("noise", tmp_path / "augment", count=3, seed=0, seconds=(0.1, 0.2))
    return "synthesizing noise", "clip", 3


def _preload(data, tmp_path, progress):
    from svmix.train.dataset import TrainingSet

    wav = DataDir(data).wav_scp
    TrainingSet(list(wav), list(wav.values()), [0] * len(wav), segment_samples=16000, seq_len=49,
                preload=True, progress=progress)
    return "loading audio", "utt", len(wav)


def _teacher_eval(data, tmp_path, progress):
    from svmix.teachers.mini import _evaluation_trials, evaluate_teacher

    class Teacher:  # hidden states of two "layers", made of the waveform
        num_layers = 1

        def __call__(self, wav):
            frames = wav[:, :1600].reshape(1, 10, 160)
            return [frames, frames.abs()]

    evaluate_teacher(Teacher(), data, progress=progress)
    labelled, _ = _evaluation_trials(data)
    return "evaluating teacher", "utt", len({t.enroll for t in labelled} | {t.test for t in labelled})


TOOLS = {"scan_audio": _scan, "validate_datadir": _validate, "synthesize": _synthesize,
         "preload_audio": _preload, "evaluate_teacher": _teacher_eval}


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_logs_rate_and_eta_and_no_carriage_returns(tool, off_terminal, tmp_path, capfd):
    data = make_datadir(tmp_path / "data", num_speakers=2, utts_per_speaker=2, seconds=(1.0, 1.2))
    desc, unit, total = TOOLS[tool](data, tmp_path, progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    periodic = [m for m in off_terminal if m.startswith(f"{desc}: ") and "ETA" in m]
    assert periodic and all(f" {unit}/s" in m and f"/{total} {unit} (" in m for m in periodic)
    assert off_terminal[-1].startswith(f"{desc}: {total}/{total} {unit} in ")


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_without_progress_is_silent(tool, off_terminal, tmp_path, capfd):
    data = make_datadir(tmp_path / "data", num_speakers=2, utts_per_speaker=2, seconds=(1.0, 1.2))
    TOOLS[tool](data, tmp_path, progress=False)
    assert off_terminal == []
    assert "\r" not in capfd.readouterr().err


def test_mini_teacher_training_logs_steps_with_eta(off_terminal, tmp_path, one_thread, capfd):
    from svmix.teachers.mini import load_config, train_mini_teacher

    config = tmp_path / "teacher.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "model": {
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "conv_dim": [8] * 7, "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2},
        "train": {"steps": 3, "batch_size": 2, "crop_seconds": 0.5, "warmup_steps": 1, "log_every": 1}}))
    data = make_datadir(tmp_path / "data", num_speakers=2, utts_per_speaker=2, seconds=(1.0, 1.2))
    # no time limit: the fake clock is the progress meter's only
    train_mini_teacher(data, tmp_path / "teacher", load_config(config), max_minutes=60, progress=True)
    steps = [m for m in off_terminal if m.startswith("training mini teacher: ")]
    assert steps[0].startswith("training mini teacher: 1/3 step (33%), ") and "step/s, ETA " in steps[0]
    assert steps[-1].startswith("training mini teacher: 3/3 step in ")
    assert "\r" not in capfd.readouterr().err


def test_training_writes_periodic_progress_to_train_log(off_terminal, tmp_path, one_thread, capfd):
    from test_train_e2e import TINY_MODEL, tiny_teacher

    from svmix.train.config import resolve_config
    from svmix.train.trainer import train

    data = make_datadir(tmp_path / "data", num_speakers=2, utts_per_speaker=3, seconds=(1.0, 1.5))
    config = resolve_config({"model": TINY_MODEL, "train": {"batch_size": 2, "max_steps": 3, "log_every": 1,
                                                             "num_workers": 0, "seed": 0}})
    train(config, data, tmp_path / "exp", teacher=tiny_teacher(), progress=True)
    log = (tmp_path / "exp" / "train.log").read_text()
    assert "\r" not in log and "\r" not in capfd.readouterr().err
    lines = [line.split("] ", 1)[1] for line in log.splitlines() if "[svmix.progress] train: " in line]
    assert lines[0].startswith("train: 1/3 step (33%), ") and "step/s, ETA " in lines[0]
    assert lines[-1].startswith("train: 3/3 step in ")
