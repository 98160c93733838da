"""Benchmark: end-to-end embedding time of a 5-layer SV-Mixer student vs the WavLM-Large architecture.

Both with random weights (no download): the student is ``build_model`` with H=1024, 5 SV-Mixer
layers and the ECAPA backend, on the fast inference path (``prepare_for_inference``); WavLM-Large
is ``torchaudio.models.wavlm_large()`` (its Transformer output only, no speaker backend, which
favours WavLM). Timed side by side, interleaved, medians, ``torch.set_num_threads(2)`` by default:

* 3 s: the student embeds one 3 s segment; WavLM-Large runs on the same 3 s waveform;
* 10 s: the student embeds the utterance the way evaluation does (``svmix.inference.segments``: 10 segments of 3 s,
  batched as one (10, 48000) call); WavLM-Large runs once on the 10 s waveform.

Beside them, the any-length student (encoder ``svmixer_anylen``, the same layers and parameters, time
MLP over 149-frame windows; docs/architecture.md §Any-length SV-Mixer) embeds each input in one pass
(3 s: one window; 10 s: the whole waveform). Its encoder has no fused fast path: it runs as built.

    python benchmarks/bench_student_vs_wavlm.py [--runs 10] [--threads 2] [--json FILE]

OpenMP threads keep the runtime's default waiting policy; see bench_layer_speed.py.

Targets: student ≥ 5× faster than WavLM-Large on 3 s; the any-length student's 10 s pass at most 1/3 of
the student's 10 × 3 s time (issue 20).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torchaudio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layer_speed import kernels_in_use, time_interleaved, write_results  # noqa: E402

from svmix.inference.segments import segment_waveform  # noqa: E402
from svmix.models import build_model  # noqa: E402
from svmix.models.fast import prepare_for_inference  # noqa: E402

SAMPLE_RATE = 16000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    student = prepare_for_inference(build_model({"hidden": 1024, "encoder": {"name": "svmixer", "num_layers": 5},
                                                 "backend": {"name": "ecapa"}}).eval())
    anylen = prepare_for_inference(build_model({"hidden": 1024, "num_eval_segments": 1, "backend": {"name": "ecapa"},
                                                "encoder": {"name": "svmixer_anylen", "num_layers": 5}}).eval())
    wavlm = torchaudio.models.wavlm_large().eval()
    segment, count = student.segment_samples, student.num_eval_segments
    wav3, wav10 = torch.randn(3 * SAMPLE_RATE), torch.randn(10 * SAMPLE_RATE)
    segments10 = torch.from_numpy(segment_waveform(wav10.numpy(), segment, count))  # evaluation's 10 × 3 s
    print(f"student: 5 SV-Mixer layers, H=1024, ECAPA, {sum(p.numel() for p in student.parameters()) / 1e6:.1f}M "
          f"params; WavLM-Large: {sum(p.numel() for p in wavlm.parameters()) / 1e6:.1f}M params; "
          f"{args.threads} threads, medians of {args.runs} interleaved runs; {kernels_in_use()}")
    results = {}
    with torch.inference_mode():
        for name, student_input, wavlm_input in [("3s", wav3[None], wav3[None]), ("10s", segments10, wav10[None])]:
            med = time_interleaved({"student": lambda: student(student_input),
                                    "student_anylen": lambda: anylen(wavlm_input),
                                    "wavlm_large": lambda: wavlm(wavlm_input)}, args.runs, warmup=2)
            speedup = med["wavlm_large"]["wall"] / med["student"]["wall"]
            anylen_ratio = med["student_anylen"]["wall"] / med["student"]["wall"]
            results[name] = {"median_seconds": med, "wavlm_over_student": speedup, "anylen_over_student": anylen_ratio,
                             "student_input": list(student_input.shape), "wavlm_input": list(wavlm_input.shape)}
            print(f"{name:>3}: student {tuple(student_input.shape)} {med['student']['wall'] * 1e3:8.1f} ms "
                  f"(cpu {med['student']['cpu'] * 1e3:8.1f})   WavLM-Large {tuple(wavlm_input.shape)} "
                  f"{med['wavlm_large']['wall'] * 1e3:8.1f} ms (cpu {med['wavlm_large']['cpu'] * 1e3:8.1f})   "
                  f"student is {speedup:.2f}x faster")
            lo, hi = (1e3 * t for t in med["student_anylen"]["wall_range"])
            slo, shi = (1e3 * t for t in med["student"]["wall_range"])
            print(f"     any-length student {tuple(wavlm_input.shape)} {med['student_anylen']['wall'] * 1e3:8.1f} ms "
                  f"[{lo:.1f}-{hi:.1f}] (cpu {med['student_anylen']['cpu'] * 1e3:8.1f}) against the student's "
                  f"[{slo:.1f}-{shi:.1f}]: {anylen_ratio:.2f}x the student's time")
    if args.json:
        write_results(args.json, args, results)


if __name__ == "__main__":
    main()
