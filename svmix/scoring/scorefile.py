"""Score files: one ``<enroll> <test> <score>`` line per trial, in trial order."""
from __future__ import annotations

import os
from typing import Dict, Sequence

import numpy as np

from svmix.errors import SvmixError
from svmix.scoring.textio import StringTable, encode_ids, fixed_point_column, iter_token_chunks, join_columns
from svmix.scoring.trials import TrialIndex
from svmix.utils.fileio import atomic_open

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


def read_scores(path: os.PathLike, trials: TrialIndex, vocab: Dict[str, int]) -> np.ndarray:
    """Scores of ``path`` aligned to ``trials`` (codes into ``vocab``) by (enroll, test) pair.

    A file in trial order is taken as is; otherwise pairs are looked up. A trial without a score
    is an error naming the first such pair and how many there are.
    """
    path = str(path)
    enrolls, tests, values = [], [], []
    for chunk in iter_token_chunks(path):
        if np.any(chunk.widths != 3):
            bad = chunk.lines[np.argmax(chunk.widths != 3)]
            raise SvmixError(f"{path}:{bad}: expected '<enroll> <test> <score>'")
        enrolls.append(encode_ids(chunk.tokens[0::3], vocab, grow=True))
        tests.append(encode_ids(chunk.tokens[1::3], vocab, grow=True))
        values.append(_parse_floats(path, chunk.lines, chunk.tokens[2::3]))
    if not values:
        raise SvmixError(f"{path}: no scores")
    width = np.int64(len(vocab))
    keys = np.concatenate(enrolls) * width + np.concatenate(tests)
    scores = np.concatenate(values)
    wanted = trials.enroll.astype(np.int64) * width + trials.test
    if len(keys) == len(wanted) and np.array_equal(keys, wanted):
        return scores
    order = np.argsort(keys, kind="stable")
    position = np.minimum(np.searchsorted(keys[order], wanted), len(keys) - 1)
    found = keys[order][position] == wanted
    if not found.all():
        names = {code: utt for utt, code in vocab.items()}
        i = int(np.argmax(~found))
        raise SvmixError(f"{path}: no score for {int((~found).sum())} of {len(wanted)} trials; first: "
                         f"'{names[int(trials.enroll[i])]} {names[int(trials.test[i])]}'")
    return scores[order][position]
