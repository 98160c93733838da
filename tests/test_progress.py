"""Progress meters: periodic log lines with rate and ETA off a terminal, a bar only on one."""
import logging
import sys

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


class _Pipe:
    """A stream that is not a terminal (a recipe's ``tee``)."""

    def __init__(self):
        self.lines = []

    def write(self, text):
        self.lines.extend(line for line in text.splitlines() if line)

    def flush(self):
        pass

    def isatty(self):
        return False


@pytest.fixture
def svmix_handlers(tmp_path, monkeypatch):
    """The ``svmix`` logger as ``setup_logging`` builds it, its stream a pipe, plus a log file.
    Yields (pipe, log file path); restores the logger afterwards."""
    from svmix.utils.logging import setup_logging

    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: False)
    logger = logging.getLogger("svmix")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers = []
    pipe = _Pipe()
    monkeypatch.setattr(sys, "stderr", pipe)
    setup_logging(tmp_path / "tool.log")
    try:
        yield pipe, tmp_path / "tool.log"
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.mark.parametrize("total,seconds", [(100, 100), (1000, 5000), (7, 7), (3, 300), (250, 40000)])
def test_a_pipe_gets_quarter_milestones_and_the_file_every_line(clock, svmix_handlers, total, seconds):
    """However long the work takes, stderr off a terminal gets at most three interim lines and the
    closing line; the log file gets a line every interval."""
    pipe, log_file = svmix_handlers
    step = seconds / total
    with Progress(total=total, desc="work", unit="utt", every=10) as bar:
        for _ in range(total):
            clock.t += step
            bar.update()
    in_file = [line.split("] ", 1)[1] for line in log_file.read_text().splitlines()]
    in_pipe = [line.split("] ", 1)[1] for line in pipe.lines]
    assert in_pipe[-1] == in_file[-1] and in_pipe[-1].startswith(f"work: {total}/{total} utt in ")
    assert len(in_pipe) <= 4
    assert set(in_pipe) <= set(in_file)
    assert len(in_file) - 1 == _periodic_lines(total, step, 10)
    # The pipe gets the first periodic line of each quarter passed (25%, 50%, 75%), with rate and ETA.
    periodic = in_file[:-1]
    quarters = [min(4 * int(line.split(": ", 1)[1].split("/")[0]) // total, 3) for line in periodic]
    firsts = [line for i, (line, q) in enumerate(zip(periodic, quarters)) if q > max([0] + quarters[:i])]
    assert in_pipe[:-1] == firsts
    assert all("utt/s, ETA " in line for line in firsts)
    if seconds >= 40:
        assert firsts, "a long job shows progress off a terminal"


def _periodic_lines(total, step, every):
    lines, last, t = 0, 0.0, 0.0
    for _ in range(total):
        t += step
        if t - last >= every:
            last, lines = t, lines + 1
    return lines


def test_detail_lines_reach_files_always_and_a_pipe_never(svmix_handlers):
    from svmix.utils.logging import DETAIL

    pipe, log_file = svmix_handlers
    log = logging.getLogger("svmix.train")
    log.info("step 10: loss 1.0", extra=DETAIL)
    log.info("step 50: validation EER 9.000%")
    assert [line.split("] ", 1)[1] for line in pipe.lines] == ["step 50: validation EER 9.000%"]
    assert [line.split("] ", 1)[1] for line in log_file.read_text().splitlines()] == [
        "step 10: loss 1.0", "step 50: validation EER 9.000%"]


def test_without_a_total_every_tenth_periodic_line_reaches_a_pipe(clock, svmix_handlers):
    pipe, log_file = svmix_handlers
    with Progress(desc="scan", unit="file", every=1) as bar:
        for _ in range(35):
            clock.t += 1.0
            bar.update()
    assert len(log_file.read_text().splitlines()) == 36
    assert [line.split("] ", 1)[1] for line in pipe.lines] == [
        "scan: 10 file, 1 file/s", "scan: 20 file, 1 file/s", "scan: 30 file, 1 file/s", "scan: 35 file in 35s, 1 file/s"]


def test_a_terminal_stream_gets_detail_lines(svmix_handlers, monkeypatch):
    from svmix.utils.logging import DETAIL

    pipe, _ = svmix_handlers
    monkeypatch.setattr(pipe, "isatty", lambda: True)
    logging.getLogger("svmix.train").info("step 10: loss 1.0", extra=DETAIL)
    assert [line.split("] ", 1)[1] for line in pipe.lines] == ["step 10: loss 1.0"]
