"""KD on unlabelled audio (``train.kd_unlabelled``, beyond the paper): a second stream of training crops,
from a data dir without speaker labels, whose only loss is distillation
(docs/method.md §KD on unlabelled audio).

The crops, teacher targets, masks and augmentation are the labelled set's (:class:`TrainingSet`, with
every label 0), and the batches come from the same deterministic sampler, so a resumed run replays
exactly what an uninterrupted one would have seen: the stream's position (epoch, batch) is part of the
training state. Its epochs are its own; the labelled set's epochs, early stopping and ``train.epochs``
do not depend on it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from svmix.data.audio import scan_cache_path
from svmix.data.datadir import DataDir
from svmix.data.index import utterance_keys
from svmix.data.shards import is_shard_dir
from svmix.errors import SvmixError
from svmix.train.dataset import TrainingSet
from svmix.train.sampler import ShardedBatchSampler


def unlabelled_utterances(data_dir: os.PathLike) -> "tuple[list, list]":
    """``(utts, paths)`` of a Kaldi data dir's ``wav.scp`` (``utt2spk`` is not read)."""
    if is_shard_dir(data_dir):
        raise SvmixError(f"--kd-data {data_dir}: KD on unlabelled audio reads a Kaldi data dir (wav.scp), "
                         "not audio shards")
    wav_scp = DataDir(data_dir).wav_scp
    utts = sorted(wav_scp)
    if not utts:
        raise SvmixError(f"--kd-data {data_dir}: wav.scp lists no utterances")
    return utts, [wav_scp[u] for u in utts]


class UnlabelledStream:
    """Batches of unlabelled crops for as many steps as training takes, epoch after epoch.

    ``batch_size`` is the global batch of one optimiser step (all micro-batches, all ranks); this
    rank takes its share, as the labelled sampler does."""

    def __init__(self, data_dir: os.PathLike, batch_size: int, seed: int, rank: int, world_size: int,
                 crop_args: tuple, num_workers: int, preload: bool, progress: bool, pin_memory: bool,
                 worker_init_fn=None):
        utts, paths = unlabelled_utterances(data_dir)
        self.data_dir, self.num_utts = str(data_dir), len(utts)
        labels = np.zeros(len(utts), dtype=np.int64)
        self.dataset = TrainingSet(utts, paths, labels, *crop_args, preload=preload, progress=progress,
                                   scan_cache=scan_cache_path(data_dir))
        try:
            self.sampler = ShardedBatchSampler(labels, batch_size, seed, rank, world_size, False,
                                               utterance_keys(utts))
        except SvmixError as e:
            raise SvmixError(f"--kd-data {data_dir}: {e} (train.kd_unlabelled.batch_size)") from None
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=num_workers,
                                 worker_init_fn=worker_init_fn, generator=torch.Generator().manual_seed(seed),
                                 pin_memory=pin_memory, persistent_workers=num_workers > 0)
        self.epoch, self.batch = 0, 0
        self._batches: Optional[Iterator[Dict[str, torch.Tensor]]] = None

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "num_utts": self.num_utts}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state["num_utts"] != self.num_utts:
            raise SvmixError(f"--kd-data {self.data_dir}: the checkpoint was trained with {state['num_utts']} "
                             f"unlabelled utterances, this data dir has {self.num_utts}; use a new experiment directory")
        self.epoch, self.batch, self._batches = int(state["epoch"]), int(state["batch"]), None

    def next(self) -> Dict[str, torch.Tensor]:
        if self._batches is None:
            self.sampler.set_epoch(self.epoch, self.batch)
            self._batches = iter(self.loader)
        batch = next(self._batches)
        self.batch += 1
        if self.batch == self.sampler.batches_per_epoch:
            self.epoch, self.batch, self._batches = self.epoch + 1, 0, None
        return batch
