#!/usr/bin/env python3
"""VoxCeleb data preparation: Kaldi data dirs for VoxCeleb2-dev (training) and VoxCeleb1 (+ O/E/H trials),
and the paper's other test conditions: VoxSRC-23 validation, VCMix and VOiCES.

Utterance ids are ``idXXXXX/<video>/<nnnnn>`` (the VoxCeleb trial-list paths without ``.wav``); for the
other sets, the path a trial list names, without ``.wav``.

    python local/voxceleb.py vox2 --src /corpora/voxceleb2 --out data/voxceleb2_dev --wav-dir /corpora/vox2_wav --nj 8
    python local/voxceleb.py vox1 --src /corpora/voxceleb1 --out data/voxceleb1 [--trials-dir DIR]
    python local/voxceleb.py list --name voxsrc23 --src /corpora/voxsrc23_val --audio /corpora/voxceleb1 --out data/voxsrc23
    python local/voxceleb.py voices --src /corpora/VOiCES_2019 --out data/voices [--part dev|eval]

The layouts these expect are in docs/conventions.md §VoxCeleb test sets.

VoxCeleb2 m4a files are converted to 16 kHz mono wav with ffmpeg (in parallel, resumable); an
already-converted wav tree is used as is.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from svmix.cli import user_errors
from svmix.data.audio import audio_info
from svmix.data.datadir import Trial, text_lines, write_datadir, write_trials
from svmix.errors import SvmixError
from svmix.utils.fileio import check_free_space
from svmix.utils.logging import get_logger, setup_logging
from svmix.utils.progress import track

log = get_logger("voxceleb")

# name -> cleaned VoxCeleb1 trial list file
VOX1_TRIAL_LISTS = {"o": "veri_test2.txt", "e": "list_test_all2.txt", "h": "list_test_hard2.txt"}
WAV_PER_M4A_BYTES = 6  # rough size ratio of 16 kHz 16-bit wav to VoxCeleb2 AAC, for the free-space check


def find_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise SvmixError("ffmpeg not found on PATH: install ffmpeg (e.g. 'apt-get install ffmpeg' or "
                         "'conda install ffmpeg') to convert VoxCeleb2 m4a files, or pass a converted wav tree")
    return path


def scan_tree(root: Path, suffix: str) -> Dict[str, Path]:
    """``idXXXXX/<video>/<nnnnn>`` -> file for every ``root/*/*/*.<suffix>``."""
    return {f"{p.parent.parent.name}/{p.parent.name}/{p.stem}": p for p in sorted(root.glob(f"*/*/*.{suffix}"))}


def locate(src: Path, subdirs: Sequence[str], suffix: str) -> Optional[Path]:
    """The first of ``src/<subdir>`` (then ``src``) holding ``*/*/*.<suffix>`` files."""
    for folder in [src / s for s in subdirs] + [src]:
        if folder.is_dir() and next(folder.glob(f"*/*/*.{suffix}"), None) is not None:
            return folder
    return None


def _convert_one(ffmpeg: str, src: Path, dst: Path) -> Optional[str]:
    """Convert one file (atomically); returns an error line or None."""
    if dst.is_file():
        return None
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp.wav")
    result = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-ac", "1",
                             "-ar", "16000", "-f", "wav", str(tmp)], capture_output=True, text=True)
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        return f"{src}: ffmpeg failed ({' '.join(result.stderr.split())[:200] or result.returncode})"
    os.replace(tmp, dst)
    return None


def convert_m4a_tree(files: Dict[str, Path], wav_dir: Path, nj: int = 4) -> Dict[str, Path]:
    """Convert m4a files to ``wav_dir/<utt>.wav`` with ``nj`` parallel ffmpeg processes (resumable)."""
    ffmpeg = find_ffmpeg()
    targets = {utt: wav_dir / f"{utt}.wav" for utt in files}
    todo = [utt for utt, dst in targets.items() if not dst.is_file()]
    if todo:
        check_free_space(wav_dir, WAV_PER_M4A_BYTES * sum(files[u].stat().st_size for u in todo),
                         "converting VoxCeleb2 to wav")
    with ThreadPoolExecutor(max(1, nj)) as pool:
        errors = [e for e in track(pool.map(lambda u: _convert_one(ffmpeg, files[u], targets[u]), todo),
                                   total=len(todo), desc="m4a -> wav", unit="file") if e]
    if errors:
        for e in errors:
            log.error(e)
        raise SvmixError(f"{len(errors)} of {len(todo)} conversions failed, first: {errors[0]}")
    return targets


def _durations(files: Dict[str, Path], nj: int) -> Dict[str, float]:
    def seconds(item: Tuple[str, Path]) -> float:
        frames, rate = audio_info(item[1], item[0])
        return frames / rate

    with ThreadPoolExecutor(max(1, nj)) as pool:
        return dict(zip(files, pool.map(seconds, files.items())))


def write_voxceleb_datadir(out: Path, files: Dict[str, Path], nj: int) -> None:
    utt2spk = {utt: utt.split("/", 1)[0] for utt in files}
    write_datadir(out, {u: str(p.resolve()) for u, p in files.items()}, utt2spk, _durations(files, nj))
    log.info("%s: %d utterances of %d speakers", out, len(files), len(set(utt2spk.values())))


def prepare_voxceleb2(src: Path, out: Path, wav_dir: Optional[Path] = None, nj: int = 4) -> None:
    """VoxCeleb2-dev (``dev/aac/idXXXXX/<video>/<nnnnn>.m4a`` or a wav tree) -> Kaldi dir ``out``."""
    src = Path(src)
    wav_root = locate(src, ["dev/wav", "wav"], "wav")
    if wav_root is not None:
        files = scan_tree(wav_root, "wav")
    else:
        m4a_root = locate(src, ["dev/aac", "aac"], "m4a")
        if m4a_root is None:
            raise SvmixError(f"{src}: no VoxCeleb2 files found (expected dev/aac/idXXXXX/<video>/<nnnnn>.m4a "
                             "or idXXXXX/<video>/<nnnnn>.wav)")
        files = convert_m4a_tree(scan_tree(m4a_root, "m4a"), Path(wav_dir) if wav_dir else Path(out) / "wav", nj)
    write_voxceleb_datadir(Path(out), files, nj)


def read_voxceleb_trials(path: Path, utts: Dict[str, Path]) -> List[Trial]:
    """A VoxCeleb trial list (``1 id/video/nnnnn.wav id/video/nnnnn.wav``) with ids made to match."""
    trials = []
    for lineno, label, names in _trial_list_lines(path):
        enroll, test = (p[:-4] if p.endswith(".wav") else p for p in names)
        for utt in (enroll, test):
            if utt not in utts:
                raise SvmixError(f"{path}:{lineno}: utterance '{utt}' is not in the VoxCeleb1 wav tree "
                                 "(need both dev and test parts for the E and H lists; see --lists)")
        trials.append(Trial(enroll, test, label, lineno))
    return trials


def _list_fields(path: Path):
    """``(line number, fields, line)`` of each non-blank line of a UTF-8 list file (text_lines)."""
    for lineno, line in text_lines(str(path)):
        parts = line.split()
        if parts:
            yield lineno, parts, line.strip()


def _trial_list_lines(path: Path):
    """``(line number, label, (enroll, test))`` of each line of a VoxCeleb-format trial list."""
    for lineno, parts, line in _list_fields(path):
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise SvmixError(f"{path}:{lineno}: expected '1|0 <enroll>.wav <test>.wav', got '{line}'")
        yield lineno, int(parts[0]), (parts[1], parts[2])


def prepare_voxceleb1(srcs: Sequence[Path], out: Path, trials_dir: Optional[Path] = None,
                      lists: str = "oeh", nj: int = 4) -> None:
    """VoxCeleb1 (``wav/idXXXXX/<video>/<nnnnn>.wav``, dev and test possibly in separate ``srcs``) ->
    Kaldi dir ``out`` with ``trials_o/e/h`` (Kaldi format) and ``trials_?.voxceleb``; ``trials`` = O."""
    files: Dict[str, Path] = {}
    for src in map(Path, srcs):
        root = locate(src, ["wav", "dev/wav", "test/wav"], "wav")
        if root is None:
            raise SvmixError(f"{src}: no VoxCeleb1 wav files found (expected wav/idXXXXX/<video>/<nnnnn>.wav)")
        files.update(scan_tree(root, "wav"))
    out = Path(out)
    write_voxceleb_datadir(out, files, nj)
    search = [Path(trials_dir)] if trials_dir else [Path(s) for s in srcs]
    for name in lists:
        if name not in VOX1_TRIAL_LISTS:
            raise SvmixError(f"unknown VoxCeleb1 trial list '{name}' (known: {', '.join(VOX1_TRIAL_LISTS)})")
        found = [d / VOX1_TRIAL_LISTS[name] for d in search if (d / VOX1_TRIAL_LISTS[name]).is_file()]
        if not found:
            log.warning("%s not found in %s: skipping trials_%s", VOX1_TRIAL_LISTS[name],
                        ", ".join(map(str, search)), name)
            continue
        trials = read_voxceleb_trials(found[0], files)
        write_trials(out / f"trials_{name}", trials, "kaldi")
        write_trials(out / f"trials_{name}.voxceleb", trials, "voxceleb")
        if name == "o":
            write_trials(out / "trials", trials, "kaldi")
        log.info("%s: trials_%s with %d trials", out, name, len(trials))


# The paper's other test conditions. VoxSRC-23 validation and VCMix publish VoxCeleb-format lists
# ("1|0 <enrol>.wav <test>.wav", paths relative to the audio); VOiCES (2019 challenge) publishes an
# enrolment list "<model> <file>" and trial keys "<model> <test file> tgt|imp". File names searched
# for in the corpus folder (recursively), in order; --list names another.
LIST_SETS = {"voxsrc23": ("VoxSRC2023_val.txt", "voxsrc2023_val.txt", "VoxSRC23_val.txt", "val_trials.txt"),
             "vcmix": ("vcmix_test.txt", "VCMix_test.txt", "test.txt")}
VOICES_LISTS = {part: (f"{part}-enroll.lst", f"{part}-trial-keys.lst") for part in ("dev", "eval")}
LAYOUTS = {
    "voxsrc23": "the VoxSRC-23 validation folder: its trial list (VoxSRC2023_val.txt, lines '1|0 <enrol>.wav "
                "<test>.wav') and the audio it names, relative to that folder (or to --audio, e.g. VoxCeleb1)",
    "vcmix": "the VCMix folder: its trial list (vcmix_test.txt, lines '1|0 <enrol>.wav <test>.wav') and its "
             "VoxConverse segments; the VoxCeleb1 utterances it names come from --audio VOXCELEB1",
    "voices": "the VOiCES 2019 challenge release: <part>-enroll.lst ('<model> <file>') and <part>-trial-keys.lst "
              "('<model> <test file> tgt|imp') anywhere below it, and the sid_<part>/ audio they name",
}


def _find_list(src: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        found = sorted(src.rglob(name))
        if found:
            return found[0]
    raise SvmixError(f"{src}: no {' or '.join(names)} found (expected {what})")


def _resolver(bases: Sequence[Path]):
    """name -> (utterance id, audio file): the first base (or its wav/, test/wav/, dev/wav/) holding the name
    (with or without .wav); None when none does, or the name leaves its base (absolute, '..')."""
    folders = [f for b in bases for f in (Path(b), Path(b) / "wav", Path(b) / "test/wav", Path(b) / "dev/wav")]

    def resolve(name: str) -> Optional[Tuple[str, Path]]:
        utt = name[:-4] if name.endswith(".wav") else name
        if utt.startswith("/") or ".." in utt.split("/"):  # ids are paths below a root
            return None
        for folder in folders:
            path = folder / f"{utt}.wav"
            if path.is_file():
                return utt, path
        return None
    return resolve


def speakers_from_targets(utts: Sequence[str], trials: Sequence[Trial], prefix: str) -> Dict[str, str]:
    """utt -> speaker for lists that do not name speakers: the groups of utterances that target trials
    link (union-find), named ``<prefix>-<n>`` in order of first appearance. Two groups may be one
    speaker the list never pairs; they only serve the speaker-bootstrap confidence intervals."""
    parent = {u: u for u in utts}

    def root(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for t in trials:
        if t.label == 1:
            a, b = root(t.enroll), root(t.test)
            if a != b:
                parent[b] = a
    names: Dict[str, str] = {}
    return {u: names.setdefault(root(u), f"{prefix}-{len(names):05d}") for u in utts}


def _write_test_set(out: Path, name: str, files: Dict[str, Path], trials: List[Trial], nj: int) -> None:
    if not trials:
        raise SvmixError(f"{name}: the trial list has no trials")
    labels = {t.label for t in trials}
    if labels != {0, 1}:
        raise SvmixError(f"{name}: the trial list needs target and non-target trials, got only "
                         f"{'targets' if labels == {1} else 'non-targets'}")
    out = Path(out)
    utt2spk = speakers_from_targets(list(files), trials, name)
    write_datadir(out, {u: str(p.resolve()) for u, p in files.items()}, utt2spk, _durations(files, nj))
    write_trials(out / "trials", trials, "kaldi")
    log.info("%s: %d utterances, %d trials (%d target)", out, len(files), len(trials),
             sum(t.label for t in trials))


def prepare_list_set(name: str, src: Path, out: Path, audio: Sequence[Path] = (), trials_list: Optional[Path] = None,
                     nj: int = 4) -> None:
    """A test set given by a VoxCeleb-format trial list (VoxSRC-23 validation, VCMix): Kaldi dir
    ``out`` with the utterances the list names and its ``trials``. Names resolve against the list's
    folder, ``src`` and then each of ``audio`` (and their wav/ subfolders)."""
    src = Path(src)
    if not src.is_dir():
        raise SvmixError(f"{src}: not a directory (expected {LAYOUTS[name]})")
    path = Path(trials_list) if trials_list else _find_list(src, LIST_SETS[name], LAYOUTS[name])
    resolve = _resolver([path.parent, src, *map(Path, audio)])
    files: Dict[str, Path] = {}
    trials = []
    for lineno, label, names in _trial_list_lines(path):
        ids = []
        for entry in names:
            found = resolve(entry)
            if found is None:
                raise SvmixError(f"{path}:{lineno}: audio '{entry}' not found below {path.parent}, {src}"
                                 + "".join(f", {a}" for a in audio) + f" (expected {LAYOUTS[name]})")
            files[found[0]] = found[1]
            ids.append(found[0])
        trials.append(Trial(ids[0], ids[1], label, lineno))
    _write_test_set(out, name, files, trials, nj)


def prepare_voices(src: Path, out: Path, part: str = "dev", nj: int = 4) -> None:
    """VOiCES (2019 challenge) ``part`` (dev, or eval with the post-evaluation keys): Kaldi dir ``out``
    whose trials pair each model's one enrolment file with the test files of its keys."""
    src = Path(src)
    if not src.is_dir():
        raise SvmixError(f"{src}: not a directory (expected {LAYOUTS['voices']})")
    enroll_name, keys_name = VOICES_LISTS[part]
    enroll_path = _find_list(src, [enroll_name], LAYOUTS["voices"])
    keys_path = _find_list(src, [keys_name], LAYOUTS["voices"])
    bases = [enroll_path.parent, enroll_path.parent.parent, keys_path.parent, keys_path.parent.parent, src]
    resolve = _resolver(bases)
    files: Dict[str, Path] = {}

    def audio(path: Path, lineno: int, entry: str) -> str:
        found = resolve(entry)
        if found is None:
            raise SvmixError(f"{path}:{lineno}: audio '{entry}' not found below "
                             f"{', '.join(map(str, dict.fromkeys(bases)))} (expected {LAYOUTS['voices']})")
        files[found[0]] = found[1]
        return found[0]

    models: Dict[str, str] = {}
    for lineno, parts, line in _list_fields(enroll_path):
        if len(parts) != 2:
            raise SvmixError(f"{enroll_path}:{lineno}: expected '<model> <file>', got '{line}'")
        if parts[0] in models:
            raise SvmixError(f"{enroll_path}:{lineno}: model '{parts[0]}' enrolled twice (one file per model "
                             "is supported)")
        models[parts[0]] = audio(enroll_path, lineno, parts[1])
    trials = []
    for lineno, parts, line in _list_fields(keys_path):
        if len(parts) != 3 or parts[2] not in ("tgt", "imp"):
            raise SvmixError(f"{keys_path}:{lineno}: expected '<model> <test file> tgt|imp', got '{line}'")
        if parts[0] not in models:
            raise SvmixError(f"{keys_path}:{lineno}: model '{parts[0]}' is not in {enroll_path}")
        trials.append(Trial(models[parts[0]], audio(keys_path, lineno, parts[1]), int(parts[2] == "tgt"), lineno))
    _write_test_set(out, f"voices_{part}", files, trials, nj)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Prepare VoxCeleb data directories."""
    setup_logging()


@cli.command("vox2")
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False),
              help="VoxCeleb2 root (with dev/aac/... m4a files) or an already-converted wav tree.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data dir, e.g. data/voxceleb2_dev.")
@click.option("--wav-dir", type=click.Path(file_okay=False), help="Where converted wavs go [default: OUT/wav].")
@click.option("--nj", default=4, show_default=True, type=int, help="Parallel ffmpeg/header-reading jobs.")
@user_errors
def vox2_command(src: str, out: str, wav_dir: Optional[str], nj: int) -> None:
    """VoxCeleb2-dev -> Kaldi data dir (m4a converted to 16 kHz wav with ffmpeg)."""
    prepare_voxceleb2(Path(src), Path(out), Path(wav_dir) if wav_dir else None, nj)


@cli.command("vox1")
@click.option("--src", "srcs", required=True, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="VoxCeleb1 root(s) holding wav/idXXXXX/...; repeat for separate dev and test parts.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data dir, e.g. data/voxceleb1.")
@click.option("--trials-dir", type=click.Path(exists=True, file_okay=False),
              help="Folder with veri_test2.txt, list_test_all2.txt, list_test_hard2.txt [default: each --src].")
@click.option("--lists", default="oeh", show_default=True, help="Trial lists to write: any of o, e, h.")
@click.option("--nj", default=4, show_default=True, type=int, help="Parallel header-reading jobs.")
@user_errors
def vox1_command(srcs: Tuple[str, ...], out: str, trials_dir: Optional[str], lists: str, nj: int) -> None:
    """VoxCeleb1 -> Kaldi data dir with trials_o, trials_e, trials_h."""
    prepare_voxceleb1([Path(s) for s in srcs], Path(out), Path(trials_dir) if trials_dir else None, lists, nj)


@cli.command("list")
@click.option("--name", required=True, type=click.Choice(sorted(LIST_SETS)), help="Which test set.")
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False),
              help="The set's folder: its trial list and (some of) the audio it names.")
@click.option("--audio", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Further audio roots the list's names resolve against, e.g. VoxCeleb1 (repeatable).")
@click.option("--list", "trials_list", type=click.Path(exists=True, dir_okay=False),
              help="The trial list [default: searched for below --src by its published names].")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data dir, e.g. data/voxsrc23.")
@click.option("--nj", default=4, show_default=True, type=click.IntRange(1, 256), help="Parallel header-reading jobs.")
@user_errors
def list_command(name: str, src: str, audio: Tuple[str, ...], trials_list: Optional[str], out: str, nj: int) -> None:
    """VoxSRC-23 validation or VCMix -> Kaldi data dir with its trials."""
    prepare_list_set(name, Path(src), Path(out), [Path(a) for a in audio], Path(trials_list) if trials_list else None, nj)


@cli.command("voices")
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False),
              help="The VOiCES 2019 challenge release (its lists and keys, and sid_<part>/ audio).")
@click.option("--part", default="dev", show_default=True, type=click.Choice(sorted(VOICES_LISTS)),
              help="dev, or eval (with the post-evaluation trial keys).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data dir, e.g. data/voices.")
@click.option("--nj", default=4, show_default=True, type=click.IntRange(1, 256), help="Parallel header-reading jobs.")
@user_errors
def voices_command(src: str, part: str, out: str, nj: int) -> None:
    """VOiCES -> Kaldi data dir with its trials."""
    prepare_voices(Path(src), Path(out), part, nj)


if __name__ == "__main__":
    cli()
