"""Benchmark: svmix-score + metrics vs a WeSpeaker-style per-trial scoring loop, side by side.

Synthetic data: 1,000 speakers x 20 utterances, dim 192, written as a real Kaldi scp/ark, and a
Kaldi-format trials file (``<enroll> <test> target|nontarget``) of 1,000,000 trials (~10 % target).

* svmix end to end: ``score_file`` (load scp, read trials, score, write scores, EER/minDCF), median of
  ``--repeats`` runs through the Python API and as a ``svmix-score`` subprocess (incl. Python start).
* The baseline behaves like WeSpeaker's ``score.py`` (own code, same steps): load every embedding
  into a dict with ``kaldiio.load_scp_sequential`` (minus a mean of 0.0), ``readlines()`` the trials,
  and per line ``strip().split()``, look up both embeddings, score with
  ``sklearn.metrics.pairwise.cosine_similarity`` on (1, D) arrays and write
  ``'{} {} {:.5f} {}'`` (enroll, test, score, label); then re-read the score file line by line and
  compute EER and minDCF (p_target 0.01) from sklearn's ``roc_curve``. At ~0.1-1 ms per trial it is
  timed on the first ``--loop-trials`` trials and extrapolated linearly to the full list (the
  embedding load is counted once, not scaled).

Scores must agree to 1e-5. Peak memory (ru_maxrss of the child) of ``svmix-score`` on 10,000,000 trials.

    python benchmarks/bench_scoring.py [--trials 1000000] [--loop-trials 20000] [--big-trials 10000000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np

from svmix.scoring import score_trials
from svmix.scoring.pipeline import score_file
from svmix.scoring.textio import StringTable, join_columns

N_SPK, PER_SPK, DIM = 1000, 20, 192


def utt_ids():
    return [f"spk{s:04d}-utt{u:02d}" for s in range(N_SPK) for u in range(PER_SPK)]


def write_embeddings(root: Path, rng) -> str:
    centres = rng.standard_normal((N_SPK, DIM)).astype(np.float32)
    with kaldiio.WriteHelper(f"ark,scp:{root}/xvector.ark,{root}/xvector.scp") as writer:
        for i, utt in enumerate(utt_ids()):
            writer(utt, centres[i // PER_SPK] + 1.5 * rng.standard_normal(DIM).astype(np.float32))
    return f"{root}/xvector.scp"


def write_trials(path: Path, n: int, rng, block: int = 1_000_000) -> None:
    """Kaldi-format trials ``<enroll> <test> target|nontarget``, about 10 % target."""
    ids, labels = StringTable(utt_ids()), StringTable(["nontarget", "target"])
    with open(path, "wb") as f:
        for start in range(0, n, block):
            m = min(block, n - start)
            enroll = rng.integers(0, N_SPK * PER_SPK, m)
            same_spk = (enroll // PER_SPK) * PER_SPK + rng.integers(0, PER_SPK, m)
            test = np.where(rng.random(m) < 0.1, same_spk, rng.integers(0, N_SPK * PER_SPK, m))
            target = (enroll // PER_SPK == test // PER_SPK).astype(np.int64)
            f.write(join_columns([ids.column(enroll), ids.column(test), labels.column(target)]))


def head(path: Path, n: int, out: Path) -> Path:
    with open(path) as fin, open(out, "w") as fout:
        fout.writelines(line for _, line in zip(range(n), fin))
    return out


def wespeaker_style_run(scp: str, trials_path: Path, score_path: Path) -> dict:
    """The per-trial baseline; returns its phase timings (s), scores and metrics."""
    from sklearn.metrics import roc_curve
    from sklearn.metrics.pairwise import cosine_similarity

    t0 = time.perf_counter()
    mean = 0.0
    embeddings = {utt: vec - mean for utt, vec in kaldiio.load_scp_sequential(scp)}
    t1 = time.perf_counter()
    with open(trials_path) as f:
        lines = f.readlines()
    with open(score_path, "w") as out:
        for line in lines:
            fields = line.strip().split()
            first, second = embeddings[fields[0]], embeddings[fields[1]]
            score = cosine_similarity(first.reshape(1, -1), second.reshape(1, -1))[0][0]
            out.write("{} {} {:.5f} {}\n".format(fields[0], fields[1], score, fields[2]))
    t2 = time.perf_counter()
    scores, labels = [], []
    with open(score_path) as f:
        for line in f:
            fields = line.strip().split()
            scores.append(float(fields[2]))
            labels.append(fields[3] == "target")
    fpr, tpr, _ = roc_curve(np.array(labels), np.array(scores), pos_label=True)
    fnr = 1.0 - tpr
    eer = 100.0 * fpr[np.nanargmin(np.abs(fnr - fpr))]
    min_dcf = np.min(0.01 * fnr + 0.99 * fpr) / 0.01
    t3 = time.perf_counter()
    return {"load": t1 - t0, "score": t2 - t1, "metrics": t3 - t2, "scores": np.array(scores),
            "eer": eer, "min_dcf": min_dcf}


def unrounded_agreement(scp: str, trials_path: Path, n: int = 2000) -> tuple:
    """(max |diff|, n) between ``score_trials`` and per-trial sklearn cosines on the first ``n`` trials."""
    from sklearn.metrics.pairwise import cosine_similarity

    embeddings = dict(kaldiio.load_scp_sequential(scp))
    with open(trials_path) as f:
        pairs = [line.split()[:2] for _, line in zip(range(n), f)]
    ours = score_trials(pairs, embeddings)
    theirs = [cosine_similarity(embeddings[a].reshape(1, -1), embeddings[b].reshape(1, -1))[0][0] for a, b in pairs]
    return float(np.abs(ours - np.array(theirs)).max()), len(pairs)


def run_child(cmd) -> tuple:
    """(seconds, peak resident memory in MB) of a child process, from its own rusage."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode()[-500:]}")
    return elapsed, usage.ru_maxrss / 1024.0


