"""Every stage of the default recipe, end to end, on a tiny corpus with a few training steps."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--nj", "1",
    "--corpus-opts", "--num-train-speakers 4 --utts-per-speaker 5 --val-utts-per-speaker 2 "
                     "--num-test-speakers 2 --test-utts-per-speaker 4 --num-test-trials 24 --num-val-trials 12",
    "--augment-opts", "--num-noises 3 --num-music 2 --num-rirs 3",
    "--teacher-opts", "--steps 2",
    "--train-opts", "--max-steps 3 --override train.batch_size=4 --override train.val_every=3 "
                    "--override train.val_segments=1 --override train.num_workers=0 --no-progress",
    "--extract-opts", "--num-workers 0 --num-threads 1",
]


def run_recipe(tmp_path, *args):
    cmd = ["bash", str(ROOT / "run.sh"), "--data", str(tmp_path / "data"), "--augment-dir",
           str(tmp_path / "augment"), "--exp", str(tmp_path / "exp"), *TINY, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_default_recipe_every_stage(tmp_path):
    out = run_recipe(tmp_path)
    exp = tmp_path / "exp"
    for s in ("svmixer_mini", "transformer_mini"):
        assert (exp / s / "model.pt").is_file()
        assert (exp / s / "emb_test" / "xvector.scp").is_file()
        metrics = json.loads((exp / s / "metrics_trials.json").read_text())
        assert 0 <= metrics["eer"] <= 100 and set(metrics["min_dcf"]) == {"0.01", "0.05"}
        assert (exp / s / "model.onnx").is_file() and (exp / s / "model.ts").is_file()
    results = (exp / "RESULTS.md").read_text()
    assert "| svmixer_mini | trials |" in results and "| transformer_mini | trials |" in results
    assert "svmix-train --config" in results  # the commands used
    assert "# RESULTS" in out  # printed at the end
    assert (exp / "det_trials.png").is_file()

    # Stage 0 again: skipped by its done-markers, quickly.
    start = time.time()
    out = run_recipe(tmp_path, "--stage", "0", "--stop-stage", "0")
    assert "skip mini_corpus" in out and time.time() - start < 5

    # --stage 3 retrains from distillation without redoing stages 0-2; the old run is kept aside.
    model_before = (exp / "svmixer_mini" / "model.pt").stat().st_mtime
    out = run_recipe(tmp_path, "--stage", "3", "--students", "svmixer_mini")
    assert "stage 0" not in out and "stage 2" not in out
    assert "redo train_svmixer_mini" in out
    assert (exp / "svmixer_mini" / "model.pt").stat().st_mtime > model_before
    assert any(p.name.startswith("svmixer_mini.") for p in exp.iterdir())
