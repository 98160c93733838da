"""Trial lists as integer index arrays, read fast from any supported trials format.

The format is recognised line by line with the same rules as ``svmix.data.datadir.read_trials``:
VoxCeleb ``1|0 <enroll> <test>``, Kaldi ``<enroll> <test> target|nontarget``, unlabelled
``<enroll> <test>``. Unlike ``read_trials`` it keeps no Python object per trial. As there, a list
is either labelled on every line or on none (mixing is an error naming the first differing line).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from svmix.data.datadir import label_mix_problem
from svmix.errors import SvmixError
from svmix.scoring.textio import TokenChunk, encode_ids, iter_token_chunks
from svmix.utils.logging import get_logger

log = get_logger("scoring.trials")

UNLABELLED = -1
FORMAT_HINT = "expected '<enroll> <test> target|nontarget', '1|0 <enroll> <test>' or '<enroll> <test>'"


@dataclass
class TrialIndex:
    """Trials as codes into an id list: ``enroll``/``test`` int32, ``labels`` int8 (1, 0 or -1).

    ``lines`` are the 1-based line numbers in the trials file (item numbers for trials given in Python).
    """

    enroll: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    skipped: int = 0  # trials dropped because an id was missing (``skip_missing``)
    lines: Optional[np.ndarray] = None

    def line(self, i: int) -> int:
        """The line (or item) number of trial ``i``."""
        return int(self.lines[i]) if self.lines is not None else i + 1

    def __len__(self) -> int:
        return len(self.enroll)

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and bool(np.all(self.labels != UNLABELLED))

    def target_labels(self, what: str = "trials") -> np.ndarray:
        """Boolean labels; a one-line error when some trials carry none."""
        if not self.labelled:
            raise SvmixError(f"{what}: metrics need target/nontarget labels on every trial")
        return self.labels.astype(bool)


VOXCELEB_LABELS = {"0", "1"}
KALDI_LABELS = {"target", "nontarget"}


def _labels_of_voxceleb(first: List[str]) -> np.ndarray:
    return (np.frombuffer("".join(first).encode(), np.uint8) == ord("1")).astype(np.int8)


def _labels_of_kaldi(third: List[str]) -> np.ndarray:
    return (np.fromiter(map(len, third), np.int64, len(third)) == len("target")).astype(np.int8)


def parse_trial_chunk(path: str, chunk: TokenChunk):
    """``(enroll, test, labels)`` of one chunk of trial lines (lists of ids, int8 labels).

    A chunk in one format is recognised from the sets of its label tokens; a mixed chunk line by line.
    """
    lines, widths = chunk.lines, chunk.widths
    bad_width = (widths != 2) & (widths != 3)
    if bad_width.any():
        raise SvmixError(f"{path}:{lines[np.argmax(bad_width)]}: {FORMAT_HINT}")
    if chunk.width == 2:
        return chunk.column(0), chunk.column(1), np.full(len(chunk), UNLABELLED, dtype=np.int8)
    first, second, third = chunk.column(0), chunk.column(1), chunk.column(2)
    if chunk.width == 3:
        first_tokens = set(first)  # hashes the ids once; later dict lookups reuse the cached hashes
        if first_tokens <= VOXCELEB_LABELS:
            return second, third, _labels_of_voxceleb(first)
        if not first_tokens & VOXCELEB_LABELS and set(third) <= KALDI_LABELS:
            return first, second, _labels_of_kaldi(third)
    first, second, third = (np.array(column, dtype=object) for column in (first, second, third))
    three = widths == 3
    voxceleb = three & ((first == "1") | (first == "0"))
    target = third == "target"
    kaldi = three & ~voxceleb & (target | (third == "nontarget"))
    unknown = three & ~voxceleb & ~kaldi
    if unknown.any():
        raise SvmixError(f"{path}:{lines[np.argmax(unknown)]}: {FORMAT_HINT}")
    enroll = np.where(voxceleb, second, first).tolist()
    test = np.where(voxceleb, third, second).tolist()
    labels = np.full(len(chunk), UNLABELLED, dtype=np.int8)
    labels[voxceleb] = first[voxceleb] == "1"
    labels[kaldi] = target[kaldi]
    return enroll, test, labels


def missing_message(missing_ids: Sequence[str], n_affected: int, n_trials: int, source: str) -> str:
    """One line: how many utterances are missing, in how many trials, and the first one."""
    return (f"{len(set(missing_ids))} utterances named in {n_affected} of {n_trials} trials are missing "
            f"from {source}; first missing: '{missing_ids[0]}'")


def check_labels(path: str, labels: np.ndarray, lines: np.ndarray) -> None:
    """Every trial labelled, or none: else a one-line error naming the first line that differs."""
    labelled = labels != UNLABELLED
    if len(labelled) and not (labelled.all() or not labelled.any()):
        i = int(np.argmax(labelled != labelled[0]))
        raise SvmixError(str(label_mix_problem(path, int(lines[0]), bool(labelled[0]), int(lines[i]))))


def read_trial_index(path: os.PathLike, vocab: Dict[str, int], grow: bool = False,
                     skip_missing: bool = False, source: str = "the embeddings") -> TrialIndex:
    """Read trials as codes into ``vocab`` (id -> index).

    With ``grow`` unknown ids are added to ``vocab``. Otherwise a trial naming an unknown id is an
    error naming the first such id and how many trials are affected, or with ``skip_missing`` it is
    dropped and counted.
    """
    path = str(path)
    enrolls, tests, labels, line_numbers = [], [], [], []
    missing: List[str] = []  # in order of appearance, with repeats
    for chunk in iter_token_chunks(path):
        enroll, test, label = parse_trial_chunk(path, chunk)
        enroll_codes, test_codes = encode_ids(enroll, vocab, grow), encode_ids(test, vocab, grow)
        if enroll_codes.min(initial=0) < 0 or test_codes.min(initial=0) < 0:
            rows = np.flatnonzero((enroll_codes < 0) | (test_codes < 0))
            missing += [utt for row in rows for utt in (enroll[row], test[row]) if utt not in vocab]
        enrolls.append(enroll_codes)
        tests.append(test_codes)
        labels.append(label)
        line_numbers.append(chunk.lines.astype(np.int64))
    if not enrolls:
        raise SvmixError(f"{path}: no trials")
    enroll, test = np.concatenate(enrolls), np.concatenate(tests)
    label, lines = np.concatenate(labels), np.concatenate(line_numbers)
    check_labels(path, label, lines)
    skipped = 0
    if missing:
        keep = (enroll >= 0) & (test >= 0)
        skipped = int(len(keep) - np.count_nonzero(keep))
        message = missing_message(missing, skipped, len(keep), source)
        if not skip_missing:
            raise SvmixError(f"{path}: {message} (use --skip-missing to drop those trials)")
        log.warning("%s: skipping trials: %s", path, message)
        enroll, test, label, lines = enroll[keep], test[keep], label[keep], lines[keep]
        if len(enroll) == 0:
            raise SvmixError(f"{path}: every trial names an utterance missing from {source}")
    return TrialIndex(enroll.astype(np.int32), test.astype(np.int32), label, skipped, lines)


def trial_index_from_pairs(pairs: Sequence, vocab: Dict[str, int], source: str = "the embeddings") -> TrialIndex:
    """A ``TrialIndex`` from ``Trial`` objects or ``(enroll, test[, label])`` tuples."""
    rows = [(t.enroll, t.test, t.label) if hasattr(t, "enroll") else (tuple(t) + (None,))[:3] for t in pairs]
    if not rows:
        raise SvmixError("no trials")
    enroll = encode_ids([r[0] for r in rows], vocab)
    test = encode_ids([r[1] for r in rows], vocab)
    affected = (enroll < 0) | (test < 0)
    if affected.any():
        names = [utt for row in np.flatnonzero(affected) for utt in rows[row][:2] if utt not in vocab]
        raise SvmixError(missing_message(names, int(affected.sum()), len(rows), source))
    labels = np.array([UNLABELLED if r[2] is None else int(r[2]) for r in rows], dtype=np.int8)
    check_labels("trials", labels, np.arange(1, len(rows) + 1))
    return TrialIndex(enroll.astype(np.int32), test.astype(np.int32), labels)
