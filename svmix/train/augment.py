"""Augmentation of training crops on the fly (docs/method.md §Augmentation): with probability p, one type drawn uniformly
from those available.

Types (registry ``AUGMENTATIONS``): ``noise`` (MUSAN noise, 0–15 dB), ``music`` (5–15 dB),
``babble`` (4–7 sources averaged, 13–20 dB; MUSAN speech when ``speech.scp`` lists any, otherwise
other training speakers), ``reverb`` (``rir.scp``, or a simulated shoebox RIR when the list is
missing and ``simulated_rir`` is on), ``colored_noise`` (white/pink/brown, 5–20 dB) and ``clip``
(at U(0.3, 0.9) × peak). A type whose resources are missing is skipped.

The augmentation dir (stage 1) holds ``noise.scp``, ``music.scp``, ``speech.scp``, ``rir.scp``
(``<id> <wav path>``), any of which may be missing or empty. Every random choice comes from the
``rng`` passed in, so a crop's augmentation is a function of its sample seed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from svmix.data import simulate
from svmix.data.audio import load_audio
from svmix.data.datadir import read_kv
from svmix.errors import SvmixError
from svmix.registry import Registry

AUGMENTATIONS = Registry("augmentation")
LISTS = ("noise", "music", "speech", "rir")

# train.augment defaults (resolved into every saved config); valid ranges: svmix.train.config.SCHEMA
DEFAULT_AUGMENT_CONFIG: Dict[str, Any] = {
    "p": 0.8,
    "types": ["reverb", "babble", "music", "noise", "colored_noise", "clip"],
    "noise_snr": [0.0, 15.0],
    "music_snr": [5.0, 15.0],
    "babble_snr": [13.0, 20.0],
    "babble_sources": [4, 7],
    "colored_noise_snr": [5.0, 20.0],
    "colors": ["white", "pink", "brown"],
    "clip_ratio": [0.3, 0.9],
    "simulated_rir": True,
}

# other_speech(rng, count, exclude_label) -> list of waveforms from other training speakers
SpeechSource = Callable[[np.random.Generator, int, int], List[np.ndarray]]


class AugmentResources:
    """The file lists of an augmentation dir plus the training-speech source for babble."""

    def __init__(self, augment_dir: Optional[os.PathLike] = None, other_speech: Optional[SpeechSource] = None):
        self.lists: Dict[str, List[str]] = {name: [] for name in LISTS}
        if augment_dir is not None:
            augment_dir = Path(augment_dir)
            if not augment_dir.is_dir():
                raise SvmixError(f"{augment_dir}: augmentation directory not found")
            for name in LISTS:
                path = augment_dir / f"{name}.scp"
                if path.is_file():
                    self.lists[name] = list(read_kv(path).values())
        self.other_speech = other_speech

    def random_file(self, name: str, rng: np.random.Generator) -> np.ndarray:
        paths = self.lists[name]
        path = paths[int(rng.integers(len(paths)))]
        return load_audio(path, f"{name}.scp entry", allow_silent=True)


def _crop(wave: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(wave) <= n:
        return wave
    start = int(rng.integers(0, len(wave) - n + 1))
    return wave[start:start + n]


class _FileNoise:
    """Additive noise from one of the augmentation lists at an SNR drawn from ``cfg[snr_key]``."""
    list_name = ""

    def __init__(self, cfg: Dict[str, Any], resources: AugmentResources):
        self.snr, self.resources = cfg[f"{self.list_name}_snr"], resources

    @classmethod
    def available(cls, cfg: Dict[str, Any], resources: AugmentResources) -> bool:
        return bool(resources.lists[cls.list_name])

    def __call__(self, speech: np.ndarray, rng: np.random.Generator, label: int) -> np.ndarray:
        noise = _crop(self.resources.random_file(self.list_name, rng), len(speech), rng)
        return simulate.add_noise(speech, noise, rng.uniform(*self.snr))


@AUGMENTATIONS.register("noise")
class MusanNoise(_FileNoise):
    list_name = "noise"


@AUGMENTATIONS.register("music")
class MusanMusic(_FileNoise):
    list_name = "music"


@AUGMENTATIONS.register("babble")
class Babble:
    def __init__(self, cfg: Dict[str, Any], resources: AugmentResources):
        self.snr, self.sources, self.resources = cfg["babble_snr"], cfg["babble_sources"], resources

    @classmethod
    def available(cls, cfg: Dict[str, Any], resources: AugmentResources) -> bool:
        return bool(resources.lists["speech"]) or resources.other_speech is not None

    def __call__(self, speech: np.ndarray, rng: np.random.Generator, label: int) -> np.ndarray:
        count = int(rng.integers(self.sources[0], self.sources[1] + 1))
        if self.resources.lists["speech"]:
            waves = [_crop(self.resources.random_file("speech", rng), len(speech), rng) for _ in range(count)]
        else:
            waves = self.resources.other_speech(rng, count, label)
        return simulate.add_noise(speech, simulate.babble(waves, len(speech), rng), rng.uniform(*self.snr))


@AUGMENTATIONS.register("reverb")
class Reverb:
    def __init__(self, cfg: Dict[str, Any], resources: AugmentResources):
        self.resources = resources

    @classmethod
    def available(cls, cfg: Dict[str, Any], resources: AugmentResources) -> bool:
        return bool(resources.lists["rir"]) or bool(cfg["simulated_rir"])

    def __call__(self, speech: np.ndarray, rng: np.random.Generator, label: int) -> np.ndarray:
        if self.resources.lists["rir"]:
            rir = self.resources.random_file("rir", rng)[: len(speech)]
        else:
            rir = simulate.simulated_rir(rng)
        return simulate.reverberate(speech, rir)


@AUGMENTATIONS.register("colored_noise")
class ColoredNoise:
    def __init__(self, cfg: Dict[str, Any], resources: AugmentResources):
        self.snr, self.colors = cfg["colored_noise_snr"], cfg["colors"]

    @classmethod
    def available(cls, cfg: Dict[str, Any], resources: AugmentResources) -> bool:
        return True

    def __call__(self, speech: np.ndarray, rng: np.random.Generator, label: int) -> np.ndarray:
        color = self.colors[int(rng.integers(len(self.colors)))]
        return simulate.add_noise(speech, simulate.colored_noise(len(speech), color, rng), rng.uniform(*self.snr))


@AUGMENTATIONS.register("clip")
class Clip:
    def __init__(self, cfg: Dict[str, Any], resources: AugmentResources):
        self.ratio = cfg["clip_ratio"]

    @classmethod
    def available(cls, cfg: Dict[str, Any], resources: AugmentResources) -> bool:
        return True

    def __call__(self, speech: np.ndarray, rng: np.random.Generator, label: int) -> np.ndarray:
        return simulate.clip(speech, rng.uniform(*self.ratio))


class Augmenter:
    """Applies one augmentation, drawn uniformly among the available ``types``, with probability p."""

    def __init__(self, config: Optional[Dict[str, Any]], resources: AugmentResources):
        from svmix.train.config import resolve_augment_config  # (imports this module)

        cfg = resolve_augment_config(config)
        self.p = float(cfg["p"])
        self.augmentations = {}
        for name in cfg["types"]:
            cls = AUGMENTATIONS.get(name)
            if cls.available(cfg, resources):
                self.augmentations[name] = cls(cfg, resources)
        self.names: Sequence[str] = list(self.augmentations)

    def __call__(self, speech: np.ndarray, rng: np.random.Generator, label: int = -1) -> np.ndarray:
        if not self.names or rng.random() >= self.p:
            return speech
        name = self.names[int(rng.integers(len(self.names)))]
        return self.augmentations[name](speech, rng, label).astype(np.float32, copy=False)
