#!/usr/bin/env python3
"""Build the offline mini corpus: espeak-ng voices as speakers, Kaldi data dirs train/val/test.

Each espeak-ng ``en-us+VARIANT`` voice (distinct variants, see docs/architecture.md §The mini corpus) is one speaker.
Training and test voices are disjoint; the validation set holds out utterances of the training
voices (never test voices). Validation and test audio get seeded reverberation (simulated RIRs)
and additive synthetic noise at 5-20 dB SNR. Everything is deterministic from ``--seed``: each
speaker is synthesized in its own fresh worker process from its own seed.

    python local/make_mini_corpus.py --out data/mini --seed 0 --nj 2
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click
import numpy as np

from local.trials import sample_trials
from svmix.cli import user_errors
from svmix.data import simulate
from svmix.data.audio import SAMPLE_RATE, write_wav
from svmix.data.datadir import write_datadir, write_trials
from svmix.errors import SvmixError
from svmix.utils.fileio import read_json, write_json
from svmix.utils.logging import get_logger, setup_logging

log = get_logger("mini_corpus")

CHANNEL_SALT = 4099  # seeds a speaker's channel stream next to its sentence stream
CLEAN_CHANNEL_SUBSETS = ("pool",)  # the teacher's pretraining audio stays studio-clean

# Distinct espeak-ng variants (docs/architecture.md §The mini corpus; best first; male6 is not in the wheel).
VOICES = ["Hugo", "klatt4", "sandro", "Denis", "Mario", "Lee", "Diogo", "Andy", "norbert", "klatt2",
          "travis", "grandma", "Gene", "Jacky", "Andrea", "Nguyen", "Demonic", "Michael", "Tweaky",
          "anika", "Storm", "Annie", "klatt3", "shelby", "Alicia", "RicishayMax3", "Marco", "RicishayMax"]

SUBJECTS = ["the old man", "a young girl", "my brother", "the teacher", "our neighbour", "the farmer",
            "a tired doctor", "the small child", "her friend", "the captain", "a quiet student", "the baker",
            "his sister", "the pilot", "a clever fox", "the brown dog", "the river", "the city council",
            "my grandmother", "the new manager", "a famous singer", "the little bird", "the driver"]
VERBS = ["found", "painted", "carried", "opened", "counted", "followed", "remembered", "watched",
         "repaired", "borrowed", "described", "cleaned", "ordered", "planted", "measured", "visited",
         "delivered", "discovered", "answered", "collected", "forgot", "noticed", "wanted", "built"]
OBJECTS = ["a yellow umbrella", "the heavy boxes", "seven green apples", "an empty bottle", "the wooden door",
           "a letter from home", "the broken window", "three silver coins", "the morning paper",
           "a basket of bread", "the garden gate", "an old photograph", "the kitchen table",
           "a warm blanket", "the last train", "twelve paper cups", "the map of the valley",
           "a bright red kite", "the final answer", "a bowl of soup", "the tall ladder", "a secret message"]
PLACES = ["near the station", "behind the school", "in the quiet village", "under the bridge",
          "after the long winter", "before breakfast", "during the storm", "at the edge of the forest",
          "on a cold morning", "by the harbour", "in the crowded market", "across the street",
          "late in the evening", "on the top floor", "beside the lake", "at the end of the day"]
ADVERBS = ["slowly", "carefully", "again", "quickly", "quietly", "happily", "suddenly", "finally", "twice"]
CONNECTORS = ["and then", "because", "while", "but", "so", "although", "when", "until"]
QUESTIONS = ["did you know that", "is it true that", "why do you think", "can you believe that"]


def make_sentence(rng: np.random.Generator, clauses: int) -> str:
    """A random English sentence of ``clauses`` clauses from the small grammar above."""
    def pick(words):
        return words[int(rng.integers(len(words)))]

    parts = []
    for i in range(clauses):
        clause = f"{pick(SUBJECTS)} {pick(ADVERBS) + ' ' if rng.random() < 0.3 else ''}{pick(VERBS)} {pick(OBJECTS)}"
        if rng.random() < 0.6:
            clause += f" {pick(PLACES)}"
        parts.append(clause if i == 0 else f"{pick(CONNECTORS)} {clause}")
    prefix = f"{pick(QUESTIONS)} " if rng.random() < 0.15 else ""
    return prefix + ", ".join(parts) + ("?" if prefix else ".")


@dataclass(frozen=True)
class MiniCorpusConfig:
    seed: int = 0
    num_train_speakers: int = 20
    utts_per_speaker: int = 40
    val_utts_per_speaker: int = 5
    num_test_speakers: int = 8
    test_utts_per_speaker: int = 20
    num_test_trials: int = 4000
    num_val_trials: int = 1000
    target_ratio: float = 0.25
    min_seconds: float = 2.0
    max_seconds: float = 6.0
    snr_db: Tuple[float, float] = (5.0, 20.0)
    reverb_prob: float = 0.5
    speed_perturb: bool = False
    channel_db: float = 0.0  # read by the shared speaker job (the mini world's session channels); off here
    version: int = 2

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SpeakerJob:
    """All utterances of one voice (its subsets in order), synthesized in one fresh process."""
    voice: str
    speaker: str
    subsets: List[Tuple[str, int]]  # (subset, number of utterances), in synthesis order
    seed: Tuple[int, ...]  # SeedSequence entropy + spawn key
    out: str
    config: MiniCorpusConfig
    utts: List[Dict] = field(default_factory=list)
    rates: Tuple[int, int] = (150, 200)  # per-utterance speaking rate range (words/minute)
    data_path: Optional[str] = None  # espeak-ng data directory (a variant overlay); None: the wheel's
    # subset -> {version ("clean", "noisy"): the data dir it is written to}, under the same utterance
    # ids; default: train clean, other subsets noisy, each in the subset's own dir.
    outputs: Dict[str, Dict[str, str]] = field(default_factory=dict)


def split_voices(num_train: int, num_test: int) -> Tuple[List[str], List[str]]:
    """Disjoint (train, test) voices; test voices are spread evenly over the quality-ranked list."""
    if num_train + num_test > len(VOICES):
        raise SvmixError(f"only {len(VOICES)} distinct voices: cannot have {num_train} train + {num_test} test speakers")
    test_idx = {int(round(i)) for i in np.linspace(2, len(VOICES) - 1, num_test)} if num_test else set()
    test = [v for i, v in enumerate(VOICES) if i in test_idx]
    train = [v for i, v in enumerate(VOICES) if i not in test_idx][:num_train]
    return train, test


def utt_id(speaker: str, index: int) -> str:
    return f"{speaker}-{index:03d}"


def plan_jobs(config: MiniCorpusConfig, out: Path) -> List[SpeakerJob]:
    train, test = split_voices(config.num_train_speakers, config.num_test_speakers)
    roles = [(v, [("train", config.utts_per_speaker), ("val", config.val_utts_per_speaker)]) for v in train]
    roles += [(v, [("test", config.test_utts_per_speaker)]) for v in test]
    return [SpeakerJob(voice, voice, subsets, (config.seed, i), str(out), config) for i, (voice, subsets) in enumerate(roles)]


def planned_utt2spk(jobs: List[SpeakerJob], subset: str) -> Dict[str, str]:
    """utt2spk of ``subset`` as the jobs will produce it (before any synthesis)."""
    out = {}
    for job in jobs:
        index = 0
        for name, count in job.subsets:
            for _ in range(count):
                if name == subset:
                    out[utt_id(job.speaker, index)] = job.speaker
                index += 1
    return out


def plan_trials(config: MiniCorpusConfig, jobs: List[SpeakerJob]):
    """Trial lists of val and test; they depend only on the plan, not on the audio."""
    rng = np.random.default_rng([config.seed, 7919])
    return {"val": sample_trials(planned_utt2spk(jobs, "val"), config.num_val_trials, config.target_ratio, rng),
            "test": sample_trials(planned_utt2spk(jobs, "test"), config.num_test_trials, config.target_ratio, rng)}


def _trim_silence(wav: np.ndarray, margin: int = 1600) -> np.ndarray:
    frame = 160
    energy = np.sqrt(np.mean(wav[: len(wav) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    voiced = np.nonzero(energy > 0.02 * energy.max())[0]
    if len(voiced) == 0:
        return wav
    return wav[max(0, voiced[0] * frame - margin): min(len(wav), (voiced[-1] + 1) * frame + margin)]


def speak(rng: np.random.Generator, voice: str, config: MiniCorpusConfig, rates: Tuple[int, int] = (150, 200),
          data_path: Optional[str] = None) -> Tuple[np.ndarray, str]:
    """One utterance of 2-6 s: random text, per-utterance rate/pitch jitter; retries on length.
    ``config`` needs ``min_seconds`` and ``max_seconds``."""
    from local.espeak_synth import EspeakSynthesizer

    synth = EspeakSynthesizer.get(data_path)
    rate = int(rng.integers(*rates))
    pitch = int(rng.integers(40, 61))
    pitch_range = int(rng.integers(35, 70))
    target = rng.uniform(config.min_seconds + 0.3, config.max_seconds - 0.3)
    clauses = max(1, int(round(target / 2.2)))
    for _ in range(6):
        text = make_sentence(rng, clauses)
        wav = _trim_silence(synth.synthesize(text, f"en-us+{voice}", rate, pitch, pitch_range,
                                                    seed=int(rng.integers(2 ** 31))))
        seconds = len(wav) / SAMPLE_RATE
        if config.min_seconds <= seconds <= config.max_seconds:
            break
        clauses = max(1, clauses + (1 if seconds < config.min_seconds else -1))
    return fit_duration(wav, config), text


def fit_duration(wav: np.ndarray, config: MiniCorpusConfig) -> np.ndarray:
    """Pad with silence or crop to the configured duration bounds."""
    min_len, max_len = int(config.min_seconds * SAMPLE_RATE), int(config.max_seconds * SAMPLE_RATE)
    return np.pad(wav, (0, max(0, min_len - len(wav))))[:max_len]


def degrade(wav: np.ndarray, rng: np.random.Generator, config: MiniCorpusConfig) -> Tuple[np.ndarray, str]:
    """Optional reverberation, then synthetic noise at a random SNR; returns audio and a description."""
    desc = []
    if rng.random() < config.reverb_prob:
        wav = simulate.reverberate(wav, simulate.simulated_rir(rng))
        desc.append("reverb")
    kind = ["white", "pink", "brown", "tones"][int(rng.integers(4))]
    noise = (simulate.harmonic_tones(len(wav), rng) if kind == "tones"
             else simulate.colored_noise(len(wav), kind, rng))
    snr = float(rng.uniform(*config.snr_db))
    desc.append(f"{kind}@{snr:.1f}dB")
    return simulate.add_noise(wav, noise, snr), "+".join(desc)


def speed_perturb(wav: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch together), Kaldi/WeSpeaker style."""
    from scipy.signal import resample_poly

    return resample_poly(wav, 100, int(round(100 * factor))).astype(np.float32)


