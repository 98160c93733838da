"""Adaptive symmetric score normalisation (AS-norm) with a top-N cohort.

For a trial (e, t) with raw score s, each side is normalised by the mean and standard deviation
(population, ddof 0) of its N highest scores against the cohort, and the two are averaged:
    s' = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2.
Cohort scores use the same rule as trials (dot products of scoring vectors), so segment matrices
work too. The cohort is speaker-mean embeddings when an utt2spk is given, else its entries as is.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

import numpy as np

from svmix.errors import SvmixError
from svmix.scoring.cosine import unit_rows, scoring_vectors
from svmix.scoring.embeddings import Embeddings
from svmix.scoring.norms import SCORE_NORMS
from svmix.utils.logging import get_logger

log = get_logger("scoring.asnorm")

COHORT_BLOCK = 1 << 24  # cohort-score matrix elements per block


def cohort_vectors(cohort: Embeddings, mean: Optional[np.ndarray] = None,
                   utt2spk: Optional[Mapping[str, str]] = None) -> np.ndarray:
    """(K, D) cohort scoring vectors: per entry, or with ``utt2spk`` one unit mean per speaker."""
    vectors = scoring_vectors(cohort, mean)
    if utt2spk is None:
        return vectors
    missing = [utt for utt in cohort.ids if utt not in utt2spk]
    if missing:
        raise SvmixError(f"{cohort.source}: {len(missing)} cohort utterances have no speaker in the cohort "
                         f"utt2spk; first: '{missing[0]}'")
    speakers, codes = np.unique([utt2spk[utt] for utt in cohort.ids], return_inverse=True)
    sums = np.zeros((len(speakers), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, vectors)
    return unit_rows(sums).astype(np.float32)


def top_n_stats(vectors: np.ndarray, cohort: np.ndarray, top_n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and std of each row's ``top_n`` highest cohort scores, in blocks of rows."""
    rows = max(1, COHORT_BLOCK // len(cohort))
    means = np.empty(len(vectors))
    stds = np.empty(len(vectors))
    for start in range(0, len(vectors), rows):
        scores = vectors[start:start + rows] @ cohort.T
        top = np.partition(scores, len(cohort) - top_n, axis=1)[:, len(cohort) - top_n:].astype(np.float64)
        means[start:start + rows] = top.mean(axis=1)
        stds[start:start + rows] = top.std(axis=1)
    return means, np.maximum(stds, 1e-12)


@SCORE_NORMS.register("asnorm")
class ASNorm:
    def __init__(self, cohort: Optional[np.ndarray] = None, top_n: int = 300):
        if cohort is None or len(cohort) == 0:
            raise SvmixError("AS-norm needs a cohort (--cohort COHORT.scp)")
        if top_n < 1:
            raise SvmixError(f"--top-n must be at least 1, got {top_n}")
        if top_n > len(cohort):
            log.warning("top-N %d exceeds the cohort size %d; using the whole cohort", top_n, len(cohort))
        self.cohort = np.asarray(cohort, dtype=np.float32)
        self.top_n = min(top_n, len(cohort))

    def __call__(self, scores: np.ndarray, vectors: np.ndarray, enroll: np.ndarray, test: np.ndarray,
                 chunk_size: int) -> np.ndarray:
        used = np.zeros(len(vectors), dtype=bool)
        used[enroll] = True
        used[test] = True
        rows = np.flatnonzero(used)
        means = np.zeros(len(vectors))
        stds = np.ones(len(vectors))
        means[rows], stds[rows] = top_n_stats(vectors[rows], self.cohort, self.top_n)
        out = np.empty(len(scores), dtype=np.float64)
        for start in range(0, len(scores), chunk_size):
            block = slice(start, start + chunk_size)
            s = scores[block].astype(np.float64)
            e, t = enroll[block], test[block]
            out[block] = 0.5 * ((s - means[e]) / stds[e] + (s - means[t]) / stds[t])
        return out
