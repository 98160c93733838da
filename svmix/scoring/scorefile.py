"""Score files: one ``<enroll> <test> <score>`` line per trial, in trial order."""
from __future__ import annotations

import os
from typing import Dict, Sequence, Tuple

import numpy as np

from svmix.errors import SvmixError
from svmix.scoring.textio import StringTable, encode_ids, fixed_point_column, iter_token_chunks, join_columns
from svmix.scoring.trials import TrialIndex
from svmix.utils.fileio import atomic_open
from svmix.utils.logging import get_logger

log = get_logger("scoring.scorefile")

WRITE_CHUNK = 1 << 18
SCORE_DECIMALS = 6


def write_scores(path: os.PathLike, ids: Sequence[str], trials: TrialIndex, scores: np.ndarray,
                 chunk_size: int = WRITE_CHUNK) -> None:
    """Write ``<enroll> <test> <score>`` lines (score as ``%.6f``) atomically; ``ids`` decodes the trial codes."""
    names = StringTable(ids)
    with atomic_open(path, "wb") as f:
        for start in range(0, len(trials), chunk_size):
            block = slice(start, start + chunk_size)
            f.write(join_columns([names.column(trials.enroll[block]), names.column(trials.test[block]),
                                  fixed_point_column(scores[block], SCORE_DECIMALS)]))


def _parse_floats(path: str, lines: np.ndarray, tokens: Sequence[str]) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        for line, token in zip(lines, tokens):
            try:
                float(token)
            except ValueError:
                raise SvmixError(f"{path}:{line}: score '{token}' is not a number") from None
        raise


def _pair(names: Dict[int, str], key: int, width: int) -> str:
    return f"'{names[key // width]} {names[key % width]}'"


def read_score_lines(path: os.PathLike, vocab: Dict[str, int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(enroll codes, test codes, scores, line numbers)`` of a score file, in file order; ids are
    added to ``vocab``. One-line errors name the file and line: a line that is not
    ``<enroll> <test> <score>`` and a score that is not a number or not finite."""
    path = str(path)
    enrolls, tests, values, line_numbers = [], [], [], []
    for chunk in iter_token_chunks(path):
        if np.any(chunk.widths != 3):
            bad = chunk.lines[np.argmax(chunk.widths != 3)]
            raise SvmixError(f"{path}:{bad}: expected '<enroll> <test> <score>'")
        enrolls.append(encode_ids(chunk.tokens[0::3], vocab, grow=True))
        tests.append(encode_ids(chunk.tokens[1::3], vocab, grow=True))
        values.append(_parse_floats(path, chunk.lines, chunk.tokens[2::3]))
        line_numbers.append(chunk.lines)
    if not values:
        raise SvmixError(f"{path}: no scores")
    scores, lines = np.concatenate(values), np.concatenate(line_numbers)
    not_finite = ~np.isfinite(scores)
    if not_finite.any():
        i = int(np.argmax(not_finite))
        raise SvmixError(f"{path}:{lines[i]}: score {scores[i]} is not finite "
                         f"({int(not_finite.sum())} of {len(scores)} scores are NaN or infinite)")
    return np.concatenate(enrolls), np.concatenate(tests), scores, lines


def read_scores(path: os.PathLike, trials: TrialIndex, vocab: Dict[str, int]) -> np.ndarray:
    """Scores of ``path`` aligned to ``trials`` (codes into ``vocab``) by (enroll, test) pair.

    A file in trial order is taken as is; otherwise pairs are looked up. Besides the errors of
    :func:`read_score_lines`, one-line errors name a pair scored twice (both lines) and a trial
    without a score (the first such pair and how many). Lines scoring pairs that are not trials are
    ignored with a warning that counts them and names the first.
    """
    path = str(path)
    enroll, test, scores, lines = read_score_lines(path, vocab)
    width = np.int64(len(vocab))
    keys = enroll * width + test
    wanted = trials.enroll.astype(np.int64) * width + trials.test
    if len(keys) == len(wanted) and np.array_equal(keys, wanted):
        return scores
    names = None
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if len(repeated):
        names = {code: utt for utt, code in vocab.items()}
        first, again = order[repeated], order[repeated + 1]  # stable sort: ``first`` is the earlier line
        k = int(np.argmin(lines[again]))
        raise SvmixError(f"{path}:{lines[again[k]]}: pair {_pair(names, int(keys[again[k]]), int(width))} is "
                         f"scored twice (also on line {lines[first[k]]}; scores {scores[first[k]]:g} and "
                         f"{scores[again[k]]:g}); {len(repeated)} duplicate lines")
    position = np.minimum(np.searchsorted(sorted_keys, wanted), len(keys) - 1)
    found = sorted_keys[position] == wanted
    if not found.all():
        names = {code: utt for utt, code in vocab.items()}
        i = int(np.argmax(~found))
        raise SvmixError(f"{path}: no score for {int((~found).sum())} of {len(wanted)} trials; first: "
                         f"'{names[int(trials.enroll[i])]} {names[int(trials.test[i])]}'")
    extra = ~np.isin(keys, wanted)
    if extra.any():
        names = names or {code: utt for utt, code in vocab.items()}
        i = int(np.argmax(extra))
        log.warning("%s: ignoring %d line(s) scoring pairs that are not in the trials; first: line %d %s",
                    path, int(extra.sum()), lines[i], _pair(names, int(keys[i]), int(width)))
    return scores[order][position]
