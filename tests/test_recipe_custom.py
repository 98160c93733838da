"""The custom recipe as its header documents it, `recipes/custom/run.sh --corpus DIR --teacher mini`,
end to end on a tiny speaker-folder corpus (run from a scratch directory: outputs land there)."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import synth_voice

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/custom/run.sh"
TINY = [
    "--nj", "1", "--test-speakers", "2",
    "--augment-opts", "--num-noises 3 --num-music 2 --num-rirs 3",
    "--teacher-opts", "--steps 2",
    "--train-opts", "--max-steps 3 --override train.batch_size=4 --override train.val_every=3 "
                    "--override train.val_segments=1 --override train.num_workers=0 --no-progress",
    "--extract-opts", "--num-workers 0 --num-threads 1",
]


def speaker_folders(root, speakers=5, utts=4):
    rng = np.random.default_rng(0)
    for s in range(speakers):
        for u in range(utts):
            path = root / f"speaker{s}" / f"take{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, synth_voice(rng, 90 + 35 * s, rng.uniform(3.2, 4.0)), 16000, subtype="PCM_16")


def run(cwd, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(RECIPE), *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.slow
def test_custom_recipe_with_the_mini_teacher_as_documented(tmp_path):
    speaker_folders(tmp_path / "speakers")
    # An explicit trial count that the 2 test speakers (8 files: 12 target, 16 non-target pairs) cannot
    # give fails before any data is written (the recipe's output goes to stdout and $exp/run.log).
    proc = run(tmp_path, "--corpus", "speakers", "--teacher", "mini", *TINY, "--num-trials", "100")
    assert proc.returncode != 0 and "at most 25 trials at this ratio" in proc.stdout
    assert not (tmp_path / "data").exists()

    proc = run(tmp_path, "--corpus", "speakers", "--teacher", "mini", *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "exp/custom"
    trials = (tmp_path / "data/custom/test/trials").read_text().splitlines()
    assert len(trials) == 25 and sum(line.endswith(" target") for line in trials) == 12
    assert "25 trials, not the default 10000" in proc.stdout + proc.stderr  # said what it produced, and why
    manifest = json.loads((exp / "teacher_cache/manifest.json").read_text())
    assert manifest["layers"] == [4]  # the mini teacher's last layer, not WavLM Base+'s 12
    seed_dir = exp / "svmixer_mini/seed0"  # --seeds 0
    assert (seed_dir / "model.pt").is_file() and (seed_dir / "model.onnx").is_file()
    assert "eer_ci" in json.loads((seed_dir / "metrics_test_trials.json").read_text())
    results = (exp / "RESULTS.md").read_text()
    assert "| svmixer_mini | 1 |" in results and "| MFCC-mean cosine (floor) |" in results
    assert "train.kd.layers=[4]" in results
