"""Progress meters: periodic log lines with rate and ETA off a terminal, a bar only on one."""
import logging

import pytest

from svmix.utils import progress as progress_mod
from svmix.utils.progress import Progress, track


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", c)
    return c


def test_off_terminal_logs_every_interval_with_rate_and_eta(clock, caplog, monkeypatch):
    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="svmix.progress")
    with Progress(total=100, desc="work", unit="utt", every=10) as bar:
        for _ in range(100):
            clock.t += 1.0
            bar.update()
    lines = [r.getMessage() for r in caplog.records]
    # 100 s of work, a line every 10 s, plus the closing line.
    assert len(lines) == 11
    assert lines[0] == "work: 10/100 utt (10%), 1 utt/s, ETA 1m30s"
    assert lines[-1] == "work: 100/100 utt in 1m40s, 1 utt/s"


def test_resumed_meter_counts_only_this_runs_rate(clock, caplog, monkeypatch):
    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="svmix.progress")
    bar = Progress(total=10, initial=8, desc="train", unit="step", every=1)
    clock.t += 4.0
    bar.update(2)
    assert caplog.records[0].getMessage() == "train: 10/10 step (100%), 0.5 step/s, ETA 0s"


def test_disabled_meter_is_silent(clock, caplog, monkeypatch):
    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="svmix.progress")
    assert list(track(range(5), desc="x", enabled=False, every=0.5)) == [0, 1, 2, 3, 4]
    assert caplog.records == []


def test_terminal_bar_keeps_lines_out_of_the_stream_but_in_files(clock, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: True)
    logger = logging.getLogger("svmix")
    stream, log_file = logging.StreamHandler(), logging.FileHandler(tmp_path / "x.log")
    logger.addHandler(stream)
    logger.addHandler(log_file)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with Progress(total=4, desc="cache", unit="utt", every=1) as bar:
            for _ in range(4):
                clock.t += 1.0
                bar.update()
    finally:
        logger.removeHandler(stream)
        logger.removeHandler(log_file)
        log_file.close()
        logger.setLevel(old_level)
    text = (tmp_path / "x.log").read_text().splitlines()
    assert text[-1] == "cache: 4/4 utt in 4s, 1 utt/s"
    assert len(text) == 5
    # The terminal shows tqdm's bar, not the log lines (they would break it).
    err = capsys.readouterr().err
    assert "4/4" in err and "utt in 4s" not in err and "ETA" not in err


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every"):
        Progress(total=1, every=0)
