"""The evaluation segmentation and scoring rule (docs/method.md §Evaluation).

An utterance becomes ``num_segments`` fixed-length segments: one at most ``segment_samples`` long
is wrap-padded (tiled) to that length and repeated; a longer one is cut at starts
``int(linspace(0, N - segment_samples, num_segments))``. A trial's score is the mean of all
segment-pair cosine similarities. A one-pass model (``SpeakerModel.one_pass``, e.g. the
``svmixer_anylen`` encoder) is not segmented: the whole utterance is its one input, and a trial's
score is the cosine of the two embeddings (:func:`evaluation_inputs`).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def segment_starts(num_samples: int, segment_samples: int, num_segments: int) -> np.ndarray:
    """Start sample of each segment (all 0 when the utterance is wrap-padded to one segment)."""
    if num_samples <= segment_samples:
        return np.zeros(num_segments, dtype=np.int64)
    return np.linspace(0, num_samples - segment_samples, num_segments).astype(np.int64)


def cut_segments(wav: np.ndarray, starts: np.ndarray, segment_samples: int) -> np.ndarray:
    """(len(starts), segment_samples) segments of ``wav`` at ``starts``; a short ``wav`` is tiled."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or len(wav) == 0:
        raise ValueError(f"expected a non-empty 1-D waveform, got shape {wav.shape}")
    if len(wav) <= segment_samples:
        return np.tile(np.resize(wav, segment_samples), (len(starts), 1))
    return np.stack([wav[s:s + segment_samples] for s in starts])


def segment_waveform(wav: np.ndarray, segment_samples: int, num_segments: int) -> np.ndarray:
    """The evaluation segments of a 1-D waveform: (num_segments, segment_samples) float32."""
    return cut_segments(wav, segment_starts(len(wav), segment_samples, num_segments), segment_samples)


def distinct_segments(wav: np.ndarray, segment_samples: int, num_segments: int) -> Tuple[np.ndarray, np.ndarray]:
    """Only the distinct segments (a short utterance has one) and, for each of the ``num_segments``
    segments, the row of its copy: ``segments[index]`` equals ``segment_waveform(...)``."""
    unique, index = np.unique(segment_starts(len(wav), segment_samples, num_segments), return_inverse=True)
    return cut_segments(wav, unique, segment_samples), index.reshape(-1)


def evaluation_inputs(wav: np.ndarray, segment_samples: int, num_segments: int,
                      one_pass: bool = False, min_samples: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """What extraction embeds for one utterance, as :func:`distinct_segments` gives it (inputs and,
    per embedding, its row); for a one-pass model the whole waveform as one (1, N) input, of at
    least ``min_samples`` (the shortest input a one-pass export takes) or ValueError."""
    if not one_pass:
        return distinct_segments(wav, segment_samples, num_segments)
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or len(wav) == 0:
        raise ValueError(f"expected a non-empty 1-D waveform, got shape {wav.shape}")
    if len(wav) < min_samples:
        raise ValueError(f"{len(wav)} samples, shorter than the {min_samples} samples this one-pass "
                         "embedder takes")
    return wav[None], np.zeros(1, dtype=np.int64)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def segment_pair_score(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity over all pairs of rows of ``a`` (Sa, D) and ``b`` (Sb, D).

    1-D inputs count as one segment, so two single embeddings give their plain cosine."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embedding sizes differ: {a.shape[-1]} vs {b.shape[-1]}")
    return float((l2_normalize(a) @ l2_normalize(b).T).mean())


def mean_embedding(segments: np.ndarray) -> np.ndarray:
    """One embedding for an utterance: the L2-normalised mean of its L2-normalised segment embeddings."""
    return l2_normalize(l2_normalize(np.atleast_2d(segments)).mean(axis=0)).astype(np.float32)
