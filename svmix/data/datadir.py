"""Kaldi-style data directories: wav.scp, utt2spk, spk2utt, utt2dur and trials.

Trials come in two formats, detected line by line: Kaldi ``<enroll> <test> target|nontarget`` and
VoxCeleb ``1|0 <enroll> <test>``. Unlabelled ``<enroll> <test>`` lists are allowed for scoring, but a
list is labelled on every line or on none. Every list file must be UTF-8 text.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from svmix.errors import SvmixError
from svmix.utils.fileio import atomic_open

KALDI_LABELS = {"target": 1, "nontarget": 0}


@dataclass
class Problem:
    file: str
    line: int  # 1-based; 0 when the problem is not tied to a line
    message: str
    key: Optional[str] = None
    fixable: bool = True  # False when dropping entries cannot resolve it (``svmix-validate-data --fix`` refuses)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass
class Table:
    """A two-column Kaldi table: ordered key -> value, plus line numbers and parse problems."""

    path: str
    entries: "OrderedDict[str, str]" = field(default_factory=OrderedDict)
    lines: Dict[str, int] = field(default_factory=dict)
    problems: List[Problem] = field(default_factory=list)


def text_lines(path: str) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file; bytes that are not UTF-8 are a one-line error
    naming the file, the line and the column."""
    if not os.path.isfile(path):
        raise SvmixError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as e:
                byte = ord(line[e.start]) - 0xDC00  # surrogateescape maps byte b to U+DC00 + b
                raise SvmixError(f"{path}:{lineno}: not UTF-8 text (byte 0x{byte:02x} at character "
                                 f"{e.start + 1}); list files must be UTF-8") from None
            yield lineno, line


def read_table(path: os.PathLike) -> Table:
    path = str(path)
    table = Table(path)
    for lineno, raw in text_lines(path):
        line = raw.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            table.problems.append(Problem(path, lineno, f"expected '<key> <value>', got '{line}'", parts[0]))
            continue
        key, value = parts
        if key in table.entries:
            table.problems.append(
                Problem(path, lineno, f"duplicate key '{key}' (first on line {table.lines[key]})", key))
            continue
        table.entries[key] = value
        table.lines[key] = lineno
    return table


def read_kv(path: os.PathLike, strict: bool = True) -> "OrderedDict[str, str]":
    """Read a table as a dict; with ``strict`` the first problem is raised as a one-line error."""
    table = read_table(path)
    if strict and table.problems:
        raise SvmixError(str(table.problems[0]))
    return table.entries


def write_kv(path: os.PathLike, items: Iterable[Tuple[str, object]]) -> None:
    with atomic_open(path) as f:
        for key, value in items:
            f.write(f"{key} {value}\n")


def spk2utt_from_utt2spk(utt2spk: Dict[str, str]) -> "OrderedDict[str, List[str]]":
    spk2utt: "OrderedDict[str, List[str]]" = OrderedDict()
    for utt, spk in utt2spk.items():
        spk2utt.setdefault(spk, []).append(utt)
    return OrderedDict(sorted(spk2utt.items()))


@dataclass
class Trial:
    enroll: str
    test: str
    label: Optional[int] = None  # 1 target, 0 non-target, None unlabelled
    line: int = 0


def parse_trial_line(line: str) -> Optional[Trial]:
    """Parse one trial line in any supported format; None when it matches none."""
    parts = line.split()
    if len(parts) == 3 and parts[0] in ("0", "1"):
        return Trial(parts[1], parts[2], int(parts[0]))
    if len(parts) == 3 and parts[2] in KALDI_LABELS:
        return Trial(parts[0], parts[1], KALDI_LABELS[parts[2]])
    if len(parts) == 2:
        return Trial(parts[0], parts[1], None)
    return None


