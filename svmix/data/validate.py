"""Check a data directory and report every problem with file and line; optionally drop bad entries."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Set

from svmix.data.audio import load_audio, scan_audio, scan_cache_path
from svmix.data.datadir import Problem, read_table, read_trials, write_kv, write_trials, spk2utt_from_utt2spk
from svmix.errors import AudioError, SvmixError
from svmix.utils.progress import track


@dataclass
class ValidationReport:
    problems: List[Problem] = field(default_factory=list)
    bad_utts: Set[str] = field(default_factory=set)
    bad_trial_lines: Set[int] = field(default_factory=set)
    num_utts: int = 0
    num_trials: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_datadir(path, check_audio: bool = True, deep: bool = False, progress: bool = False) -> ValidationReport:
    """Validate ``path``. ``check_audio`` checks each file's header (missing, unreadable, truncated
    WAV, empty, too short); ``deep`` decodes every file (also finds corrupt, non-finite and silent audio)."""
    path = Path(path)
    if not path.is_dir():
        raise SvmixError(f"{path}: data directory not found")
    report = ValidationReport()
    wav_file = path / "wav.scp"
    if not wav_file.is_file():
        raise SvmixError(f"{path}: no wav.scp in data directory")
    wav = read_table(wav_file)
    report.problems += wav.problems
    report.num_utts = len(wav.entries)

    if check_audio:
        pipes = {utt for utt, value in wav.entries.items() if value.rstrip().endswith("|")}  # not checked
        files = {utt: value for utt, value in wav.entries.items() if utt not in pipes}
        if deep:
            bad = {}
            for utt, value in track(files.items(), desc="decoding audio", unit="file", enabled=progress):
                try:
                    load_audio(value, utt)
                except AudioError as e:
                    bad[utt] = str(e)
        else:
            bad = scan_audio(files, progress=progress, cache=scan_cache_path(path))[1]
        for utt, message in bad.items():
            report.problems.append(Problem(str(wav_file), wav.lines[utt], message, utt))
            report.bad_utts.add(utt)

    utt2spk_file = path / "utt2spk"
    if utt2spk_file.is_file():
        utt2spk = read_table(utt2spk_file)
        report.problems += utt2spk.problems
        for utt in wav.entries:
            if utt not in utt2spk.entries:
                report.problems.append(Problem(str(wav_file), wav.lines[utt], f"utterance '{utt}' has no speaker in utt2spk", utt))
                report.bad_utts.add(utt)
        for utt in utt2spk.entries:
            if utt not in wav.entries:
                report.problems.append(Problem(str(utt2spk_file), utt2spk.lines[utt], f"utterance '{utt}' is not in wav.scp", utt))
        spk2utt_file = path / "spk2utt"
        if spk2utt_file.is_file():
            spk2utt = read_table(spk2utt_file)
            report.problems += spk2utt.problems
            expected = spk2utt_from_utt2spk(utt2spk.entries)
            for spk, value in spk2utt.entries.items():
                if sorted(value.split()) != sorted(expected.get(spk, [])):
                    report.problems.append(Problem(str(spk2utt_file), spk2utt.lines[spk],
                                                   f"speaker '{spk}' does not match utt2spk"))
            for spk in expected:
                if spk not in spk2utt.entries:
                    report.problems.append(Problem(str(spk2utt_file), 0, f"speaker '{spk}' from utt2spk is missing"))

    utt2dur_file = path / "utt2dur"
    if utt2dur_file.is_file():
        utt2dur = read_table(utt2dur_file)
        report.problems += utt2dur.problems
        for utt, value in utt2dur.entries.items():
            try:
                ok = float(value) > 0
            except ValueError:
                ok = False
            if not ok:
                report.problems.append(Problem(str(utt2dur_file), utt2dur.lines[utt], f"bad duration '{value}' for '{utt}'", utt))
            if utt not in wav.entries:
                report.problems.append(Problem(str(utt2dur_file), utt2dur.lines[utt], f"utterance '{utt}' is not in wav.scp", utt))

    trials_file = path / "trials"
    if trials_file.is_file():
        trial_problems: List[Problem] = []
        trials = read_trials(trials_file, problems=trial_problems)
        report.problems += trial_problems
        report.bad_trial_lines.update(p.line for p in trial_problems)
        report.num_trials = len(trials)
        for t in trials:
            for role, utt in (("enroll", t.enroll), ("test", t.test)):
                if utt not in wav.entries:
                    report.problems.append(Problem(str(trials_file), t.line, f"{role} id '{utt}' is not in wav.scp", utt))
                    report.bad_trial_lines.add(t.line)
    return report


BACKUP_DIR = ".backup"
LIST_FILES = ("wav.scp", "utt2spk", "spk2utt", "utt2dur", "trials")


@dataclass
class FixResult:
    dropped: Dict[str, int]  # entries dropped per file
    backup: Path  # where the original lists were copied


def new_backup_dir(path: Path) -> Path:
    """A new numbered directory ``path/.backup/NNN`` (one more than the highest); earlier backups stay."""
    root = path / BACKUP_DIR
    root.mkdir(exist_ok=True)
    number = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
    while True:
        try:
            (root / f"{number:03d}").mkdir()
            return root / f"{number:03d}"
        except FileExistsError:  # another --fix got there first
            number += 1


def back_up_lists(path: Path) -> Path:
    """Copy the list files of ``path`` into a new backup directory; nothing is changed if a copy fails."""
    backup = new_backup_dir(path)
    for name in LIST_FILES:
        if (path / name).is_file():
            try:
                shutil.copy2(path / name, backup / name)
            except OSError as e:
                shutil.rmtree(backup, ignore_errors=True)
                raise SvmixError(f"{backup / name}: cannot back up {path / name} ({e.strerror or e}); "
                                 f"nothing was changed") from None
    return backup


def fix_datadir(path, report: ValidationReport) -> FixResult:
    """Drop the entries ``report`` found bad. The original lists are first copied into a new
    numbered directory ``<path>/.backup/NNN/`` (earlier backups are kept).

    Problems that dropping entries cannot resolve (``Problem.fixable`` false, e.g. trials mixing
    labelled and unlabelled lines) are an error before anything is changed."""
    path = Path(path)
    unfixable = [p for p in report.problems if not p.fixable]
    if unfixable:
        raise SvmixError(f"{unfixable[0]} (--fix cannot resolve this; nothing was changed)")
    backup = back_up_lists(path)
    wav = read_table(path / "wav.scp")
    bad = set(report.bad_utts)
    dropped = {}
    utt2spk = read_table(path / "utt2spk").entries if (path / "utt2spk").is_file() else None
    keep = [u for u in wav.entries if u not in bad]
    if utt2spk is not None:
        keep = [u for u in keep if u in utt2spk]
    keep_set = set(keep)
    dropped["wav.scp"] = len(wav.entries) - len(keep) + len(wav.problems)
    write_kv(path / "wav.scp", ((u, wav.entries[u]) for u in keep))
    if utt2spk is not None:
        new_u2s = {u: utt2spk[u] for u in keep}
        dropped["utt2spk"] = len(utt2spk) - len(new_u2s)
        write_kv(path / "utt2spk", new_u2s.items())
        write_kv(path / "spk2utt", ((s, " ".join(us)) for s, us in spk2utt_from_utt2spk(new_u2s).items()))
    if (path / "utt2dur").is_file():
        durs = read_table(path / "utt2dur").entries
        good = []
        for u, v in durs.items():
            try:
                if u in keep_set and float(v) > 0:
                    good.append((u, v))
            except ValueError:
                pass
        dropped["utt2dur"] = len(durs) - len(good)
        write_kv(path / "utt2dur", good)
    if (path / "trials").is_file():
        problems: List[Problem] = []
        trials = read_trials(path / "trials", problems=problems)
        good_trials = [t for t in trials if t.enroll in keep_set and t.test in keep_set]
        dropped["trials"] = len(trials) + len(problems) - len(good_trials)
        fmt = "voxceleb" if _looks_voxceleb(backup / "trials") else "kaldi"
        write_trials(path / "trials", good_trials, fmt=fmt)
    return FixResult(dropped, backup)


def _looks_voxceleb(path: Path) -> bool:
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                return len(parts) == 3 and parts[0] in ("0", "1")
    return False
