#!/usr/bin/env python3
"""Teacher-cache formats: stored bytes per frame, size against float16, decode speed and distortion.

Builds one cache per format (svmix.cache.build_cache, including the fit pass of trained codecs) of
the same teacher on the same synthetic data directory, then for each format prints:

- bytes/frame: shard bytes per frame and cached layer (the codec state, e.g. pq codebooks, is
  stored once per cache and reported separately),
- the size ratio float16 / format,
- decode speed: frames/s of TeacherCache.frames() over every utterance, median and range of
  ``--runs`` passes (memory-mapped shards, warm page cache),
- relative MSE and mean cosine of the decoded frames to the float16 cache's frames, per layer
  averaged, over all frames (the pq codebooks are fitted on a sample of these same frames).

    python benchmarks/bench_cache_codecs.py [--teacher SPEC] [--hidden 1024] [--utts 24] [--runs 5]

Without --teacher, a randomly initialised WavLM-architecture teacher of hidden size ``--hidden``
(2 layers) is built; ``--hidden 256`` with 4 layers is the mini teacher's shape. Audio is synthetic.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cache import synthetic_datadir  # noqa: E402  (same directory)

from svmix.cache import CacheSettings, TeacherCache, build_cache  # noqa: E402
from svmix.cache.codecs import distortion  # noqa: E402
from svmix.teachers.hf_format import save_hf_wavlm  # noqa: E402
from svmix.teachers.model import build_torchaudio_model  # noqa: E402


def random_teacher(out: Path, hidden: int, layers: int) -> Path:
    conv = [(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2
    params = dict(extractor_mode="group_norm", extractor_conv_layer_config=conv, extractor_conv_bias=False,
                  encoder_embed_dim=hidden, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=64,
                  encoder_pos_conv_groups=16, encoder_num_layers=layers, encoder_num_heads=4,
                  encoder_num_buckets=320, encoder_max_distance=800, encoder_attention_dropout=0.0,
                  encoder_ff_interm_features=2 * hidden, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
                  encoder_layer_norm_first=False, encoder_layer_drop=0.0)
    torch.manual_seed(0)
    save_hf_wavlm(build_torchaudio_model("wavlm", params), params, out)
    return out


FORMATS = [  # label, CacheSettings fields
    ("float16", {"dtype": "float16"}),
    ("int8 (per-frame scale)", {"dtype": "int8", "codec_options": {"scale": "frame"}}),
    ("int8 (per-channel scale)", {"dtype": "int8", "codec_options": {"scale": "channel"}}),
    ("pq 64 B", {"dtype": "pq", "codec_options": {"subspaces": 64}}),
    ("pq 32 B", {"dtype": "pq", "codec_options": {"subspaces": 32}}),
    ("pq 16 B", {"dtype": "pq", "codec_options": {"subspaces": 16}}),
]


def decode_rates(cache: TeacherCache, runs: int) -> list:
    total = sum(cache.num_frames(u) for u in cache.utt_ids)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for utt in cache.utt_ids:
            cache.frames(utt)
        rates.append(total / (time.perf_counter() - t0))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", help="teacher spec (default: a random-init WavLM-architecture teacher)")
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size of the random teacher")
    parser.add_argument("--teacher-layers", type=int, default=2, help="layers of the random teacher")
    parser.add_argument("--layers", default="2", help="cached layers, comma separated")
    parser.add_argument("--utts", type=int, default=24)
    parser.add_argument("--fit-frames", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher = args.teacher or random_teacher(tmp / "teacher", args.hidden, args.teacher_layers)
        data = synthetic_datadir(tmp, args.utts, np.random.default_rng(0))
        built = {}
        for label, fields in FORMATS:
            t0 = time.perf_counter()
            out = build_cache(teacher, data, tmp / f"cache{len(built)}",
                              CacheSettings(layers=layers, fit_frames=args.fit_frames, **fields), progress=False)
            built[label] = (TeacherCache(out), time.perf_counter() - t0)
        reference = built["float16"][0]
        ref_frames = {u: reference.frames(u) for u in reference.utt_ids}
        n_frames = reference.manifest["num_frames"]
        print(f"teacher: {teacher} (hidden {reference.hidden_size}); cached layers {layers}; {args.utts} synthetic "
              f"utterances, {n_frames} frames; fit sample {min(args.fit_frames, n_frames)} frames; "
              f"{args.threads} thread(s); decode over {args.runs} runs")
        print("| format | bytes/frame/layer | float16 / format | codec state | build s | decode kframes/s median "
              "[min, max] | relative MSE | mean cosine |")
        print("|---|---:|---:|---:|---:|---|---:|---:|")
        f16_bytes = reference.bytes_per_frame
        for label, (cache, seconds) in built.items():
            rates = decode_rates(cache, args.runs)
            d = [distortion(np.concatenate([ref_frames[u][i] for u in cache.utt_ids]),
                            np.concatenate([cache.frames(u)[i] for u in cache.utt_ids])) for i in range(len(layers))]
            mse = float(np.mean([x["relative_mse"] for x in d]))
            cos = float(np.mean([x["mean_cosine"] for x in d]))
            state = cache.manifest["codec"].get("state")
            state_text = f"{state['bytes'] / 1e3:.0f} kB" if state else "-"
            print(f"| {label} | {cache.bytes_per_frame // len(layers)} | {f16_bytes / cache.bytes_per_frame:.1f}x | "
                  f"{state_text} | {seconds:.1f} | {statistics.median(rates) / 1e3:.1f} "
                  f"[{min(rates) / 1e3:.1f}, {max(rates) / 1e3:.1f}] | {mse:.2e} | {cos:.4f} |")


if __name__ == "__main__":
    main()