def _write(job: SpeakerJob, subset: str, speaker: str, utt: str, wav: np.ndarray, **info) -> None:
    peak = float(np.max(np.abs(wav)))
    wav = wav * (0.9 / peak) if peak > 0.9 else wav
    path = Path(job.out) / "wav" / subset / speaker / f"{utt}.wav"
    write_wav(path, wav)
    job.utts.append({"utt": utt, "spk": speaker, "subset": subset, "path": str(path.resolve()),
                     "dur": len(wav) / SAMPLE_RATE, **info})


def run_job(job: SpeakerJob) -> SpeakerJob:
    """Synthesize one speaker (in a fresh process); writes a marker so reruns skip finished speakers."""
    marker = Path(job.out) / ".jobs" / f"{job.speaker}.json"
    if marker.is_file():
        done = read_json(marker)
        if done.get("digest") == job.config.digest():
            job.utts = done["utts"]
            return job
    rng = np.random.default_rng(list(job.seed))
    # Channels draw from a stream of their own: switching them on changes no sentence or prosody.
    channel_rng = np.random.default_rng(list(job.seed) + [CHANNEL_SALT])
    config = job.config
    index = 0
    for subset, count in job.subsets:
        for _ in range(count):
            utt = utt_id(job.speaker, index)
            index += 1
            clean, text = speak(rng, job.voice, config, job.rates, job.data_path)
            clean *= rng.uniform(0.3, 0.9) / max(float(np.max(np.abs(clean))), 1e-6)
            if config.channel_db > 0 and subset not in CLEAN_CHANNEL_SUBSETS:
                clean = simulate.random_channel(clean, channel_rng, config.channel_db)
            versions = job.outputs.get(subset) or {("clean" if subset == "train" else "noisy"): subset}
            if "clean" in versions:
                _write(job, versions["clean"], job.speaker, utt, clean, text=text)
                for factor in ((0.9, 1.1) if config.speed_perturb and subset == "train" else ()):
                    speaker = f"sp{factor}-{job.speaker}"
                    _write(job, subset, speaker, f"sp{factor}-{utt}", fit_duration(speed_perturb(clean, factor), config),
                           text=text)
            if "noisy" in versions:
                noisy, condition = degrade(clean, rng, config)
                _write(job, versions["noisy"], job.speaker, utt, noisy,
                       text=text, condition=condition)
    write_json(marker, {"digest": config.digest(), "voice": job.voice, "utts": job.utts})
    return job


