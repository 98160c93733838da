"""Deterministic, resumable, DDP-sharded batch sampling.

Each epoch's global batches are a pure function of ``(seed, epoch)``: batch ``b`` is the same list
of ``(utterance index, sample seed)`` pairs whatever the number of ranks or workers, and rank ``r``
of ``W`` takes items ``r::W`` of it. The per-item sample seed drives the crop and augmentation, so
data do not depend on DataLoader worker scheduling, and resuming at ``(epoch, batch)`` replays
exactly what an uninterrupted run would have seen.
"""
from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

import numpy as np
from torch.utils.data import Sampler

from svmix.errors import SvmixError

Item = Tuple[int, int]  # (utterance index, sample seed)


class ShardedBatchSampler(Sampler):
    def __init__(self, labels: Sequence[int], batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 speaker_balanced: bool = False):
        if batch_size % world_size:
            raise SvmixError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        if len(labels) < batch_size:
            raise SvmixError(f"batch size {batch_size} is larger than the {len(labels)} training utterances")
        self.labels = np.asarray(labels)
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.speaker_balanced = speaker_balanced
        self.by_speaker = [np.flatnonzero(self.labels == s) for s in range(int(self.labels.max()) + 1)]
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
            speakers = rng.integers(0, len(self.by_speaker), size=n)
            order = np.array([self.by_speaker[s][rng.integers(len(self.by_speaker[s]))] for s in speakers])
        else:
            order = rng.permutation(len(self.labels))[:n]
        seeds = rng.integers(0, 2 ** 62, size=n)
        return order, seeds

    def __iter__(self) -> Iterator[List[Item]]:
        order, seeds = self._epoch_items()
        for b in range(self.start_batch, self.batches_per_epoch):
            sl = slice(b * self.batch_size + self.rank, (b + 1) * self.batch_size, self.world_size)
            yield [(int(i), int(s)) for i, s in zip(order[sl], seeds[sl])]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch
