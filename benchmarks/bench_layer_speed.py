"""Benchmark: one SV-Mixer layer (fast inference path) vs one Transformer student layer on a CPU.

``svmix-profile`` counts 0.632 GMACs per SV-Mixer layer against 1.250 (linears) + 0.046 (attention)
for the Transformer layer (H=1024, 16 heads, FFN 2048). This measures whether that halving shows up
as time:
H=1024, T=149, ``torch.set_num_threads(2)`` by default, batch 1 and 16, eval mode, inference_mode.

Timed side by side in one run, interleaved (each round runs every layer once, in rotating order, so
all see the same machine noise), after warm-up; prints medians of wall time (and of process CPU time)
and the ratios:

* ``svmixer_fast``: ``FastSVMixerBlock`` (svmix.models.fast.svmixer) on time-major (T, B, H) frames,
  the layout the encoder keeps between fast blocks (converted once per utterance batch, not per layer),
  with the fused CPU kernels when they build (printed; ``SVMIX_CPU_KERNELS=0``: PyTorch ops only);
* ``transformer``: ``TransformerLayer`` from svmix.models.transformer (the project's Transformer
  student: fused QKV projection, ``scaled_dot_product_attention``) on (B, T, H);
* ``svmixer_reference``: the reference ``SVMixerBlock`` on (B, H, T), for context.

    python benchmarks/bench_layer_speed.py [--runs 30] [--batches 1,16] [--threads 2] [--json FILE]

OpenMP threads keep the runtime's default waiting policy (spin, then sleep), as in a deployment.
On a machine shared with other busy processes, ``export OMP_WAIT_POLICY=PASSIVE`` first: spinning
threads then fight the other processes for the cores, and every layer gets slower.

Target: svmixer_fast / transformer ≤ 0.6 at batch 1 and 16.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable, Dict, List

import torch

from svmix.models.fast import kernels as cpu_kernels
from svmix.models.fast.svmixer import FastSVMixerBlock
from svmix.models.svmixer import SVMixerBlock
from svmix.models.transformer import TransformerLayer

HIDDEN, SEQ_LEN = 1024, 149


def time_interleaved(cases: Dict[str, Callable[[], object]], runs: int, warmup: int = 3) -> Dict[str, Dict[str, float]]:
    """Median wall and CPU seconds per case, and the range of the wall times; every round runs all cases
    once, in rotating order."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    wall: Dict[str, List[float]] = {n: [] for n in names}
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            w, c = time.perf_counter(), time.process_time()
            cases[name]()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    return {n: {"wall": statistics.median(wall[n]), "cpu": statistics.median(cpu[n]),
                "wall_range": [min(wall[n]), max(wall[n])]} for n in names}


def kernels_in_use() -> str:
    return "fused CPU kernels: " + ("yes" if cpu_kernels.kernels() is not None else "no (PyTorch ops)")


def write_results(path: str, args: argparse.Namespace, results: dict) -> None:
    """The ``--json`` file of a benchmark: its settings, whether the kernels ran, and its results."""
    with open(path, "w") as f:
        json.dump({"threads": args.threads, "runs": args.runs, "kernels": kernels_in_use(), "results": results},
                  f, indent=2)


def build_layers(seed: int = 0):
    torch.manual_seed(seed)
    reference = SVMixerBlock(HIDDEN, SEQ_LEN).eval()
    return {"svmixer_fast": FastSVMixerBlock(reference), "transformer": TransformerLayer(HIDDEN).eval(),
            "svmixer_reference": reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = build_layers()
    results = {}
    print(f"one layer, H={HIDDEN}, T={SEQ_LEN}, {args.threads} threads, medians of {args.runs} interleaved runs; "
          f"{kernels_in_use()}")
    with torch.inference_mode():
        for batch in [int(b) for b in args.batches.split(",")]:
            frames = torch.randn(batch, SEQ_LEN, HIDDEN)
            channels_first = frames.transpose(1, 2).contiguous()
            time_major = frames.transpose(0, 1).contiguous()
            cases = {"svmixer_fast": lambda: layers["svmixer_fast"](time_major),
                     "transformer": lambda: layers["transformer"](frames),
                     "svmixer_reference": lambda: layers["svmixer_reference"](channels_first)}
            med = time_interleaved(cases, args.runs)
            ratio = {kind: med["svmixer_fast"][kind] / med["transformer"][kind] for kind in ("wall", "cpu")}
            ref_ratio = {kind: med["svmixer_reference"][kind] / med["transformer"][kind] for kind in ("wall", "cpu")}
            results[batch] = {"median_seconds": med, "fast_over_transformer": ratio,
                              "reference_over_transformer": ref_ratio}
            print(f"batch {batch:2d}: " + "  ".join(f"{n} {m['wall'] * 1e3:8.2f} ms (cpu {m['cpu'] * 1e3:8.2f})"
                                                 for n, m in med.items()))
            print(f"          svmixer_fast / transformer = {ratio['wall']:.3f} (cpu {ratio['cpu']:.3f}); "
                  f"reference / transformer = {ref_ratio['wall']:.3f} (cpu {ref_ratio['cpu']:.3f})")
    if args.json:
        write_results(args.json, args, results)


if __name__ == "__main__":
    main()
