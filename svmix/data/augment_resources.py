"""Stage 1: lists of augmentation resources (noise, music, babble speech, room impulse responses).

Writes Kaldi-style lists ``<id> <path>`` into the output directory: ``noise.scp``, ``music.scp``,
``speech.scp`` (babble sources) and ``rir.scp``. Sources are real corpora (MUSAN, RIRS_NOISES),
an existing data dir for babble, and/or synthesized audio for whatever kind is still missing.
Every list is always written (possibly empty: training then skips that augmentation type).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from svmix.data import simulate
from svmix.data.audio import SAMPLE_RATE, write_wav
from svmix.data.datadir import read_kv, write_kv
from svmix.errors import SvmixError
from svmix.utils.fileio import check_free_space, read_json, write_json
from svmix.utils.logging import get_logger
from svmix.utils.progress import track

log = get_logger("augment")

KINDS = ("noise", "music", "speech", "rir")
AUDIO_SUFFIXES = (".wav", ".flac")
Entries = List[Tuple[str, str]]


def _entries(files: List[Path], root: Path) -> Entries:
    """``(id, path)`` with ids made from the path relative to ``root`` (unique, no spaces)."""
    return [("-".join(f.relative_to(root).with_suffix("").parts).replace(" ", "_"), str(f.resolve()))
            for f in sorted(files)]


def _audio_files(folder: Path) -> List[Path]:
    return [p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()]


def list_musan(musan_dir: Path) -> Dict[str, Entries]:
    """MUSAN's ``noise``, ``music`` and ``speech`` subfolders (recursive wav/flac)."""
    musan_dir = Path(musan_dir)
    if not musan_dir.is_dir():
        raise SvmixError(f"{musan_dir}: MUSAN directory not found")
    found = {kind: _entries(_audio_files(musan_dir / kind), musan_dir)
             for kind in ("noise", "music", "speech") if (musan_dir / kind).is_dir()}
    if not any(found.values()):
        raise SvmixError(f"{musan_dir}: no audio under noise/, music/ or speech/ (is this MUSAN?)")
    return found


def list_rirs(rirs_dir: Path) -> Entries:
    """RIRS_NOISES simulated RIRs: ``simulated_rirs/*/*/*.wav`` (``rirs_dir`` may be either level)."""
    rirs_dir = Path(rirs_dir)
    if not rirs_dir.is_dir():
        raise SvmixError(f"{rirs_dir}: RIRS_NOISES directory not found")
    root = rirs_dir / "simulated_rirs" if (rirs_dir / "simulated_rirs").is_dir() else rirs_dir
    files = sorted(root.glob("*/*/*.wav"))
    if not files:
        raise SvmixError(f"{rirs_dir}: no simulated_rirs/*/*/*.wav files (is this RIRS_NOISES?)")
    return _entries(files, root)


def list_babble_datadir(data_dir: Path) -> Entries:
    """Babble sources from an existing data dir's wav.scp (e.g. the training set)."""
    return list(read_kv(Path(data_dir) / "wav.scp").items())


SYNTHESIZERS = {
    "noise": lambda rng, n: simulate.colored_noise(n, ("white", "pink", "brown")[int(rng.integers(3))], rng),
    "music": lambda rng, n: simulate.harmonic_tones(n, rng),
    "rir": lambda rng, n: simulate.simulated_rir(rng),
}


CLIP_SECONDS = (5.0, 10.0)  # synthetic noise and music clip lengths
RIR_SECONDS_MAX = 2.0  # an upper bound on a simulated RIR's length (RT60 at most 0.8 s)


def synthesis_bytes(counts: Dict[str, int]) -> int:
    """An upper bound on the disk space of synthesizing ``counts`` clips per kind (16-bit WAVs)."""
    seconds = {"noise": CLIP_SECONDS[1], "music": CLIP_SECONDS[1], "rir": RIR_SECONDS_MAX}
    return sum(int(n * (seconds[kind] * SAMPLE_RATE * 2 + 44)) for kind, n in counts.items())


def synthesize(kind: str, out_dir: Path, count: int, seed: int, seconds: Tuple[float, float] = CLIP_SECONDS) -> Entries:
    """``count`` synthetic clips of ``kind`` as 16 kHz wavs under ``out_dir/kind/``, one seed each."""
    entries = []
    for i in track(range(count), desc=f"synthesizing {kind}", unit="clip", leave=False):
        rng = np.random.default_rng([seed, KINDS.index(kind), i])
        num_samples = int(rng.uniform(*seconds) * SAMPLE_RATE)
        path = out_dir / kind / f"{kind}-{i:05d}.wav"
        write_wav(path, SYNTHESIZERS[kind](rng, num_samples))
        entries.append((f"synthetic-{kind}-{i:05d}", str(path.resolve())))
    return entries


def prepare_augment(out: Path, musan: Optional[Path] = None, rirs: Optional[Path] = None,
                    babble_data: Optional[Path] = None, synthetic: bool = False, num_noises: int = 200,
                    num_music: int = 100, num_rirs: int = 200, seed: int = 0) -> Dict[str, int]:
    """Write ``noise/music/speech/rir.scp`` into ``out``; returns the number of entries per list.

    Real sources are listed first; with ``synthetic`` every kind still empty (except speech) is
    synthesized. Idempotent: an unchanged request on a finished directory does nothing.
    """
    out = Path(out)
    request = {"musan": str(Path(musan).resolve()) if musan else None,
               "rirs": str(Path(rirs).resolve()) if rirs else None,
               "babble_data": str(Path(babble_data).resolve()) if babble_data else None,
               "synthetic": synthetic, "num_noises": num_noises, "num_music": num_music,
               "num_rirs": num_rirs, "seed": seed, "version": 1}
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    done_file = out / ".done"
    if done_file.is_file() and read_json(done_file).get("digest") == digest and \
            all((out / f"{kind}.scp").is_file() for kind in KINDS):
        log.info("%s: augmentation lists already complete", out)
        return read_json(done_file)["counts"]

    lists: Dict[str, Entries] = {kind: [] for kind in KINDS}
    if musan:
        lists.update(list_musan(Path(musan)))
    if rirs:
        lists["rir"] = list_rirs(Path(rirs))
    if babble_data:
        lists["speech"] = list_babble_datadir(Path(babble_data))
    if synthetic:
        counts = {kind: count for kind, count in (("noise", num_noises), ("music", num_music), ("rir", num_rirs))
                  if not lists[kind]}
        check_free_space(out, synthesis_bytes(counts), "synthesizing augmentation audio")
        for kind, count in counts.items():
            lists[kind] = synthesize(kind, out / "wav", count, seed)
    if not any(lists.values()):
        log.warning("no augmentation sources given (--musan, --rirs, --babble-data or --synthetic): "
                    "all lists are empty and training will not augment")
    for kind in KINDS:
        if not lists[kind]:
            log.warning("no %s resources: training skips that augmentation type", kind)
        write_kv(out / f"{kind}.scp", lists[kind])
    counts = {kind: len(entries) for kind, entries in lists.items()}
    write_json(done_file, {"digest": digest, "request": request, "counts": counts})
    log.info("augmentation lists in %s: %s", out, counts)
    return counts
