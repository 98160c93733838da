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

from local.trials import check_trials_possible, max_trials, pair_counts, sample_trials
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


DEFAULT_TEST_TRIALS = 10000
TRIALS_HINT = " (ask for fewer with --num-trials, or hold out more speakers with --test-speakers)"


def _utt2spk(corpus: Dict[str, Dict[str, Path]]) -> Dict[str, str]:
    return {utt: spk for spk, utts in corpus.items() for utt in utts}


def write_speaker_datadir(out: Path, corpus: Dict[str, Dict[str, Path]], num_trials: int = 0,
                          target_ratio: float = 0.5, rng: Optional[np.random.Generator] = None) -> None:
    """A Kaldi data dir of ``corpus`` at ``out``, with ``num_trials`` trials when > 0 (exactly that
    many at ``target_ratio``, else an error before anything is written)."""
    utt2spk = _utt2spk(corpus)
    trials = (sample_trials(utt2spk, num_trials, target_ratio, rng or np.random.default_rng(0), strict=True,
                            where=str(out / "trials"), hint=TRIALS_HINT) if num_trials > 0 else None)
    files = {utt: path for utts in corpus.values() for utt, path in utts.items()}
    durations = {}
    for utt, path in files.items():
        frames, rate = audio_info(path, utt)
        durations[utt] = frames / rate
    write_datadir(out, {u: str(p.resolve()) for u, p in files.items()}, utt2spk, durations)
    if trials is not None:
        write_trials(out / "trials", trials, "kaldi")
        write_trials(out / "trials.voxceleb", trials, "voxceleb")
        log.info("%s: %d trials (%d target)", out, len(trials), sum(t.label for t in trials))
    log.info("%s: %d utterances of %d speakers", out, len(files), len(corpus))


def prepare_speaker_folders(src: Path, out: Path, test_speakers: int = 0, num_trials: Optional[int] = None,
                            target_ratio: float = 0.5, min_utts: int = 1, seed: int = 0) -> None:
    """Without a split, ``out`` is one data dir (trials when ``num_trials`` > 0); with
    ``test_speakers`` > 0, ``out/train`` and ``out/test`` with trials: ``num_trials`` exactly, or by
    default DEFAULT_TEST_TRIALS or as many as the test speakers give if fewer (a warning says so).
    A trial count the data cannot give is an error before anything is written."""
    rng = np.random.default_rng(seed)
    corpus = scan_speaker_folders(src, min_utts)
    out = Path(out)
    if test_speakers == 0:
        parts = [(out, corpus, num_trials or 0)]
    else:
        test = set(split_speakers(sorted(corpus), test_speakers, rng))
        test_corpus = {s: u for s, u in corpus.items() if s in test}
        have_target, have_nontarget = pair_counts(_utt2spk(test_corpus))
        if not (have_target and have_nontarget):
            raise SvmixError(f"{out / 'test'}: the {len(test)} test speakers' utterances give {have_target} target and "
                             f"{have_nontarget} non-target pairs; trials need both (speakers with 2+ files, "
                             "2+ test speakers)")
        if num_trials is None:
            num_trials = min(DEFAULT_TEST_TRIALS, max_trials(_utt2spk(test_corpus), target_ratio))
            if num_trials < DEFAULT_TEST_TRIALS:
                log.warning("%s: %d trials, not the default %d: the %d test speakers' utterances give at most %d "
                            "at target ratio %g", out / "test", num_trials, DEFAULT_TEST_TRIALS, len(test),
                            num_trials, target_ratio)
        parts = [(out / "train", {s: u for s, u in corpus.items() if s not in test}, 0),
                 (out / "test", test_corpus, num_trials)]
    for path, speakers, count in parts:
        if count > 0:
            check_trials_possible(_utt2spk(speakers), count, target_ratio, str(path / "trials"), TRIALS_HINT)
    for path, speakers, count in parts:
        write_speaker_datadir(path, speakers, count, target_ratio, rng)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False),
              help="Corpus root with one folder per speaker (audio found recursively).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output data dir.")
@click.option("--test-speakers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Speakers held out for OUT/test (0: write OUT as one data dir).")
@click.option("--num-trials", type=click.IntRange(min=0),
              help="Trials to generate, exactly (an error naming the maximum if the speakers cannot give "
                   "that many) [default: none without a split; with one, 10000 or as many as the test speakers give].")
@click.option("--target-ratio", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Share of target trials.")
@click.option("--min-utts", default=2, show_default=True, type=click.IntRange(min=1),
              help="Skip speakers with fewer files.")
@click.option("--seed", default=0, show_default=True, type=int)
@user_errors
def main(src: str, out: str, test_speakers: int, num_trials: Optional[int], target_ratio: float,
         min_utts: int, seed: int) -> None:
    """Make Kaldi data dir(s) from SRC/<speaker>/*.wav|flac."""
    setup_logging()
    prepare_speaker_folders(Path(src), Path(out), test_speakers, num_trials, target_ratio, min_utts, seed)


if __name__ == "__main__":
    main()
