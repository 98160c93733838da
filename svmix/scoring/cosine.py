"""Chunked cosine scoring of trials, for embedding vectors and for segment matrices (docs/method.md §Evaluation).

A segment-matrix trial scores the mean of all S_a x S_b cross-segment cosines. That mean equals
the dot product of the two utterances' mean *L2-normalised* segments, so every utterance is reduced
once to one "scoring vector" and all trials, vectors or segments alike, are row-wise dot products.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from svmix.scoring.embeddings import Embeddings

DEFAULT_CHUNK = 512  # trials per block: small blocks keep both (chunk, D) gathers in cache
EPS = 1e-12


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def scoring_vectors(embeddings: Embeddings, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, D) float32: the unit embedding, or the mean of the unit segments, after subtracting ``mean``."""
    shift = np.zeros(embeddings.dim, np.float32) if mean is None else np.asarray(mean, np.float32)
    if shift.shape != (embeddings.dim,):
        raise ValueError(f"mean has shape {shift.shape}, embeddings have dimension {embeddings.dim}")
    if not embeddings.segmented:
        return unit_rows(embeddings.data - shift).astype(np.float32)
    counts = np.array([len(m) for m in embeddings.data])
    segments = unit_rows(np.concatenate(embeddings.data) - shift)
    sums = np.add.reduceat(segments, np.r_[0, np.cumsum(counts)[:-1]], axis=0)
    return (sums / counts[:, None]).astype(np.float32)


def cosine_scores(vectors: np.ndarray, enroll: np.ndarray, test: np.ndarray,
                  chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """Scores ``vectors[enroll[i]] . vectors[test[i]]`` in blocks of ``chunk_size`` trials."""
    scores = np.empty(len(enroll), dtype=np.float32)
    for start in range(0, len(enroll), chunk_size):
        stop = start + chunk_size
        np.einsum("ij,ij->i", vectors[enroll[start:stop]], vectors[test[start:stop]], out=scores[start:stop])
    return scores
