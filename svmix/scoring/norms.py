"""Score normalisations, by name: ``none`` here, ``asnorm`` in ``svmix.scoring.asnorm``.

Every normalisation is built as ``SCORE_NORMS.build({"name": ...}, cohort=vectors_or_None, top_n=N)``
and called as ``norm(scores, vectors, enroll, test, chunk_size)``, where ``vectors`` are the scoring
vectors of the evaluation embeddings and ``enroll``/``test`` index them.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from svmix.errors import SvmixError
from svmix.registry import Registry

SCORE_NORMS = Registry("score normalisation")


@SCORE_NORMS.register("none")
class NoNorm:
    """Raw cosine scores (``top_n`` is accepted for the common interface and unused)."""

    def __init__(self, cohort: Optional[np.ndarray] = None, top_n: Optional[int] = None):
        if cohort is not None:
            raise SvmixError("a cohort is only used by a score normalisation (e.g. --norm asnorm)")

    def __call__(self, scores: np.ndarray, vectors: np.ndarray, enroll: np.ndarray, test: np.ndarray,
                 chunk_size: int) -> np.ndarray:
        return scores
