"""Benchmark: the int8 CPU path against the float32 fast path, speed and agreement, in one run.

Cases, each an end-to-end embedding of one 3 s utterance (``SpeakerEmbeddingModel.embed``: the
evaluation segment rule, here one distinct 3 s segment) timed interleaved (every round runs every case
once, in rotating order), ``torch.set_num_threads(2)`` / 2 onnxruntime threads by default:

* ``torch float32``: the fast inference path (``svmix.models.fast``);
* ``torch int8``: the same with int8 SV-Mixer blocks (``precision="int8"``, ``svmix/models/fast/int8.py``);
* ``onnx float32`` / ``onnx int8`` (with ``--onnx``, when onnxruntime is installed): the legacy ONNX
  export and its onnxruntime dynamic quantisation (``svmix-export --quantize int8``).

Agreement: the cosine between each case's utterance embedding and the float32 PyTorch one, over
speech-like utterances (a glottal pulse train with a moving pitch through vowel formant resonators,
syllable envelopes and noise; several "speakers"), or over ``--wav`` files; and the same for the scores
(mean cosine over segment pairs) of every pair of them.

    python benchmarks/bench_int8.py [--model-config conf/model/svmixer_mini.yaml | --checkpoint PATH]
                                    [--runs 10] [--threads 2] [--onnx] [--wav a.wav ...] [--json FILE]

Weights are random (``--model-config``) unless ``--checkpoint`` is given: agreement on a trained
model may differ. Targets (issue 20): int8 >= 1.6x faster than the float32 fast path, cosine >= 0.99.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
import yaml
from scipy.signal import lfilter

from svmix.api import SpeakerEmbeddingModel
from svmix.checkpoint import load_model_checkpoint, save_model
from svmix.data.audio import SAMPLE_RATE, load_audio
from svmix.inference.embedder import SegmentEmbedder
from svmix.inference.segments import mean_embedding
from svmix.models import build_model, resolve_model_config
from svmix.models.fast import kernels as cpu_kernels

VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (300, 870, 2240), (640, 1190, 2390)]


def speech_like(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A voiced utterance: pulses at a wandering pitch around ``f0`` through formant resonators that
    move from vowel to vowel at a syllable rate, with syllable envelopes and a little noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t) + 0.02 * rng.standard_normal(n).cumsum() / n)
    phase = np.cumsum(pitch) / SAMPLE_RATE
    source = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
    source = lfilter([1.0], [1.0, -0.95], source)  # glottal roll-off
    out = np.zeros(n)
    syllable = int(0.2 * SAMPLE_RATE)
    for start in range(0, n, syllable):
        formants = VOWELS[rng.integers(len(VOWELS))]
        piece = source[start:start + syllable]
        voiced = np.zeros_like(piece)
        for f, bandwidth in zip(formants, (80, 100, 120)):
            r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
            voiced += lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SAMPLE_RATE), r * r], piece)
        out[start:start + len(piece)] = voiced * np.hanning(len(piece))
    out += 0.01 * np.abs(out).max() * rng.standard_normal(n)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def time_interleaved(cases: Dict[str, Callable[[], object]], runs: int, warmup: int = 2) -> Dict[str, List[float]]:
    """Wall seconds of every run of each case; every round runs all cases once, in rotating order."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    return times


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-config", default="conf/model/svmixer_mini.yaml")
    parser.add_argument("--checkpoint", help="a trained checkpoint instead of random weights")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--onnx", action="store_true", help="also time ONNX float32 / int8 (onnxruntime)")
    parser.add_argument("--wav", nargs="*", default=[], help="audio files for the agreement figures")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_int8_"))
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        torch.manual_seed(0)
        config = resolve_model_config(yaml.safe_load(open(args.model_config))["model"])
        checkpoint = tmp / "model.pt"
        save_model(checkpoint, build_model(config))
    cpu_kernels.kernels()  # the first-use build is not part of any timing

    def embedder(precision: str) -> SpeakerEmbeddingModel:
        return SpeakerEmbeddingModel(SegmentEmbedder(load_model_checkpoint(checkpoint)[0], precision=precision))

    models = {"torch float32": embedder("float32"), "torch int8": embedder("int8")}
    if args.onnx:
        from svmix.export import export_model
        from svmix.inference.onnx_runtime import OnnxSegmentEmbedder

        for quantize, name in (("none", "onnx float32"), ("int8", "onnx int8")):
            path = tmp / f"model_{quantize}.onnx"
            export_model(checkpoint, "onnx", path, quantize=quantize, check=False)
            models[name] = SpeakerEmbeddingModel(OnnxSegmentEmbedder(path, num_threads=args.threads))
    config = models["torch float32"].config
    print(f"model: {args.checkpoint or args.model_config} (H={config['hidden']}, "
          f"{config['encoder']['num_layers']} layers); threads {args.threads}; runs {args.runs}; "
          f"fused CPU kernels: {'yes' if cpu_kernels.kernels() is not None else 'no'}")

    probe = speech_like(3.0, 120.0, seed=99)
    times = time_interleaved({name: (lambda m=m: m.embed(probe)) for name, m in models.items()}, args.runs)
    base = statistics.median(times["torch float32"])
    results: Dict[str, dict] = {}
    print(f"\n{'3 s utterance':<16}{'median ms':>11}{'range ms':>19}{'speed-up vs torch float32':>28}")
    for name, ts in times.items():
        med = statistics.median(ts)
        results[name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "speedup": base / med}
        print(f"{name:<16}{1e3 * med:>11.1f}{f'{1e3 * min(ts):.1f}-{1e3 * max(ts):.1f}':>19}{base / med:>27.2f}x")

    wavs = [load_audio(w) for w in args.wav] or \
        [speech_like(s, f0, seed=i) for i, (s, f0) in enumerate([(3.0, 95), (4.5, 120), (6.0, 150), (8.0, 185),
                                                                   (3.5, 210), (5.0, 240)])]
    embeddings = {name: [m.embed(w, segments=True) for w in wavs] for name, m in models.items()}
    reference = embeddings["torch float32"]
    print(f"\nagreement with torch float32 over {len(wavs)} {'files' if args.wav else 'speech-like utterances'}:")
    print(f"{'':<16}{'min utt cosine':>16}{'mean utt cosine':>17}{'max |score diff|':>18}")
    ref_model = models["torch float32"]
    ref_scores = [ref_model.score(a, b) for i, a in enumerate(reference) for b in reference[i + 1:]]
    for name, embs in embeddings.items():
        cos = [cosine(mean_embedding(e), mean_embedding(r)) for e, r in zip(embs, reference)]
        scores = [models[name].score(a, b) for i, a in enumerate(embs) for b in embs[i + 1:]]
        diff = max(abs(s - r) for s, r in zip(scores, ref_scores)) if len(wavs) > 1 else 0.0
        results[name].update({"min_cosine": min(cos), "mean_cosine": float(np.mean(cos)), "max_score_diff": diff})
        print(f"{name:<16}{min(cos):>16.5f}{np.mean(cos):>17.5f}{diff:>18.5f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.checkpoint or args.model_config, "threads": args.threads, "runs": args.runs,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
