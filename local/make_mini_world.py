#!/usr/bin/env python3
"""Build the mini world: hundreds of distinct synthetic espeak-ng speakers in disjoint splits.

The speakers are the voices kept by ``local/screen_voices.py`` (allowed base variants and
procedurally generated variants, ``local/voices.py``), listed with the generator's digest in
``local/mini_world_voices.json``. Every voice belongs to exactly one split:

- ``test``  (clean) and ``test_noisy`` (the same utterances reverberated and noised): unseen voices
  with trial lists;
- ``val``: other unseen voices, reverberated and noised, with trials, and ``val_clean``: the same
  utterances and trials before reverberation and noise (the development set of the clean condition);
- ``train``: the labelled student training voices;
- ``pool``: the teacher's pretraining pool, the remaining voices; built only with ``--with-pool``.

Every utterance outside the pool comes through a session channel of its own (a random
microphone-and-room response, ``--channel-db``), as recordings in the wild do; the pool stays clean.
The split of the voices is fixed by the voice list; ``--seed`` drives the sentences, the
per-utterance prosody (rate, pitch, pitch range) and the degradations, so one seed gives
byte-identical audio and lists. Each speaker is synthesized in its own fresh process.

    python local/make_mini_world.py --out data/mini_world --nj 2 [--with-pool]
"""
from __future__ import annotations

import hashlib
import json
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click
import numpy as np

from local.espeak_synth import make_variant_overlays
from local.make_mini_corpus import SpeakerJob, planned_utt2spk, synthesize_jobs, write_subsets
from local.trials import sample_trials
from local.voices import VoiceDefinition, base_voice, definitions_digest, generate_candidates
from svmix.cli import user_errors
from svmix.errors import SvmixError
from svmix.utils.fileio import check_free_space, read_json, write_json
from svmix.utils.logging import get_logger, setup_logging

log = get_logger("mini_world")

DEFAULT_VOICES = Path(__file__).resolve().parent / "mini_world_voices.json"
SPLITS = ("test", "val", "train", "pool")  # order in which the shuffled voices are dealt out
SPLIT_SALT = 1601  # the voices' shuffle depends only on the voice list's generator seed
PARTS = {"main": ("test", "val", "train"), "pool": ("pool",)}  # what the default recipe needs; the teacher's
# split -> {version: data dir}: test and val each in both conditions, the same utterances and trials
OUTPUTS = {"test": {"clean": "test", "noisy": "test_noisy"}, "val": {"clean": "val_clean", "noisy": "val"},
           "train": {"clean": "train"}, "pool": {"clean": "pool"}}


@dataclass(frozen=True)
class MiniWorldConfig:
    seed: int = 0
    num_test_speakers: int = 40
    test_utts_per_speaker: int = 20
    num_test_trials: int = 20000
    num_val_speakers: int = 16
    val_utts_per_speaker: int = 10
    num_val_trials: int = 2000
    num_train_speakers: int = 120
    utts_per_speaker: int = 24
    num_pool_speakers: int = 0  # 0: every voice not in another split
    pool_utts_per_speaker: int = 40
    target_ratio: float = 0.25
    min_seconds: float = 2.0
    max_seconds: float = 6.0
    snr_db: Tuple[float, float] = (5.0, 20.0)
    reverb_prob: float = 0.5
    speed_perturb: bool = False  # read by the shared speaker job; the world makes no perturbed copies
    channel_db: float = 6.0  # session channel of every utterance but the pool's (simulate.random_channel)
    voices_digest: str = ""
    version: int = 3  # 3: val_clean

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def load_voices(path: Path) -> Tuple[List[VoiceDefinition], Dict]:
    """The kept voices of a screening result, regenerated and checked against its digest."""
    path = Path(path)
    if not path.is_file():
        raise SvmixError(f"{path}: no voice list (make one with local/screen_voices.py)")
    info = read_json(path)
    try:
        seed, count, names, digest = info["generator_seed"], info["candidates"], info["kept"], info["digest"]
    except (KeyError, TypeError) as e:
        raise SvmixError(f"{path}: not a voice screening result (missing {e})") from None
    from local.voices import BASE_VARIANTS

    known = {v.name: v for v in [base_voice(b) for b in BASE_VARIANTS] + generate_candidates(seed, count)}
    missing = [n for n in names if n not in known]
    if missing:
        raise SvmixError(f"{path}: voice '{missing[0]}' is not a candidate of generator seed {seed}")
    voices = [known[n] for n in names]
    if definitions_digest(voices) != digest:
        raise SvmixError(f"{path}: the voice generator no longer reproduces these voices (digest "
                         f"{definitions_digest(voices)}, expected {digest}); rerun local/screen_voices.py")
    return voices, info


