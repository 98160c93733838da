#!/usr/bin/env python3
"""Teacher targets for random 3 s training crops: read from the stage-2 cache vs run the mini teacher.

Both paths read the same waveform crop from disk (soundfile partial read); the cache path then slices
the cached frames (memmap), the teacher path runs the mini teacher on the crop. Prints per-crop
medians and the ratio (target >= 20x). Also measures how much chunked processing of a long utterance
deviates from a single pass (see svmix/cache/writer.py).

    python benchmarks/bench_cache.py [--teacher DIR] [--crops 200] [--layers 4] [--threads 1]

Without --teacher, a randomly initialised model with the architecture of conf/teacher_mini.yaml is
used (same compute as the trained one). Audio is synthetic; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from svmix.cache import CacheSettings, TeacherCache, build_cache, utterance_frames
from svmix.data.datadir import write_datadir
from svmix.teachers import load_teacher
from svmix.teachers.hf_format import save_hf_wavlm
from svmix.teachers.mini import load_config, torchaudio_params
from svmix.teachers.model import build_torchaudio_model

ROOT = Path(__file__).resolve().parents[1]
CROP = 48000
FRAMES = 149


def synthetic_datadir(root: Path, num_utts: int, rng: np.random.Generator) -> Path:
    wav_scp, utt2spk = {}, {}
    for i in range(num_utts):
        n = int(rng.uniform(4.0, 8.0) * 16000)
        t = np.arange(n) / 16000
        wav = 0.1 * np.sin(2 * np.pi * rng.uniform(90, 250) * t) + 0.02 * rng.standard_normal(n)
        path = root / "wav" / f"utt{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wav.astype(np.float32), 16000, subtype="PCM_16")
        wav_scp[f"utt{i:03d}"], utt2spk[f"utt{i:03d}"] = str(path), f"spk{i % 4}"
    write_datadir(root / "data", wav_scp, utt2spk)
    return root / "data"


def random_mini_teacher(out: Path) -> Path:
    params = torchaudio_params(load_config(ROOT / "conf" / "teacher_mini.yaml")["model"])
    torch.manual_seed(0)
    save_hf_wavlm(build_torchaudio_model("wavlm", params), params, out)
    return out


def read_crop(path: str, start: int) -> np.ndarray:
    wav, _ = sf.read(path, start=start, stop=start + CROP, dtype="float32")
    return wav


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", help="teacher spec (default: random mini-teacher architecture)")
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--utts", type=int, default=24)
    parser.add_argument("--layers", default="4", help="cached layers, comma separated")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    layers = [int(x) for x in args.layers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_spec = args.teacher or random_mini_teacher(tmp / "teacher")
        data = synthetic_datadir(tmp, args.utts, rng)
        build_cache(teacher_spec, data, tmp / "cache", CacheSettings(layers=layers), progress=False)
        cache, teacher = TeacherCache(tmp / "cache"), load_teacher(teacher_spec)
        wav_scp = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())
        picks = []
        for _ in range(args.crops):
            utt = cache.utt_ids[int(rng.integers(len(cache.utt_ids)))]
            k = int(rng.integers(0, cache.num_frames(utt) - FRAMES + 1))
            picks.append((utt, k))

        cached_times, teacher_times = [], []
        for utt, k in picks:  # interleaved, so both paths see the same machine load
            t0 = time.perf_counter()
            wav = read_crop(wav_scp[utt], 320 * k)
            frames = cache.frames(utt, k, FRAMES)
            t1 = time.perf_counter()
            wav = read_crop(wav_scp[utt], 320 * k)
            states = teacher(torch.from_numpy(wav)[None])
            computed = np.stack([states[layer][0].numpy() for layer in layers])
            t2 = time.perf_counter()
            cached_times.append(t1 - t0)
            teacher_times.append(t2 - t1)
            assert frames.shape == computed.shape == (len(layers), FRAMES, cache.hidden_size)

        cached, computed_median = statistics.median(cached_times), statistics.median(teacher_times)
        print(f"teacher: {teacher.spec} ({teacher.num_layers} layers, hidden {teacher.hidden_size}); "
              f"layers cached {layers}; {args.crops} random 3 s crops; {args.threads} thread(s)")
        print(f"cache read (waveform crop + frames): median {cached * 1e3:8.3f} ms")
        print(f"mini teacher on the crop:            median {computed_median * 1e3:8.3f} ms")
        print(f"ratio teacher / cache: {computed_median / cached:.1f}x (target >= 20x)")

        long_wav = (0.1 * np.sin(2 * np.pi * 140 * np.arange(16000 * 45) / 16000)
                    + 0.02 * rng.standard_normal(16000 * 45)).astype(np.float32)
        all_layers = list(range(teacher.num_layers + 1))
        whole = utterance_frames(teacher, long_wav, all_layers, chunk_seconds=1000)
        chunked = utterance_frames(teacher, long_wav, all_layers, chunk_seconds=30.0, context_seconds=4.0)
        for layer in all_layers:
            diff = chunked[:, layer] - whole[:, layer]
            print(f"chunking deviation (45 s utterance, 30 s chunks, 4 s context) layer {layer}: "
                  f"max |diff| {np.abs(diff).max():.2e}, RMS diff / RMS value "
                  f"{np.sqrt((diff ** 2).mean() / (whole[:, layer] ** 2).mean()):.2e}")


if __name__ == "__main__":
    main()