def synthesize_jobs(jobs: List[SpeakerJob], nj: int) -> List[SpeakerJob]:
    """Run every job, each in a fresh forked process: espeak-ng output then depends only on that
    speaker's seed (not on which worker ran which speakers before)."""
    from local.espeak_synth import map_in_fresh_processes

    return map_in_fresh_processes(run_job, jobs, nj, lambda job: f"speaker '{job.speaker}'",
                                  desc="synthesizing speakers", unit="spk")


def write_subsets(out: Path, jobs: List[SpeakerJob], trials: Dict[str, list], names) -> Dict[str, Dict[str, Dict]]:
    """Kaldi data dirs ``out/<subset>`` (wav.scp, utt2spk, spk2utt, utt2dur) of the synthesized jobs,
    in ``names`` order, with ``trials``/``trials.voxceleb`` where ``trials`` has the subset."""
    subsets: Dict[str, Dict[str, Dict]] = {name: {} for name in names}
    for job in jobs:
        for u in job.utts:
            subsets[u["subset"]][u["utt"]] = u
    for name, utts in subsets.items():
        if not utts:
            continue
        write_datadir(out / name, {k: u["path"] for k, u in utts.items()}, {k: u["spk"] for k, u in utts.items()},
                      {k: u["dur"] for k, u in utts.items()})
        if name in trials:
            write_trials(out / name / "trials", trials[name], "kaldi")
            write_trials(out / name / "trials.voxceleb", trials[name], "voxceleb")
    return subsets