def score_column(path: Path) -> np.ndarray:
    with open(path) as f:
        return np.array([float(line.split()[2]) for line in f])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1_000_000)
    ap.add_argument("--loop-trials", type=int, default=20_000, help="trials the baseline loop is timed on")
    ap.add_argument("--big-trials", type=int, default=10_000_000, help="trials for the memory run (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="bench_scoring."))
    score_bin = shutil.which("svmix-score") or str(Path(sys.executable).parent / "svmix-score")
    try:
        scp = write_embeddings(root, rng)
        trials = root / "trials"
        write_trials(trials, args.trials, rng)
        print(f"data: {N_SPK * PER_SPK} embeddings (dim {DIM}), {args.trials:,} Kaldi-format trials; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

        api_times, cli_times, metrics = [], [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            metrics = score_file(trials, scp, root / "scores")
            api_times.append(time.perf_counter() - t0)
            cli_times.append(run_child([score_bin, "--trials", str(trials), "--embeddings", scp,
                                        "--output", str(root / "scores_cli"), "--metrics-json",
                                        str(root / "metrics.json")])[0])
        api_s, cli_s = statistics.median(api_times), statistics.median(cli_times)

        subset = head(trials, args.loop_trials, root / "trials_subset")
        runs = [wespeaker_style_run(scp, subset, root / "scores_loop") for _ in range(args.repeats)]
        phase = {key: statistics.median(r[key] for r in runs) for key in ("load", "score", "metrics")}
        per_trial = (phase["score"] + phase["metrics"]) / args.loop_trials
        loop_s = phase["load"] + per_trial * args.trials

        n = args.loop_trials
        ours_file = score_column(root / "scores")[:n]
        loop_file = runs[0]["scores"]
        diff_file = float(np.abs(ours_file - loop_file).max())
        diff_exact, n_exact = unrounded_agreement(scp, subset)

        print(f"svmix metrics ({args.trials:,} trials): EER {metrics['eer']:.3f}%  "
              f"minDCF(0.01) {metrics['min_dcf']['0.01']:.4f}")
        print(f"baseline metrics ({n:,}-trial subset): EER {runs[0]['eer']:.3f}%  "
              f"minDCF(0.01) {runs[0]['min_dcf']:.4f}")
        print(f"score agreement: score files (svmix %.6f vs baseline %.5f) max |diff| {diff_file:.2e} over {n:,} "
              f"trials; unrounded (score_trials vs per-trial sklearn cosine) {diff_exact:.2e} over {n_exact:,}: "
              f"{'OK' if max(diff_file, diff_exact) < 1e-5 else 'FAIL'} at 1e-5")
        print(f"end to end, {args.trials:,} trials (medians of {args.repeats}):")
        print(f"  svmix score_file, Python API (load+read+score+write+metrics)   {api_s:9.2f} s")
        print(f"  svmix-score subprocess (same, incl. interpreter start)          {cli_s:9.2f} s")
        print(f"  WeSpeaker-style loop: load {phase['load']:.2f} s + {per_trial * 1e6:.0f} us/trial "
              f"(score+write {phase['score'] / n * 1e6:.0f}, metrics re-read {phase['metrics'] / n * 1e6:.1f}); "
              f"timed on {n:,} trials, EXTRAPOLATED linearly to {args.trials:,}: {loop_s:9.1f} s")
        print(f"  ratio loop / svmix API: {loop_s / api_s:7.1f}x    loop / svmix-score subprocess: "
              f"{loop_s / cli_s:7.1f}x   (target >= 100x)")

        if args.big_trials:
            big = root / "trials_big"
            write_trials(big, args.big_trials, rng)
            for name in ("scores", "scores_cli", "scores_loop"):
                (root / name).unlink()
            seconds, peak_mb = run_child([score_bin, "--trials", str(big), "--embeddings", scp,
                                          "--output", str(root / "scores_big")])
            print(f"svmix-score on {args.big_trials:,} trials: {seconds:.1f} s, peak RSS {peak_mb:.0f} MB "
                  f"({'OK' if peak_mb < 2048 else 'OVER'} the 2 GB limit)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
