"""Training inputs and state that a crash or a user can leave broken."""
import json

import pytest

from svmix.errors import AudioError, SvmixError
from svmix.train.checkpointing import average_checkpoints
from svmix.train.dataset import TrainingSet
from svmix.train.trainer import MetricsLog


def test_metrics_log_resume_drops_a_line_cut_by_the_kill(tmp_path):
    log = MetricsLog(tmp_path, enabled=True)
    for step in (10, 20, 30):
        log.write({"type": "train", "step": step, "loss": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "step": 4')  # killed mid-append
    log.truncate_after(20)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]
    log.close()


def test_average_rejects_malformed_best_list(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.json").write_text('{"x": 1}')
    with pytest.raises(SvmixError, match="best.json: expected a list"):
        average_checkpoints(tmp_path)


def test_training_set_checks_audio_before_training(tiny_datadir):
    from svmix.data.datadir import DataDir

    d = DataDir(tiny_datadir)
    utts = list(d.wav_scp)
    paths = list(d.wav_scp.values())
    paths[3] = str(tiny_datadir / "missing.wav")
    with pytest.raises(AudioError, match=rf"{utts[3]}.*not found.*1 bad training file"):
        TrainingSet(utts, paths, [0] * len(utts), segment_samples=48000, seq_len=149, preload=False)