def build_mini_corpus(out: Path, config: MiniCorpusConfig = MiniCorpusConfig(), nj: int = 2) -> bool:
    """Build (or finish) the corpus under ``out``; returns False when it was already complete."""
    out = Path(out)
    done_file = out / ".done"
    if done_file.is_file() and read_json(done_file).get("digest") == config.digest():
        log.info("%s: mini corpus already complete (digest %s)", out, config.digest())
        return False
    start = time.time()
    jobs = plan_jobs(config, out)
    trials = plan_trials(config, jobs)
    jobs = synthesize_jobs(jobs, nj)
    subsets = write_subsets(out, jobs, trials, ("train", "val", "test"))
    train, test = split_voices(config.num_train_speakers, config.num_test_speakers)
    summary = {"digest": config.digest(), "config": asdict(config), "train_voices": train, "test_voices": test,
               "val": "held-out utterances of the training voices, degraded like test",
               "counts": {k: len(v) for k, v in subsets.items()},
               "trials": {k: {"total": len(t), "target": sum(x.label for x in t)} for k, t in trials.items()},
               "build_seconds": round(time.time() - start, 1)}
    write_json(out / "corpus.json", summary)
    write_json(done_file, {"digest": config.digest()})
    shutil.rmtree(out / ".jobs", ignore_errors=True)
    log.info("mini corpus in %s: %s utterances, trials %s, built in %.1f s", out, summary["counts"],
             summary["trials"], summary["build_seconds"])
    log.info("train voices: %s; test voices: %s", ", ".join(train), ", ".join(test))
    return True


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory (e.g. data/mini).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--nj", default=2, show_default=True, type=int, help="Worker processes.")
@click.option("--num-train-speakers", default=MiniCorpusConfig.num_train_speakers, show_default=True, type=int)
@click.option("--utts-per-speaker", default=MiniCorpusConfig.utts_per_speaker, show_default=True, type=int,
              help="Training utterances per training speaker.")
@click.option("--val-utts-per-speaker", default=MiniCorpusConfig.val_utts_per_speaker, show_default=True, type=int,
              help="Held-out validation utterances per training speaker.")
@click.option("--num-test-speakers", default=MiniCorpusConfig.num_test_speakers, show_default=True, type=int)
@click.option("--test-utts-per-speaker", default=MiniCorpusConfig.test_utts_per_speaker, show_default=True, type=int)
@click.option("--num-test-trials", default=MiniCorpusConfig.num_test_trials, show_default=True, type=int)
@click.option("--num-val-trials", default=MiniCorpusConfig.num_val_trials, show_default=True, type=int)
@click.option("--target-ratio", default=MiniCorpusConfig.target_ratio, show_default=True, type=float)
@click.option("--speed-perturb/--no-speed-perturb", default=False, show_default=True,
              help="Add 0.9x and 1.1x copies of the training voices as new speakers.")
@user_errors
def main(out: str, nj: int, **options) -> None:
    """Synthesize the offline mini corpus (Kaldi data dirs OUT/train, OUT/val, OUT/test)."""
    setup_logging()
    build_mini_corpus(Path(out), MiniCorpusConfig(**options), nj=nj)


if __name__ == "__main__":
    main()
