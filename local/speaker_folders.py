#!/usr/bin/env python3
"""Any corpus laid out as ``SRC/<speaker>/**/*.wav|flac`` -> Kaldi data dir(s), optional test split + trials.

    python local/speaker_folders.py --src /corpora/mine --out data/mine                       # OUT = one data dir
    python local/speaker_folders.py --src /corpora/mine --out data/mine --test-speakers 10    # OUT/train, OUT/test
    python local/speaker_folders.py --src /corpora/mine --out data/mine --num-trials 5000      # OUT with trials

Utterance ids are ``<speaker>-<path below the speaker folder, '/' -> '-'>`` (spaces -> '_'), so they
sort by speaker as Kaldi expects. The split by speaker and the trials are seeded.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click
import numpy as np

from local.trials import sample_trials
from svmix.cli import user_errors
from svmix.data.audio import audio_info
from svmix.data.datadir import write_datadir, write_trials
from svmix.errors import SvmixError
from svmix.utils.logging import get_logger, setup_logging

log = get_logger("speaker_folders")

AUDIO_SUFFIXES = (".wav", ".flac")


def _clean(name: str) -> str:
    return "_".join(name.split())


def scan_speaker_folders(src: Path, min_utts: int = 1) -> Dict[str, Dict[str, Path]]:
    """speaker -> {utt id -> audio file}; speakers with fewer than ``min_utts`` files are dropped."""
    src = Path(src)
    if not src.is_dir():
        raise SvmixError(f"{src}: directory not found")
    corpus: Dict[str, Dict[str, Path]] = {}
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        speaker = _clean(folder.name)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        utts = {f"{speaker}-{_clean('-'.join(f.relative_to(folder).with_suffix('').parts))}": f for f in files}
        if speaker in corpus:
            raise SvmixError(f"{folder}: speaker name '{speaker}' clashes with another folder after removing spaces")
        if len(utts) < max(min_utts, 1):
            log.warning("%s: %d audio files, fewer than %d: speaker skipped", folder, len(utts), min_utts)
            continue
        corpus[speaker] = utts
    if not corpus:
        raise SvmixError(f"{src}: no speaker folders with .wav/.flac files (expected SRC/<speaker>/*.wav)")
    return corpus


def split_speakers(speakers: List[str], num_test: int, rng: np.random.Generator) -> List[str]:
    """``num_test`` test speakers drawn at random (sorted)."""
    if not 0 <= num_test < len(speakers):
        raise SvmixError(f"--test-speakers must be in [0, {len(speakers) - 1}] for {len(speakers)} speakers, got {num_test}")
    return sorted(speakers[i] for i in rng.choice(len(speakers), size=num_test, replace=False))


def write_speaker_datadir(out: Path, corpus: Dict[str, Dict[str, Path]], num_trials: int = 0,
                          target_ratio: float = 0.5, rng: Optional[np.random.Generator] = None) -> None:
    files = {utt: path for utts in corpus.values() for utt, path in utts.items()}
    utt2spk = {utt: spk for spk, utts in corpus.items() for utt in utts}
    durations = {}
    for utt, path in files.items():
        frames, rate = audio_info(path, utt)
        durations[utt] = frames / rate
    write_datadir(out, {u: str(p.resolve()) for u, p in files.items()}, utt2spk, durations)
    if num_trials > 0:
        trials = sample_trials(utt2spk, num_trials, target_ratio, rng or np.random.default_rng(0))
        write_trials(out / "trials", trials, "kaldi")
        write_trials(out / "trials.voxceleb", trials, "voxceleb")
        log.info("%s: %d trials (%d target)", out, len(trials), sum(t.label for t in trials))
    log.info("%s: %d utterances of %d speakers", out, len(files), len(corpus))


def prepare_speaker_folders(src: Path, out: Path, test_speakers: int = 0, num_trials: Optional[int] = None,
                            target_ratio: float = 0.5, min_utts: int = 1, seed: int = 0) -> None:
    """Without a split, ``out`` is one data dir (trials when ``num_trials`` > 0); with
    ``test_speakers`` > 0, ``out/train`` and ``out/test`` (trials, 10000 by default)."""
    rng = np.random.default_rng(seed)
    corpus = scan_speaker_folders(src, min_utts)
    out = Path(out)
    if test_speakers == 0:
        write_speaker_datadir(out, corpus, num_trials or 0, target_ratio, rng)
        return
    test = set(split_speakers(sorted(corpus), test_speakers, rng))
    write_speaker_datadir(out / "train", {s: u for s, u in corpus.items() if s not in test})
    write_speaker_datadir(out / "test", {s: u for s, u in corpus.items() if s in test},
                          10000 if num_trials is None else num_trials, target_ratio, rng)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False),
              help="Corpus root with one folder per speaker (audio found recursively).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data dir.")
@click.option("--test-speakers", default=0, show_default=True, type=int,
              help="Speakers held out for OUT/test (0: write OUT as one data dir).")
@click.option("--num-trials", type=int, help="Trials to generate [default: 10000 for the test split, none otherwise].")
@click.option("--target-ratio", default=0.5, show_default=True, type=float, help="Share of target trials.")
@click.option("--min-utts", default=2, show_default=True, type=int, help="Skip speakers with fewer files.")
@click.option("--seed", default=0, show_default=True, type=int)
@user_errors
def main(src: str, out: str, test_speakers: int, num_trials: Optional[int], target_ratio: float,
         min_utts: int, seed: int) -> None:
    """Make Kaldi data dir(s) from SRC/<speaker>/*.wav|flac."""
    setup_logging()
    prepare_speaker_folders(Path(src), Path(out), test_speakers, num_trials, target_ratio, min_utts, seed)


if __name__ == "__main__":
    main()
