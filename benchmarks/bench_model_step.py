"""Training-step time of student model configs, side by side (wall and process CPU seconds, medians).

One step = frontend + encoder + backend forward on a (batch, 3 s) waveform, an MSE on the last
hidden state plus an embedding term, backward, AdamW update.

    python benchmarks/bench_model_step.py [--batch 32] [--steps 5] [--threads 2] conf/model/svmixer_mini.yaml conf/model/transformer_mini.yaml
"""
from __future__ import annotations

import statistics
import time

import click
import torch

from svmix.bin.profile import load_model_config
from svmix.models import build_model


def time_steps(config: dict, batch: int, steps: int) -> tuple:
    model = build_model(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    wav = torch.randn(batch, model.segment_samples)
    target = torch.randn(batch, model.seq_len, int(model.config["hidden"]))
    walls, cpus = [], []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        wall, cpu = time.perf_counter(), time.process_time()
        states = model.hidden_states(wav)
        loss = (states[:, -1] - target).pow(2).mean() + model.backend(states).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls[1:]), statistics.median(cpus[1:])


@click.command()
@click.argument("configs", nargs=-1, required=True)
@click.option("--batch", default=32, show_default=True)
@click.option("--steps", default=5, show_default=True)
@click.option("--threads", default=2, show_default=True)
def main(configs, batch: int, steps: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    results = {path: time_steps(load_model_config(path), batch, steps) for path in configs}
    base = results[configs[0]][0]
    print(f"batch {batch} x 3 s, {threads} threads, median of {steps} steps")
    for path, (wall, cpu) in results.items():
        print(f"{path:<40} wall {wall:7.3f} s  cpu {cpu:7.3f} s  wall ratio vs first {wall / base:5.2f}")


if __name__ == "__main__":
    main()