def split_voices(voices: List[VoiceDefinition], config: MiniWorldConfig, generator_seed: int,
                 ) -> Dict[str, List[VoiceDefinition]]:
    """Disjoint voice lists per split, dealt from one fixed shuffle of the voice list."""
    sizes = {"test": config.num_test_speakers, "val": config.num_val_speakers, "train": config.num_train_speakers}
    needed = sum(sizes.values())
    if needed > len(voices):
        raise SvmixError(f"only {len(voices)} distinct voices: cannot have {sizes['test']} test + "
                         f"{sizes['val']} validation + {sizes['train']} training speakers")
    rest = len(voices) - needed
    if config.num_pool_speakers > rest:
        raise SvmixError(f"only {rest} voices left for the pretraining pool, asked for {config.num_pool_speakers}")
    sizes["pool"] = config.num_pool_speakers or rest
    order = np.random.default_rng([generator_seed, SPLIT_SALT]).permutation(len(voices))
    out, start = {}, 0
    for name in SPLITS:
        out[name] = [voices[i] for i in order[start: start + sizes[name]]]
        start += sizes[name]
    return out


def plan_jobs(splits: Dict[str, List[VoiceDefinition]], config: MiniWorldConfig, out: Path, data_paths: Dict[str, str],
              parts: Tuple[str, ...]) -> List[SpeakerJob]:
    """One job per speaker of the splits in ``parts``; a voice's seed depends on its split and rank."""
    counts = {"test": config.test_utts_per_speaker, "val": config.val_utts_per_speaker,
              "train": config.utts_per_speaker, "pool": config.pool_utts_per_speaker}
    jobs = []
    for split in parts:
        for rank, voice in enumerate(splits[split]):
            jobs.append(SpeakerJob(voice.name, voice.name, [(split, counts[split])],
                                   (config.seed, 16, SPLITS.index(split), rank), str(out), config,
                                   rates=voice.rates, data_path=data_paths[voice.name],
                                   outputs=OUTPUTS))
    return jobs


def plan_trials(jobs: List[SpeakerJob], config: MiniWorldConfig):
    """Trials of val and test (val_clean shares val's, test_noisy test's): from the plan alone, seeded."""
    rng = np.random.default_rng([config.seed, 7919])
    trials = {"val": sample_trials(planned_utt2spk(jobs, "val"), config.num_val_trials, config.target_ratio, rng),
              "test": sample_trials(planned_utt2spk(jobs, "test"), config.num_test_trials, config.target_ratio, rng)}
    trials["test_noisy"], trials["val_clean"] = trials["test"], trials["val"]
    return trials


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_part(out: Path, part: str, splits, config: MiniWorldConfig, nj: int) -> Dict:
    """Synthesize and write one part ("main": train, val, val_clean, test, test_noisy; "pool": pool)."""
    names = ("train", "val", "val_clean", "test", "test_noisy") if part == "main" else ("pool",)
    counts = {"test": 2 * config.test_utts_per_speaker, "val": 2 * config.val_utts_per_speaker,
              "train": config.utts_per_speaker, "pool": config.pool_utts_per_speaker}
    files = sum(counts[split] * len(splits[split]) for split in PARTS[part])
    check_free_space(out, int(files * config.max_seconds * 2 * 16000), f"mini world part '{part}' ({files} wav files)")
    start, cpu = time.time(), time.process_time() + _children_cpu()
    tmp = Path(tempfile.mkdtemp(prefix="svmix-world-"))
    try:
        voices = [v for split in SPLITS for v in splits[split]]  # every split: one overlay layout
        data_paths = make_variant_overlays(tmp, {v.name: v.text for v in voices})
        jobs = plan_jobs(splits, config, out, data_paths, PARTS[part])
        trials = plan_trials(jobs, config) if part == "main" else {}
        jobs = synthesize_jobs(jobs, nj)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    subsets = write_subsets(out, jobs, trials, names)
    shutil.rmtree(out / ".jobs", ignore_errors=True)
    return {"counts": {k: len(v) for k, v in subsets.items()},
            "speakers": {k: len({u["spk"] for u in v.values()}) for k, v in subsets.items()},
            "trials": {k: {"total": len(t), "target": sum(x.label for x in t)} for k, t in trials.items()},
            "build_seconds": round(time.time() - start, 1),
            "cpu_seconds": round(time.process_time() + _children_cpu() - cpu, 1)}