def label_mix_problem(path: str, first_line: int, first_labelled: bool, line: int) -> Problem:
    """The problem of a trials list mixing labelled and unlabelled lines: ``line`` is the first line
    whose kind differs from the first trial's (on ``first_line``)."""
    kinds = ("unlabelled", "labelled")
    return Problem(path, line, f"{kinds[not first_labelled]} trial, but the first trial (line {first_line}) is "
                               f"{kinds[first_labelled]}; label every trial (target/nontarget or 1/0) or none",
                   fixable=False)


def read_trials(path: os.PathLike, problems: Optional[List[Problem]] = None) -> List[Trial]:
    """Read trials (format auto-detected). Bad lines raise, or are appended to ``problems``.

    A list mixing labelled and unlabelled trials is a problem at the first line that differs from
    the first trial.
    """
    path = str(path)
    trials = []
    for lineno, raw in text_lines(path):
        if not raw.strip():
            continue
        trial = parse_trial_line(raw)
        if trial is None:
            problem = Problem(path, lineno, "expected '<enroll> <test> target|nontarget', "
                                            "'1|0 <enroll> <test>' or '<enroll> <test>'")
            if problems is None:
                raise SvmixError(str(problem))
            problems.append(problem)
            continue
        trial.line = lineno
        trials.append(trial)
    odd = next((t for t in trials if (t.label is None) != (trials[0].label is None)), None)
    if odd is not None:
        problem = label_mix_problem(path, trials[0].line, trials[0].label is not None, odd.line)
        if problems is None:
            raise SvmixError(str(problem))
        problems.append(problem)
    return trials


def write_trials(path: os.PathLike, trials: Sequence[Trial], fmt: str = "kaldi") -> None:
    """Write trials as ``kaldi`` (``enroll test target``) or ``voxceleb`` (``1 enroll test``)."""
    if fmt not in ("kaldi", "voxceleb"):
        raise ValueError(f"unknown trials format {fmt}")
    with atomic_open(path) as f:
        for t in trials:
            if t.label is None:
                f.write(f"{t.enroll} {t.test}\n")
            elif fmt == "kaldi":
                f.write(f"{t.enroll} {t.test} {'target' if t.label else 'nontarget'}\n")
            else:
                f.write(f"{t.label} {t.enroll} {t.test}\n")


class DataDir:
    """A Kaldi data directory. ``wav_scp`` and ``utt2spk`` are required; others optional."""

    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise SvmixError(f"{self.path}: data directory not found")
        if not (self.path / "wav.scp").is_file():
            raise SvmixError(f"{self.path}: no wav.scp in data directory")

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def wav_scp(self) -> "OrderedDict[str, str]":
        return read_kv(self.file("wav.scp"))

    @property
    def utt2spk(self) -> "OrderedDict[str, str]":
        return read_kv(self.file("utt2spk"))

    @property
    def spk2utt(self) -> "OrderedDict[str, List[str]]":
        return spk2utt_from_utt2spk(self.utt2spk)

    @property
    def utt2dur(self) -> Optional[Dict[str, float]]:
        if not self.file("utt2dur").is_file():
            return None
        return {k: float(v) for k, v in read_kv(self.file("utt2dur")).items()}

    @property
    def trials(self) -> Optional[List[Trial]]:
        return read_trials(self.file("trials")) if self.file("trials").is_file() else None


def write_datadir(path: os.PathLike, wav_scp: Dict[str, str], utt2spk: Optional[Dict[str, str]] = None,
                  utt2dur: Optional[Dict[str, float]] = None) -> None:
    """Write wav.scp (+ utt2spk, spk2utt, utt2dur), sorted by key as Kaldi expects."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_kv(path / "wav.scp", sorted(wav_scp.items()))
    if utt2spk is not None:
        write_kv(path / "utt2spk", sorted(utt2spk.items()))
        write_kv(path / "spk2utt", ((s, " ".join(u)) for s, u in spk2utt_from_utt2spk(utt2spk).items()))
    if utt2dur is not None:
        write_kv(path / "utt2dur", ((k, f"{v:.3f}") for k, v in sorted(utt2dur.items())))
