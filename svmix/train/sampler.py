"""Deterministic, resumable, DDP-sharded batch sampling.

Each epoch's global batches are a pure function of ``(seed, epoch)``: batch ``b`` is the same list
of ``(utterance index, sample seed)`` pairs whatever the number of ranks or workers, and rank ``r``
of ``W`` takes items ``r::W`` of it. The per-item sample seed drives the crop and augmentation, so
data do not depend on DataLoader worker scheduling, and resuming at ``(epoch, batch)`` replays
exactly what an uninterrupted run would have seen.

Given utterance keys (:func:`svmix.data.index.utterance_keys`), an item's sample seed is
:func:`svmix.data.index.example_seeds` of ``(seed, epoch, utterance)`` only, not of its position in
the epoch: the audio-shard reader
(:mod:`svmix.data.shards`) visits utterances in another order but draws the same crop of each.
Speaker-balanced sampling draws utterances with replacement, so its seeds stay positional.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import Sampler

from svmix.data.index import SEED_BITS, example_seeds, group_by_label
from svmix.errors import SvmixError

Item = Tuple[int, int]  # (utterance index, sample seed)


class ShardedBatchSampler(Sampler):
    def __init__(self, labels: Sequence[int], batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 speaker_balanced: bool = False, utt_keys: Optional[np.ndarray] = None):
        if batch_size % world_size:
            raise SvmixError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        if len(labels) < batch_size:
            raise SvmixError(f"batch size {batch_size} is larger than the {len(labels)} training utterances")
        self.labels = np.asarray(labels)
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.speaker_balanced = speaker_balanced
        self.utt_keys = None if utt_keys is None else np.asarray(utt_keys, dtype=np.uint64)
        if self.utt_keys is not None and len(self.utt_keys) != len(self.labels):
            raise ValueError("one utterance key per label expected")
        self._order, self._starts = group_by_label(self.labels)
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.labels) // self.batch_size  # drop_last

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _epoch_items(self) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = self.batches_per_epoch * self.batch_size
        if self.speaker_balanced:
            present = np.flatnonzero(np.diff(self._starts) > 0)
            speakers = present[rng.integers(0, len(present), size=n)]
            counts = self._starts[speakers + 1] - self._starts[speakers]
            order = self._order[self._starts[speakers] + (rng.random(n) * counts).astype(np.int64)]
        else:
            order = rng.permutation(len(self.labels))[:n]
        if self.utt_keys is not None and not self.speaker_balanced:
            seeds = example_seeds(self.seed, self.epoch, self.utt_keys[order])
        else:
            seeds = rng.integers(0, 2 ** SEED_BITS, size=n)
        return order, seeds

    def __iter__(self) -> Iterator[List[Item]]:
        order, seeds = self._epoch_items()
        for b in range(self.start_batch, self.batches_per_epoch):
            sl = slice(b * self.batch_size + self.rank, (b + 1) * self.batch_size, self.world_size)
            yield [(int(i), int(s)) for i, s in zip(order[sl], seeds[sl])]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch
