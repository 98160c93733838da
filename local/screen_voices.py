#!/usr/bin/env python3
"""Measure which generated espeak-ng voices are distinct speakers; keep a set without near-duplicates.

Every candidate (the allowed base variants and ``--candidates`` generated voices, ``local/voices.py``)
speaks ``--probe-utts`` random sentences. Each utterance becomes a vector of MFCC means and standard
deviations (with deltas). A logistic-regression speaker classifier is trained on the first half of
every voice's utterances and tested on the second half. Voices are then ranked by how consistently
their own held-out utterances are recognised, and kept greedily while, towards every voice already
kept, both the classifier's mutual confusion and the cosine of the standardised feature centroids
stay below thresholds. The kept set is measured again: a classifier on the kept voices only, and an
embedding EER (LDA fitted on one half of the kept voices, cosine trials among the other half, and
the reverse). The result (kept names, the generator's digest, every number) is written as JSON;
``make_mini_world.py`` reads it.

    python local/screen_voices.py --out local/mini_world_voices.json --candidates 480 --nj 2
"""
from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click
import numpy as np

from local.espeak_synth import make_variant_overlays, map_in_fresh_processes
from local.make_mini_corpus import MiniCorpusConfig, speak
from local.voices import (BASE_VARIANTS, UNSTABLE_BASES, VoiceDefinition, base_voice, definitions_digest,
                          generate_candidates)
from svmix.cli import user_errors
from svmix.errors import SvmixError
from svmix.metrics import compute_eer
from svmix.utils.fileio import atomic_path, write_json
from svmix.utils.logging import get_logger, setup_logging

log = get_logger("screen_voices")
NUM_MFCC = 20


@functools.lru_cache(maxsize=None)
def _mfcc_transform(sample_rate: int):
    import torch
    import torchaudio

    torch.set_num_threads(1)
    return torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=NUM_MFCC,
                                      melkwargs={"n_fft": 512, "win_length": 400, "hop_length": 160,
                                                 "n_mels": 40, "f_min": 20.0, "f_max": 7600.0})


def mfcc_stats(wav: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Utterance vector: mean and std of MFCCs and their deltas over the voiced frames."""
    import torch
    import torchaudio

    audio = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    feats = _mfcc_transform(sample_rate)(audio)  # (n_mfcc, frames)
    voiced = feats[0] > feats[0].max() - 30.0  # c0 (summed log-mel energy) near the loudest frame's
    feats = feats[:, voiced] if int(voiced.sum()) >= 10 else feats
    deltas = torchaudio.functional.compute_deltas(feats.unsqueeze(0)).squeeze(0)
    both = torch.cat([feats, deltas])
    return torch.cat([both.mean(dim=1), both.std(dim=1)]).numpy().astype(np.float64)


def probe(task: Tuple[int, VoiceDefinition, int, int, str]) -> np.ndarray:
    """Features of ``count`` utterances of voice number ``index`` (in a fresh process per voice)."""
    index, voice, count, seed, data_path = task
    rng = np.random.default_rng([seed, 4099, index])
    config = MiniCorpusConfig()
    return np.stack([mfcc_stats(speak(rng, voice.name, config, voice.rates, data_path)[0]) for _ in range(count)])


def synthesize_features(voices: List[VoiceDefinition], count: int, seed: int, nj: int) -> np.ndarray:
    """(voices, count, dim) features, NaN for a voice that crashes libespeak-ng; the voices are
    spoken from temporary variant overlays."""
    import torch  # noqa: F401  (imported once here, not in every forked process)
    import torchaudio  # noqa: F401

    tmp = Path(tempfile.mkdtemp(prefix="svmix-voices-"))
    try:
        data_paths = make_variant_overlays(tmp, {v.name: v.text for v in voices})
        tasks = [(i, v, count, seed, data_paths[v.name]) for i, v in enumerate(voices)]
        out = map_in_fresh_processes(probe, tasks, nj, lambda task: f"voice '{task[1].name}'", desc="probing voices",
                                     unit="voice", allow_crash=True)
        dim = next(f.shape[1] for f in out if f is not None)
        return np.stack([f if f is not None else np.full((count, dim), np.nan) for f in out])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _standardise(train: np.ndarray, *others: np.ndarray):
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-8
    return [(x - mean) / std for x in (train, *others)]


def classify(features: np.ndarray) -> Dict[str, np.ndarray]:
    """Logistic regression trained on the first half of each voice's utterances, tested on the rest:
    per-voice held-out accuracy and the (voices x voices) mean predicted probability matrix."""
    from sklearn.linear_model import LogisticRegression

    n_voices, n_utts, dim = features.shape
    half = n_utts // 2
    labels = np.repeat(np.arange(n_voices), n_utts - half)
    train, test = _standardise(features[:, :half].reshape(-1, dim), features[:, half:].reshape(-1, dim))
    model = LogisticRegression(C=1.0, max_iter=3000)
    model.fit(train, np.repeat(np.arange(n_voices), half))
    proba = model.predict_proba(test)
    own = (proba.argmax(axis=1) == labels).reshape(n_voices, -1).mean(axis=1)
    confusion = proba.reshape(n_voices, n_utts - half, n_voices).mean(axis=1)  # row: true voice
    return {"accuracy": own, "confusion": confusion}


def centroid_cosine(features: np.ndarray) -> np.ndarray:
    n_voices, n_utts, dim = features.shape
    (flat,) = _standardise(features.reshape(-1, dim))
    centroids = flat.reshape(n_voices, n_utts, dim).mean(axis=1)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
    return centroids @ centroids.T


def greedy_keep(accuracy: np.ndarray, confusion: np.ndarray, cosine: np.ndarray, max_confusion: float,
                max_cosine: float, min_accuracy: float) -> Tuple[List[int], Dict[str, int]]:
    """Indices kept (most self-consistent first, each only if far from every kept one) and how many
    were dropped for which reason."""
    mutual = confusion + confusion.T
    order = sorted(range(len(accuracy)), key=lambda i: (-accuracy[i], i))
    kept: List[int] = []
    dropped = {"inconsistent": 0, "confused_with_kept": 0, "centroid_near_kept": 0}
    for i in order:
        if accuracy[i] < min_accuracy:
            dropped["inconsistent"] += 1
        elif kept and mutual[i, kept].max() >= max_confusion:
            dropped["confused_with_kept"] += 1
        elif kept and cosine[i, kept].max() >= max_cosine:
            dropped["centroid_near_kept"] += 1
        else:
            kept.append(i)
    return kept, dropped


def _lda_scores(fit: np.ndarray, held: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine scores and labels of all utterance pairs of ``held`` (voices, utts, dim) in an LDA space
    fitted on the voices of ``fit``."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    dim = fit.shape[2]
    train, test = _standardise(fit.reshape(-1, dim), held.reshape(-1, dim))
    lda = LinearDiscriminantAnalysis(n_components=min(dim, len(fit) - 1, 60))
    emb = lda.fit(train, np.repeat(np.arange(len(fit)), fit.shape[1])).transform(test)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    spk = np.repeat(np.arange(len(held)), held.shape[1])
    upper = np.triu_indices(len(emb), k=1)
    return (emb @ emb.T)[upper], (spk[:, None] == spk[None, :])[upper].astype(int)


def embedding_eer(features: np.ndarray, seed: int, fit: Optional[np.ndarray] = None) -> float:
    """EER of cosine trials between utterances of voices the embedding never saw: LDA fitted on
    ``fit``, or else on half of the voices with trials among the other half and the reverse (pooled)."""
    if fit is not None:
        return float(compute_eer(*_lda_scores(fit, features)))
    order = np.random.default_rng(seed).permutation(len(features))
    halves = [order[: len(features) // 2], order[len(features) // 2:]]
    parts = [_lda_scores(features[a], features[b]) for a, b in (halves, halves[::-1])]
    return float(compute_eer(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))


def screen(candidates: int, probe_utts: int, seed: int, nj: int, max_confusion: float, max_cosine: float,
           min_accuracy: float, features_file: Optional[Path] = None) -> Dict:
    """Probe, classify and keep (see the module docstring); ``features_file`` caches the features."""
    start = time.time()
    voices = [base_voice(b) for b in BASE_VARIANTS] + generate_candidates(seed, candidates)
    digest = definitions_digest(voices)
    features, from_cache = None, False
    if features_file is not None and features_file.is_file():
        cached = np.load(features_file)
        if str(cached["digest"]) == digest and cached["features"].shape[1] == probe_utts:
            features, from_cache = cached["features"], True
    if features is None:
        features = synthesize_features(voices, probe_utts, seed, nj)
        if features_file is not None:
            with atomic_path(features_file) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, features=features, digest=np.array(digest))
    crashed = [v.name for v, f in zip(voices, features) if np.isnan(f).any()]
    if crashed:
        log.warning("%d voices crash libespeak-ng and are dropped: %s", len(crashed), ", ".join(crashed))
    unstable = [v.name for v in voices if v.base in UNSTABLE_BASES and not v.verbatim and v.name not in crashed]
    alive = [i for i, (v, f) in enumerate(zip(voices, features))
             if not np.isnan(f).any() and v.name not in unstable]
    voices, features = [voices[i] for i in alive], features[alive]
    result = classify(features)
    cosine = centroid_cosine(features)
    kept, dropped = greedy_keep(result["accuracy"], result["confusion"], cosine, max_confusion, max_cosine,
                                min_accuracy)
    if len(kept) < 4:
        raise SvmixError(f"only {len(kept)} of {len(voices)} voices are distinct: thresholds too strict")
    kept_result = classify(features[kept])
    base_idx = [i for i, v in enumerate(voices) if v.name.startswith("b-")]
    kept_generated = [i for i in kept if i not in base_idx]
    kept_voices = [voices[i] for i in kept]
    summary = {
        "generator_seed": seed, "candidates": candidates, "probe_utts": probe_utts, "crashed": crashed,
        "unstable_base_excluded": {"bases": list(UNSTABLE_BASES), "voices": len(unstable)},
        "thresholds": {"max_mutual_confusion": max_confusion, "max_centroid_cosine": max_cosine,
                       "min_own_accuracy": min_accuracy},
        "measured": {
            "voices": len(voices) + len(crashed) + len(unstable), "voices_screened": len(voices),
            "accuracy_all_candidates": round(float(result["accuracy"].mean()), 4),
            "accuracy_base_variants_alone": round(float(classify(features[base_idx])["accuracy"].mean()), 4),
            # the base variants are distinct by a pretrained speaker encoder; this calibrates the measure
            "eer_base_variants_by_kept_generated_lda": round(
                embedding_eer(features[base_idx], seed, fit=features[kept_generated]), 4),
            "eer_all_candidates": round(embedding_eer(features, seed), 4),
            "kept": len(kept), "kept_base_variants": sum(1 for i in kept if voices[i].name.startswith("b-")),
            "dropped": dropped,
            "accuracy_kept": round(float(kept_result["accuracy"].mean()), 4),
            "eer_kept": round(embedding_eer(features[kept], seed), 4),
        },
        "digest": definitions_digest(kept_voices),
        "kept": [v.name for v in kept_voices],
        # wall seconds of this run; probing is skipped when the features come from the cache
        "seconds": round(time.time() - start, 1), "features_from_cache": from_cache,
    }
    return summary


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSON file with the kept voices.")
@click.option("--candidates", default=480, show_default=True, type=click.IntRange(1, 9999),
              help="Generated voices to screen (besides the allowed base variants).")
@click.option("--probe-utts", default=8, show_default=True, type=click.IntRange(4, 200),
              help="Utterances per voice (half for training the classifier, half for testing).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 31 - 1),
              help="Voice-generator seed (and probe sentences).")
@click.option("--nj", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--max-confusion", default=0.1, show_default=True, type=click.FloatRange(0.0, 2.0),
              help="Keep a voice only if its mutual classifier confusion with every kept voice is below this.")
@click.option("--max-cosine", default=0.9, show_default=True, type=click.FloatRange(-1.0, 1.0),
              help="... and its standardised feature-centroid cosine to every kept voice is below this.")
@click.option("--min-accuracy", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="... and at least this share of its own held-out utterances is recognised.")
@click.option("--features", "features_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Cache the probe features in this .npz (reused while the candidates are unchanged).")
@user_errors
def main(out: str, **options) -> None:
    """Screen generated espeak-ng voices for distinctness; write the kept set to OUT."""
    setup_logging()
    summary = screen(**options)
    write_json(Path(out), summary)
    log.info("kept %d of %d voices: %s", summary["measured"]["kept"], summary["measured"]["voices"],
             summary["measured"])


if __name__ == "__main__":
    main()
