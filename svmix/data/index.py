"""Compact per-utterance tables for million-utterance corpora.

DataLoader workers are forked from the trainer and share its memory copy-on-write. A Python list
of a million ``str`` objects is copied page by page into every worker as items are touched (each
access writes the object's reference count). :class:`StringArray` keeps the strings in one NumPy
byte buffer plus offsets, so touching an entry reads the buffer and copies nothing.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Iterator, Sequence

import numpy as np


SEED_BITS = 62  # sample seeds are in [0, 2**62)


class StringArray(Sequence):
    """An immutable sequence of strings stored as UTF-8 bytes in a NumPy buffer with int64 offsets."""

    def __init__(self, strings: Iterable[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} strings")
        return self.data[self.offsets[index]:self.offsets[index + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.offsets.nbytes)


def group_by_label(labels: np.ndarray):
    """``(order, starts)``: the indices of label ``k`` are ``order[starts[k]:starts[k + 1]]``."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(int(labels.max()) + 2 if len(labels) else 1))
    return order, starts


def utterance_keys(utts: Iterable[str]) -> np.ndarray:
    """A stable 64-bit key per utterance id (BLAKE2b of its UTF-8 bytes), as uint64."""
    return np.array([int.from_bytes(hashlib.blake2b(u.encode("utf-8"), digest_size=8).digest(), "little")
                     for u in utts], dtype=np.uint64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def example_seeds(seed: int, epoch: int, keys: np.ndarray) -> np.ndarray:
    """The crop/augmentation seed of each utterance (by key) in ``epoch``: a function of
    ``(seed, epoch, utterance)`` only, as int64 in [0, 2**62)."""
    with np.errstate(over="ignore"):
        salt = _mix64(np.uint64(seed % 2 ** 64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(epoch % 2 ** 64))
        mixed = _mix64(np.asarray(keys, dtype=np.uint64) ^ salt)
    return (mixed >> np.uint64(64 - SEED_BITS)).astype(np.int64)
