"""Every stage of the default recipe, end to end, on a tiny mini world with a few training steps:
the teacher pretrained here (--train-teacher true), two seeds, a no-KD student, two test sets."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from svmix.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--nj", "1", "--seeds", "0,1", "--students", "svmixer_mini_fbank transformer_mini_fbank", "--nokd-students", "svmixer_mini_fbank",
    "--corpus-opts", "--num-test-speakers 2 --test-utts-per-speaker 3 --num-test-trials 12 --num-val-speakers 2 "
                     "--val-utts-per-speaker 2 --num-val-trials 4 --num-train-speakers 4 --utts-per-speaker 4 "
                     "--num-pool-speakers 2 --pool-utts-per-speaker 3",
    "--augment-opts", "--num-noises 3 --num-music 2 --num-rirs 3",
    "--train-teacher", "true", "--teacher-opts", "--steps 2",
    "--train-opts", "--max-steps 3 --override train.batch_size=4 --override train.val_every=3 "
                    "--override train.val_segments=1 --override train.num_workers=0 --no-progress",
    "--extract-opts", "--num-workers 0 --num-threads 1",
]
TINY_PRETRAIN = {"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                           "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4},
                 "kmeans": {"clusters": 4, "frames": 2000, "utterances": 6},
                 "train": {"batch_size": 2, "crop_seconds": 1.0, "warmup_steps": 1, "log_every": 1}}


def run_recipe(tmp_path, *args):
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(TINY_PRETRAIN))
    cmd = ["bash", str(ROOT / "run.sh"), "--data", str(tmp_path / "data"), "--augment-dir",
           str(tmp_path / "augment"), "--exp", str(tmp_path / "exp"), "--teacher-config",
           str(tmp_path / "pretrain.yaml"), *TINY, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def run_readme_verify_example(tmp_path):
    """README.md's `verify` example, its shell block then its Python block, as written, from a directory
    laid out as ./run.sh leaves it (exp/, data/mini_world/ linked to the run's); returns the printed line."""
    readme = (ROOT / "README.md").read_text().split("On the mini recipe's output", 1)[1]
    shell, python = re.findall(r"```(?:bash|python)\n(.*?)```", readme, re.S)[:2]
    top = tmp_path / "readme"
    (top / "data").mkdir(parents=True)
    (top / "exp").symlink_to(tmp_path / "exp")
    (top / "data/mini_world").symlink_to(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd in (["bash", "-euc", shell], [sys.executable, "-c", python]):
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=top, env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.slow
def test_default_recipe_every_stage(tmp_path):
    out = run_recipe(tmp_path, "--backends", "asnorm calibration qmf fusion", "--lmft", "svmixer_mini_fbank")
    exp = tmp_path / "exp"
    assert json.loads((exp / "teacher_cache/manifest.json").read_text())["layers"] == [2]  # the teacher's last
    for system in ("svmixer_mini_fbank", "transformer_mini_fbank", "svmixer_mini_fbank_nokd"):
        for k in (0, 1):
            run = exp / system / f"seed{k}"
            assert (run / "model.pt").is_file()
            assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == k
            for test_set in ("test", "test_noisy"):
                assert (run / f"emb_{test_set}" / "xvector.scp").is_file()
                metrics = json.loads((run / f"metrics_{test_set}_trials.json").read_text())
                assert 0 <= metrics["eer"] <= 100 and set(metrics["min_dcf"]) == {"0.01", "0.05"}
                assert metrics["eer_ci"][0] <= metrics["eer"] <= metrics["eer_ci"][1]
            if system != "svmixer_mini_fbank_nokd":
                assert (run / "model.onnx").is_file() and (run / "model.ts").is_file()
    nokd = yaml.safe_load((exp / "svmixer_mini_fbank_nokd/seed0/config.yaml").read_text())
    assert nokd["train"]["kd"]["lambda"] == 0
    assert yaml.safe_load((exp / "svmixer_mini_fbank/seed0/config.yaml").read_text())["train"]["kd"]["lambda"] == 1
    for test_set in ("test", "test_noisy"):
        assert (exp / "floor" / f"metrics_{test_set}_trials.json").is_file()
        assert (exp / f"det_{test_set}_trials.png").is_file()
    results = (exp / "RESULTS.md").read_text()
    # Stage 5's pictures, of each trained system's first seed, beside the DET plots; RESULTS.md links them.
    pictures = results.split("## Pictures\n", 1)[1].split("\n## ", 1)[0]
    links = sorted(re.findall(r"\]\(([^)]+)\)", pictures))
    expected = [f"det_{t}_trials.png" for t in ("test", "test_noisy")]
    for system in ("svmixer_mini_fbank", "transformer_mini_fbank", "svmixer_mini_fbank_nokd", "svmixer_mini_fbank_lmft"):
        for test_set in ("test", "test_noisy"):
            expected += [f"tsne_{system}_seed0_{test_set}.png", f"hist_{system}_seed0_{test_set}_trials.png"]
    assert links == sorted(expected) and "not drawn" not in pictures
    assert all((exp / name).read_bytes()[:4] == b"\x89PNG" for name in links)
    assert "tsne_svmixer_mini_seed1" not in results
    # --lmft: each seed fine-tuned from its own distilled run, a before → after row.
    for k in (0, 1):
        ckpt = read_checkpoint(exp / f"svmixer_mini_fbank_lmft/seed{k}")
        assert Path(ckpt["init_from"]) == exp / f"svmixer_mini_fbank/seed{k}"
        assert ckpt["train_config"]["aam"]["margin"] == 0.4 and ckpt["train_config"]["kd"]["name"] is None
    lmft = results.split("## Large-margin fine-tuning (before → after)\n", 1)[1].split("\n## ", 1)[0]
    row = [c.strip() for c in [line for line in lmft.splitlines() if line.startswith("| svmixer_mini_fbank_lmft |")][0]
           .strip("|").split("|")]
    assert row[1] == "svmixer_mini_fbank" and re.fullmatch(r"\d+\.\d+ ± \d+\.\d+ → \d+\.\d+ ± \d+\.\d+", row[3])
    # --backends: before → after rows with numbers, fitted on val's trials (never a test list).
    backends = results.split("## Score back-ends (before → after)\n", 1)[1].split("\n## ", 1)[0]
    assert f"fitted on `{tmp_path / 'data/val/trials'}`" in backends
    rows = {tuple(r[:2]): r[2:] for r in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in backends.splitlines() if line.startswith("| "))}
    expected = {(s, b) for s in ("svmixer_mini_fbank", "transformer_mini_fbank", "svmixer_mini_fbank_nokd")
                for b in ("cosine", "AS-norm", "calibration", "QMF")} | {("svmixer_mini_fbank + transformer_mini_fbank", "fusion")}
    assert expected <= set(rows)
    assert all(re.fullmatch(r"\d+\.\d+( ± \d+\.\d+)?", v) for key in expected for v in rows[key])
    for system in ("svmixer_mini_fbank", "transformer_mini_fbank", "svmixer_mini_fbank_nokd", "MFCC-mean cosine (floor)"):
        assert f"| {system} |" in results
    assert "test_noisy: EER (%)" in results and " ± " in results
    assert "svmix-train --config" in results  # the commands used
    assert "| svmixer_mini_fbank | 1 |" in (exp / "RESULTS_per_seed.md").read_text()
    assert "# RESULTS" in out  # printed at the end

    # README.md's verify example runs on this output: a decision at the stated operating point.
    label, llr, accept, point = run_readme_verify_example(tmp_path).split(" ", 3)
    assert label in ("target", "nontarget") and accept in ("True", "False") and np.isfinite(float(llr))
    assert point.startswith("accept llr > ") and "minDCF threshold at p_target=0.05 on the development trials" in point
    fitted = json.loads((exp / "svmixer_mini_fbank/seed0/calibration.json").read_text())["fitted_on"]
    assert fitted["trials"] == "data/mini_world/val_clean/trials"
    for dev in ("val", "val_clean"):  # the recipe's own: one calibration per development set
        recipe_fit = json.loads((exp / f"svmixer_mini_fbank/seed0/calibration_{dev}.json").read_text())["fitted_on"]
        assert recipe_fit["trials"] == str(tmp_path / "data" / dev / "trials")

    # Stage 0 again: skipped by its done-markers, quickly.
    start = time.time()
    out = run_recipe(tmp_path, "--stage", "0", "--stop-stage", "0")
    assert "skip mini_world" in out and time.time() - start < 10

    # --stage 3 retrains from distillation without redoing stages 0-2; the old run is kept aside.
    model_before = (exp / "svmixer_mini_fbank/seed0/model.pt").stat().st_mtime
    out = run_recipe(tmp_path, "--stage", "3", "--students", "svmixer_mini_fbank", "--nokd-students=", "--seeds", "0")
    assert "stage 0" not in out and "stage 2" not in out
    assert "redo train_svmixer_mini_fbank_seed0" in out
    assert (exp / "svmixer_mini_fbank/seed0/model.pt").stat().st_mtime > model_before
    assert any(p.name.startswith("seed0.") for p in (exp / "svmixer_mini_fbank").iterdir())
