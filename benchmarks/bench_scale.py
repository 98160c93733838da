#!/usr/bin/env python3
"""VoxCeleb2-sized data loading, simulated: start-up, worker memory and loader throughput.

Builds a data directory shaped like VoxCeleb2-dev (1,092,009 utterances of 5,994 speakers, 4-30 s
long, mean about 7.8 s) whose files are hard links to a few hundred synthetic wavs, then measures and
prints one table:

- ``svmix-validate-data``: wall time and peak memory (a fresh process; empty audio-scan cache);
- training start-up until the first batch, first run (empty audio-scan cache) and second run
  (cache filled by the first): data dir reading, audio scan, index, sampler and DataLoader, in a fresh
  process each, measured after the interpreter and torch are imported;
- per-worker memory of 8 DataLoader workers over ``--batches`` batches (second run): RSS and USS
  (private pages; copy-on-write copies of the index show up here, not in RSS) at the first batch and at
  the end, and the growth;
- steady-state throughput of one loader (crops per second per worker) with the full training
  augmentation (``train.augment`` defaults: reverb, babble, music, noise, coloured noise, clipping;
  synthetic RIRs, noise and music), next to what 2 GPUs consume at the paper's batch of 128 with an
  assumed step time (``--step-time``), and the cores needed to keep up.

    python benchmarks/bench_scale.py [--utterances 1092009] [--workers 8] [--batches 2000]

The files are hard links, so after the first scan their inodes are in the page cache: the first-run
start-up is a lower bound of what a cold network filesystem costs. The machine's other load slows
every number here; run it on an idle machine for absolute figures. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

VOX2_UTTS, VOX2_SPEAKERS = 1_092_009, 5_994
PAPER_BATCH, GPUS = 128, 2
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the corpus

def durations(rng: np.random.Generator, n: int) -> np.ndarray:
    """VoxCeleb2-like utterance lengths in seconds: at least 4 s, mean about 7.8 s, a long tail to 30 s."""
    return np.minimum(4.0 + rng.gamma(1.2, 3.2, size=n), 30.0)


def speaker_counts(rng: np.random.Generator, utts: int, speakers: int) -> np.ndarray:
    """Utterances per speaker: log-normal shares (VoxCeleb2 ranges from tens to about a thousand)."""
    weights = rng.lognormal(0.0, 0.7, size=speakers)
    counts = np.maximum(1, np.floor(weights / weights.sum() * utts).astype(np.int64))
    while counts.sum() != utts:  # fix the rounding, one utterance at a time where it is largest/smallest
        diff = utts - int(counts.sum())
        idx = rng.choice(speakers, size=min(abs(diff), speakers), replace=False)
        counts[idx] += 1 if diff > 0 else -(counts[idx] > 1).astype(np.int64)
    return counts


def build_corpus(root: Path, utts: int, speakers: int, sources: int, seed: int = 0) -> Path:
    """The data dir ``root/data`` of ``utts`` hard links (``root/wav``) to ``sources`` synthetic wavs."""
    import soundfile as sf

    from svmix.data.datadir import write_kv

    rng = np.random.default_rng(seed)
    src_dir = root / "sources"
    src_dir.mkdir(parents=True)
    src_seconds = durations(rng, sources)
    src_paths = []
    for i, seconds in enumerate(src_seconds):
        n = int(seconds * 16000)
        env = 0.5 + 0.5 * np.abs(np.sin(np.linspace(0, seconds * rng.uniform(2, 5), n)))
        wav = np.convolve(rng.standard_normal(n), np.hanning(24) / 12, mode="same") * env
        path = src_dir / f"src{i:04d}.wav"
        sf.write(path, (0.3 * wav / np.abs(wav).max()).astype(np.float32), 16000, subtype="PCM_16")
        src_paths.append(str(path))
    counts = speaker_counts(rng, utts, speakers)
    choice = rng.integers(0, sources, size=utts)
    wav_lines, spk_lines, dur_lines, spk2utt = [], [], [], []
    u = 0
    for s, count in enumerate(counts):
        spk = f"id{s:05d}"
        spk_dir = root / "wav" / spk
        spk_dir.mkdir(parents=True)
        names = []
        for k in range(int(count)):
            utt = f"{spk}-v{k // 8:04d}-{k:05d}"
            path = spk_dir / f"v{k // 8:04d}-{k:05d}.wav"
            os.link(src_paths[choice[u]], path)
            wav_lines.append((utt, str(path)))
            spk_lines.append((utt, spk))
            dur_lines.append((utt, f"{src_seconds[choice[u]]:.3f}"))
            names.append(utt)
            u += 1
        spk2utt.append((spk, " ".join(names)))
    data = root / "data"
    for name, lines in (("wav.scp", wav_lines), ("utt2spk", spk_lines), ("utt2dur", dur_lines),
                        ("spk2utt", spk2utt)):
        write_kv(data / name, lines)
    return data


# ----------------------------------------------------------------------------- measurements

def memory_kb(pid: int) -> Dict[str, int]:
    """RSS and USS (private clean + dirty) of a process, in kB."""
    out = {"rss": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key == "Rss":
                out["rss"] = int(rest.split()[0])
            elif key in ("Private_Clean", "Private_Dirty"):
                out["uss"] += int(rest.split()[0])
    return out


def timed_process(args: List[str], env: Dict[str, str]) -> Dict[str, float]:
    """Run ``args``; its wall time, CPU time and peak RSS (MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read()[-2000:]}")
    return {"seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}


def startup_phase(data_dir: str, workers: int, batch: int, batches: int, seed: int) -> Dict[str, object]:
    """In a fresh process: the trainer's data path up to the first batch, then ``batches`` more
    batches with per-worker memory samples. Uses the trainer's own functions."""
    import torch
    from torch.utils.data import DataLoader

    from svmix.data.audio import scan_cache_path
    from svmix.data.index import utterance_keys
    from svmix.train.dataset import TrainingSet
    from svmix.train.sampler import ShardedBatchSampler
    from svmix.train.trainer import _training_data, _worker_init

    torch.set_num_threads(1)
    cpu0 = time.process_time()
    start = time.perf_counter()
    utts, paths, labels, speakers, _ = _training_data(data_dir)
    read = time.perf_counter()
    dataset = TrainingSet(utts, paths, labels, 48000, 149, scan_cache=scan_cache_path(data_dir))
    scanned = time.perf_counter()
    sampler = ShardedBatchSampler(labels, batch, seed, utt_keys=utterance_keys(utts))
    del utts, paths, labels
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, worker_init_fn=_worker_init,
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    first = time.perf_counter()
    result: Dict[str, object] = {"read_tables_s": read - start, "scan_s": scanned - read,
                                 "index_loader_first_batch_s": first - scanned, "startup_s": first - start,
                                 "startup_cpu_s": time.process_time() - cpu0,
                                 "utterances": len(dataset), "speakers": len(speakers)}
    if batches:
        pids = [w.pid for w in it._workers] if workers else [os.getpid()]
        begin = {p: memory_kb(p) for p in pids}
        peak = dict(begin)
        done, t0 = 1, time.perf_counter()
        while done < batches:
            for _ in it:
                done += 1
                if done % 100 == 0:
                    for p in pids:
                        now = memory_kb(p)
                        peak[p] = {k: max(peak[p][k], now[k]) for k in now}
                if done >= batches:
                    break
            else:
                sampler.set_epoch(sampler.epoch + 1)
                it = iter(loader)
        end = {p: memory_kb(p) for p in pids}
        result.update({
            "batches": done, "batch_size": batch, "loop_s": time.perf_counter() - t0,
            "rss_start_mb": max(begin[p]["rss"] for p in pids) / 1024,
            "rss_end_mb": max(end[p]["rss"] for p in pids) / 1024,
            "rss_growth_mb": max(max(peak[p]["rss"], end[p]["rss"]) - begin[p]["rss"] for p in pids) / 1024,
            "uss_start_mb": max(begin[p]["uss"] for p in pids) / 1024,
            "uss_end_mb": max(end[p]["uss"] for p in pids) / 1024,
            "uss_growth_mb": max(max(peak[p]["uss"], end[p]["uss"]) - begin[p]["uss"] for p in pids) / 1024})
    return result


def throughput(data_dir: Path, augment_dir: Path, seconds: float, seed: int) -> Dict[str, float]:
    """Crops per second of one loader process (this one), full default augmentation."""
    from svmix.data.datadir import DataDir
    from svmix.train.augment import DEFAULT_AUGMENT_CONFIG, AugmentResources, Augmenter
    from svmix.train.dataset import TrainingSet

    d = DataDir(data_dir)
    wav, utt2spk = d.wav_scp, d.utt2spk
    utts = sorted(wav)
    speakers = sorted(set(utt2spk.values()))
    labels = [speakers.index(utt2spk[u]) for u in utts]
    dataset = TrainingSet(utts, [wav[u] for u in utts], labels, 48000, 149)
    dataset.augmenter = Augmenter(dict(DEFAULT_AUGMENT_CONFIG, p=0.8),
                                  AugmentResources(augment_dir, dataset.other_speech))
    rng = np.random.default_rng(seed)
    for i in range(5):  # warm-up: file lists, RIR and noise reads
        dataset[(int(rng.integers(len(utts))), i)]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset[(int(rng.integers(len(utts))), int(rng.integers(2 ** 62)))]
        n += 1
    return {"crops": n, "crops_per_s": n / (time.perf_counter() - start)}


# ----------------------------------------------------------------------------- driver

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", type=int, default=VOX2_UTTS)
    ap.add_argument("--speakers", type=int, help=f"default: {VOX2_SPEAKERS} scaled to --utterances")
    ap.add_argument("--sources", type=int, default=300, help="distinct synthetic wavs the files link to")
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers of the memory run")
    ap.add_argument("--batches", type=int, default=2000, help="batches of the memory run")
    ap.add_argument("--batch-size", type=int, default=16, help="batch of the start-up and memory runs")
    ap.add_argument("--throughput-seconds", type=float, default=30.0)
    ap.add_argument("--step-time", type=float, default=0.25,
                    help="assumed seconds per training step of batch 128 on 2 GPUs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="build the corpus here (default: a temporary directory)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase == "startup":
        print(json.dumps(startup_phase(args.data, args.workers, args.batch_size, args.batches, args.seed)))
        return
    for name in ("utterances", "sources", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0 or args.batches < 1 or args.step_time <= 0 or args.throughput_seconds <= 0:
        ap.error("--workers >= 0, --batches >= 1, --step-time and --throughput-seconds > 0")
    speakers = args.speakers or max(2, round(args.utterances * VOX2_SPEAKERS / VOX2_UTTS))
    if not 2 <= speakers <= args.utterances:
        ap.error("--speakers must be between 2 and --utterances")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        data = build_corpus(root, args.utterances, speakers, args.sources, args.seed)
        build_s = time.perf_counter() - t
        print(f"built {args.utterances} utterances of {speakers} speakers ({args.sources} source wavs) "
              f"in {build_s:.0f} s", file=sys.stderr, flush=True)
        class _Rows(list):  # each row also goes to stderr as soon as it is measured
            def append(self, row):
                print(" | ".join(row), file=sys.stderr, flush=True)
                super().append(row)

        rows = _Rows()
        validate_env = {**env, "SVMIX_CACHE_DIR": str(root / "cache-validate")}
        v = timed_process([sys.executable, "-m", "svmix.bin.validate_data", str(data)], validate_env)
        rows.append(("svmix-validate-data (empty scan cache)", f"{v['seconds']:.1f} s",
                     f"CPU {v['cpu_s']:.1f} s, peak RSS {v['peak_mb']:.0f} MB"))
        print(f"validated in {v['seconds']:.0f} s", file=sys.stderr, flush=True)
        train_env = {**env, "SVMIX_CACHE_DIR": str(root / "cache-train")}
        runs = []
        for run, batches in (("first", 0), ("second", args.batches)):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", "startup", "--data", str(data),
                   "--workers", str(args.workers), "--batch-size", str(args.batch_size), "--batches", str(batches),
                   "--seed", str(args.seed)]
            proc = subprocess.run(cmd, env=train_env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"start-up run failed: {proc.stderr[-2000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.append(r)
            rows.append((f"training start-up to first batch, {run} run", f"{r['startup_s']:.1f} s",
                         f"main-process CPU {r['startup_cpu_s']:.1f} s; tables {r['read_tables_s']:.1f} s, audio scan {r['scan_s']:.1f} s, "
                         f"index+loader+first batch {r['index_loader_first_batch_s']:.1f} s; "
                         f"{args.workers} workers, batch {args.batch_size}"))
            print(f"start-up ({run} run) {r['startup_s']:.0f} s", file=sys.stderr, flush=True)
        m = runs[1]
        rows.append((f"per-worker RSS, {args.workers} workers, {m['batches']} batches of {m['batch_size']}",
                     f"{m['rss_start_mb']:.0f} -> {m['rss_end_mb']:.0f} MB",
                     f"growth {m['rss_growth_mb']:.1f} MB (max over workers)"))
        rows.append(("per-worker USS (private pages), same run", f"{m['uss_start_mb']:.0f} -> {m['uss_end_mb']:.0f} MB",
                     f"growth {m['uss_growth_mb']:.1f} MB (max over workers)"))
        from svmix.data.augment_resources import prepare_augment

        augment = root / "augment"
        prepare_augment(augment, synthetic=True, num_noises=20, num_music=10, num_rirs=20, seed=args.seed)
        small = root / "small"  # the loader's per-crop cost does not depend on the index size
        from svmix.data.datadir import read_kv, write_kv

        wav = read_kv(data / "wav.scp")
        spk = read_kv(data / "utt2spk")
        keep = sorted(wav)[:: max(1, len(wav) // 2000)]
        write_kv(small / "wav.scp", ((u, wav[u]) for u in keep))
        write_kv(small / "utt2spk", ((u, spk[u]) for u in keep))
        tp = throughput(small, augment, args.throughput_seconds, args.seed)
        need = PAPER_BATCH / args.step_time
        rows.append(("loader throughput, full augmentation (p 0.8)", f"{tp['crops_per_s']:.1f} crops/s/worker",
                     f"{tp['crops']} crops of 3 s in {args.throughput_seconds:.0f} s, one process"))
        rows.append((f"{GPUS} GPUs at batch {PAPER_BATCH}, assumed {args.step_time} s/step",
                     f"{need:.0f} crops/s", f"needs {need / tp['crops_per_s']:.1f} loader cores"))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"VoxCeleb2-shaped data: {args.utterances} utterances, {speakers} speakers "
          f"(corpus built in {build_s:.0f} s)")
    print(f"| {'measure'.ljust(width)} | {'value'.ljust(vwidth)} | notes")
    print(f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|------")
    for name, value, note in rows:
        print(f"| {name.ljust(width)} | {value.ljust(vwidth)} | {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"utterances": args.utterances, "speakers": speakers, "validate": v, "startup": runs,
                       "throughput": tp, "assumed_step_s": args.step_time, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