def build_mini_world(out: Path, config: MiniWorldConfig = MiniWorldConfig(), nj: int = 2, with_pool: bool = False,
                     voices_file: Path = DEFAULT_VOICES) -> List[str]:
    """Build (or finish) the parts under ``out``; returns the parts built now (empty: all complete)."""
    out = Path(out)
    voices, info = load_voices(voices_file)
    config = MiniWorldConfig(**{**asdict(config), "voices_digest": info["digest"],
                                "snr_db": tuple(config.snr_db)})
    splits = split_voices(voices, config, info["generator_seed"])
    built = []
    for part in ("main", "pool") if with_pool else ("main",):
        done_file = out / f".done-{part}"
        if done_file.is_file() and read_json(done_file).get("digest") == config.digest():
            log.info("%s: mini world part '%s' already complete (digest %s)", out, part, config.digest())
            continue
        summary = build_part(out, part, splits, config, nj)
        write_json(out / f"world-{part}.json", {
            "digest": config.digest(), "config": asdict(config), "voices_file": str(voices_file),
            "splits": {s: [v.name for v in splits[s]] for s in PARTS[part]},
            "val": "unseen voices, reverberated and noised like test_noisy (val_clean: the same utterances "
                   "before reverberation and noise, like test)", **summary})
        write_json(done_file, {"digest": config.digest()})
        log.info("mini world part '%s' in %s: %s utterances, %s speakers, trials %s, %.1f s wall, %.1f s CPU",
                 part, out, summary["counts"], summary["speakers"], summary["trials"], summary["build_seconds"],
                 summary["cpu_seconds"])
        built.append(part)
    return built


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (e.g. data/mini_world).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 31 - 1))
@click.option("--nj", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--with-pool/--no-pool", default=False, show_default=True,
              help="Also build the teacher's pretraining pool (OUT/pool).")
@click.option("--voices", "voices_file", default=str(DEFAULT_VOICES), show_default=True,
              type=click.Path(dir_okay=False), help="Voice list written by local/screen_voices.py.")
@click.option("--num-test-speakers", default=MiniWorldConfig.num_test_speakers, show_default=True,
              type=click.IntRange(2))
@click.option("--test-utts-per-speaker", default=MiniWorldConfig.test_utts_per_speaker, show_default=True,
              type=click.IntRange(2, 1000))
@click.option("--num-test-trials", default=MiniWorldConfig.num_test_trials, show_default=True, type=click.IntRange(1))
@click.option("--num-val-speakers", default=MiniWorldConfig.num_val_speakers, show_default=True, type=click.IntRange(2))
@click.option("--val-utts-per-speaker", default=MiniWorldConfig.val_utts_per_speaker, show_default=True,
              type=click.IntRange(2, 1000))
@click.option("--num-val-trials", default=MiniWorldConfig.num_val_trials, show_default=True, type=click.IntRange(1))
@click.option("--num-train-speakers", default=MiniWorldConfig.num_train_speakers, show_default=True,
              type=click.IntRange(1))
@click.option("--utts-per-speaker", default=MiniWorldConfig.utts_per_speaker, show_default=True,
              type=click.IntRange(1, 1000), help="Utterances per student training speaker.")
@click.option("--num-pool-speakers", default=MiniWorldConfig.num_pool_speakers, show_default=True,
              type=click.IntRange(0), help="Pretraining pool speakers (0: every voice not in another split).")
@click.option("--pool-utts-per-speaker", default=MiniWorldConfig.pool_utts_per_speaker, show_default=True,
              type=click.IntRange(1, 1000))
@click.option("--target-ratio", default=MiniWorldConfig.target_ratio, show_default=True,
              type=click.FloatRange(0.0, 1.0))
@click.option("--channel-db", default=MiniWorldConfig.channel_db, show_default=True,
              type=click.FloatRange(0.0, 20.0),
              help="Largest gain (dB) of the random microphone/room response given to every train, val and "
                   "test utterance (0: none); the pool stays clean.")
@user_errors
def main(out: str, nj: int, with_pool: bool, voices_file: str, **options) -> None:
    """Synthesize the mini world (Kaldi data dirs OUT/train, OUT/val, OUT/val_clean, OUT/test, OUT/test_noisy[, OUT/pool])."""
    setup_logging()
    build_mini_world(Path(out), MiniWorldConfig(**options), nj=nj, with_pool=with_pool, voices_file=Path(voices_file))


if __name__ == "__main__":
    main()
