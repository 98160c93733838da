"""Training examples: a random 3 s crop (augmented for the student), its speaker label, and the
teacher target for the *clean* crop.

A crop starts at a multiple of the 320-sample frame shift, so the crop at sample 320k covers teacher
frames k .. k+T-1 of the utterance. Utterances shorter than the crop are wrap-padded; teacher frames
past their real end do not exist and are masked out of the KD loss (``mask`` False).

Items are ``(utterance index, sample seed)`` pairs from :class:`ShardedBatchSampler`; the seed
drives the crop and augmentation.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from svmix.data.audio import load_audio, scan_audio
from svmix.data.index import StringArray, group_by_label
from svmix.errors import AudioError
from svmix.train.augment import Augmenter
from svmix.utils.progress import track


def valid_frames(num_samples: int, window: int = 400, shift: int = 320) -> int:
    """Frames whose whole receptive field lies inside ``num_samples`` samples."""
    return max(0, (num_samples - window) // shift + 1)


class CropExamples:
    """Training examples from an utterance's audio: crop, teacher target, mask and augmentation (shared
    by the map-style :class:`TrainingSet` and the audio-shard stream, :mod:`svmix.data.shards`)."""

    def __init__(self, segment_samples: int, seq_len: int, frame_shift: int = 320, cache=None,
                 cache_layers: Sequence[int] = (), augmenter: Optional[Augmenter] = None, return_clean: bool = False):
        self.segment_samples, self.seq_len, self.frame_shift = segment_samples, seq_len, frame_shift
        self.cache = cache
        self.cache_rows = [cache.layers.index(layer) for layer in cache_layers] if cache is not None else []
        self.augmenter = augmenter
        self.return_clean = return_clean

    def crop(self, wav: np.ndarray, rng: np.random.Generator):
        """Random crop → (segment, first teacher frame, number of valid teacher frames)."""
        n = self.segment_samples
        if len(wav) < n:
            return np.resize(wav, n), 0, min(self.seq_len, valid_frames(len(wav), shift=self.frame_shift))
        start_frame = int(rng.integers(0, (len(wav) - n) // self.frame_shift + 1))
        start = start_frame * self.frame_shift
        return wav[start:start + n], start_frame, self.seq_len

    def example(self, wav: np.ndarray, label: int, utt: str, seed: int) -> Dict[str, torch.Tensor]:
        """The training example of utterance ``utt`` (audio ``wav``) under sample seed ``seed``."""
        rng = np.random.default_rng(seed)
        clean, start_frame, num_valid = self.crop(wav, rng)
        mask = torch.zeros(self.seq_len, dtype=torch.bool)
        example = {"label": torch.tensor(label, dtype=torch.long)}
        if self.cache is not None:
            num_valid = max(0, min(num_valid, self.cache.num_frames(utt) - start_frame))
            frames = self.cache.frames(utt, start_frame, num_valid)[self.cache_rows]
            target = np.zeros((len(self.cache_rows), self.seq_len, frames.shape[-1]), dtype=np.float32)
            target[:, :num_valid] = frames
            example["target"] = torch.from_numpy(target)
        mask[:num_valid] = True
        example["mask"] = mask
        if self.return_clean:
            example["clean"] = torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32))
        wav = self.augmenter(clean, rng, label) if self.augmenter is not None else clean
        example["wav"] = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        example["start_frame"] = torch.tensor(start_frame, dtype=torch.long)
        return example


class TrainingSet(CropExamples, Dataset):
    """Utterance ids, paths and labels are held in NumPy arrays (:class:`StringArray`), not lists of
    Python objects, so DataLoader workers do not copy the index page by page as they touch it.
    ``scan_cache`` is the audio-scan cache file (:func:`svmix.data.audio.scan_audio`)."""

    def __init__(self, utts: Sequence[str], paths: Sequence[str], labels: Sequence[int], segment_samples: int,
                 seq_len: int, frame_shift: int = 320, cache=None, cache_layers: Sequence[int] = (),
                 augmenter: Optional[Augmenter] = None, return_clean: bool = False, preload: bool = False,
                 progress: bool = False, scan_cache: Optional[str] = None):
        super().__init__(segment_samples, seq_len, frame_shift, cache, cache_layers, augmenter, return_clean)
        self.utts, self.paths = StringArray(utts), StringArray(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._label_order, self._label_starts = group_by_label(self.labels)
        self.speakers_present = np.flatnonzero(np.diff(self._label_starts) > 0)
        self.audio: Optional[List[np.ndarray]] = None
        if not preload:
            # Find missing or unreadable files now, not hours into training.
            _, bad = scan_audio(dict(zip(utts, paths)), progress=progress, cache=scan_cache)
            if bad:
                utt = next(iter(bad))
                raise AudioError(f"{bad[utt]} ({len(bad)} bad training file(s); "
                                 "svmix-validate-data --fix drops them)")
        else:
            self.audio = [load_audio(p, u) for u, p in track(zip(utts, paths), total=len(self.utts),
                                                              desc="loading audio", unit="utt", leave=False,
                                                              enabled=progress)]

    def __len__(self) -> int:
        return len(self.utts)

    def load(self, index: int) -> np.ndarray:
        if self.audio is not None:
            return self.audio[index]
        return load_audio(self.paths[index], self.utts[index])

    def other_speech(self, rng: np.random.Generator, count: int, exclude_label: int) -> List[np.ndarray]:
        """Crops of ``count`` random utterances by speakers other than ``exclude_label`` (babble)."""
        others = self.speakers_present[self.speakers_present != exclude_label]
        if not len(others):
            others = self.speakers_present
        waves = []
        for _ in range(count):
            label = int(others[int(rng.integers(len(others)))])
            lo, hi = self._label_starts[label], self._label_starts[label + 1]
            wav = self.load(int(self._label_order[lo + int(rng.integers(hi - lo))]))
            waves.append(self.crop(wav, rng)[0])
        return waves

    def __getitem__(self, item) -> Dict[str, torch.Tensor]:
        index, seed = item
        return self.example(self.load(index), int(self.labels[index]), self.utts[index], seed)

