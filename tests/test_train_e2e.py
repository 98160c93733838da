"""svmix-train end to end on tiny data: teacher cache, validation, kill + exact resume, 2-process DDP."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import make_datadir
from svmix.checkpoint import load_model_checkpoint, read_checkpoint
from svmix.errors import SvmixError
from svmix.models import build_model
from svmix.teachers import save_teacher
from svmix.teachers.model import SSLTeacher, build_torchaudio_model
from svmix.train.objective import DistillationObjective

STEPS = 10
STATE_KEYS = {"format", "step", "epoch", "batch_in_epoch", "stopped", "last_validated", "config", "speakers",
              "world_size", "objective", "optimizer", "optimizer_config", "schedule", "early_stopping", "scaler",
              "best", "rng", "unlabelled"}
TINY_MODEL = {"segment_seconds": 1.0, "num_eval_segments": 2, "hidden": 16, "embed_dim": 8,
              "frontend": {"channels": 8}, "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8},
              "backend": {"name": "linear"}}
TINY_TRAIN = {"batch_size": 4, "max_steps": STEPS, "log_every": 1, "val_every": 4, "checkpoint_every": 2,
              "val_segments": 2, "keep_best": 2, "average": 2, "num_workers": 1, "seed": 7,
              "kd": {"name": "distilhubert", "layers": [1, 2]}, "augment": {"p": 0.8}}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tiny_teacher():
    conv = [(8, 10, 5)] + [(8, 3, 2)] * 4 + [(8, 2, 2)] * 2
    params = dict(extractor_mode="group_norm", extractor_conv_layer_config=conv,
                  extractor_conv_bias=False, encoder_embed_dim=12, encoder_projection_dropout=0.0,
                  encoder_pos_conv_kernel=8, encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=2,
                  encoder_attention_dropout=0.0, encoder_ff_interm_features=24, encoder_ff_interm_dropout=0.0,
                  encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0)
    torch.manual_seed(0)
    return SSLTeacher(build_torchaudio_model("wav2vec2", params), "wav2vec2", params)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from svmix.cache import CacheSettings, build_cache

    root = tmp_path_factory.mktemp("train")
    # Some utterances are shorter than the 1 s crop: repeat-padded, KD-masked past their end.
    data = make_datadir(root / "train", num_speakers=4, utts_per_speaker=4, seconds=(0.7, 2.5))
    val = make_datadir(root / "val", num_speakers=3, utts_per_speaker=2, seconds=(1.0, 2.0), seed=1)
    teacher = root / "teacher.pt"
    save_teacher(tiny_teacher(), teacher)
    cache = build_cache(teacher, data, root / "cache", CacheSettings(layers=[1, 2], dtype="float32"), progress=False)
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": TINY_TRAIN}))
    return {"root": root, "data": data, "val": val, "teacher": teacher, "cache": cache, "config": config}


def train_cmd(s, exp, *extra):
    return ["-m", "svmix.bin.train", "--config", str(s["config"]), "--data", str(s["data"]),
            "--teacher-cache", str(s["cache"]), "--val-data", str(s["val"]), "--exp", str(exp), "--no-progress", *extra]


def run(args, **kw):
    proc = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def records(exp, kind):
    lines = (exp / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def without_timing(rs):
    return [{k: v for k, v in r.items() if k not in ("steps_per_s", "seconds")} for r in rs]


def test_kill_and_resume_matches_uninterrupted_run(setup):
    straight = setup["root"] / "straight"
    run(train_cmd(setup, straight))
    assert [r["step"] for r in records(straight, "train")] == list(range(1, STEPS + 1))
    assert [r["step"] for r in records(straight, "val")] == [4, 8, 10]

    killed = setup["root"] / "killed"
    proc = subprocess.Popen([sys.executable, *train_cmd(setup, killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and any(r["step"] >= 5 for r in map(json.loads, metrics.read_text().splitlines())):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.pt").exists()
    assert (killed / "checkpoints" / "last.pt").is_file()

    run(train_cmd(setup, killed))  # resumes automatically
    assert without_timing(records(killed, "train")) == without_timing(records(straight, "train"))
    assert without_timing(records(killed, "val")) == without_timing(records(straight, "val"))
    a, b = read_checkpoint(straight / "model.pt"), read_checkpoint(killed / "model.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    la = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    lb = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)
    for key in la["objective"]:
        assert torch.equal(la["objective"][key], lb["objective"][key]), key

    # The final model is the average of the 2 best validations and is self-describing.
    best = json.loads((straight / "checkpoints" / "best.json").read_text())
    assert len(best) == 2 and best[0]["eer"] <= best[1]["eer"]
    assert sorted(p.name for p in (straight / "checkpoints" / "best").iterdir()) == \
        sorted(f"step{e['step']:08d}.pt" for e in best)
    model, ckpt = load_model_checkpoint(straight)
    assert ckpt["num_speakers"] == 4 and ckpt["val_eer"] == best[0]["eer"]
    assert [e["step"] for e in ckpt["averaged"]] == [e["step"] for e in best]
    assert model(torch.randn(2, 16000)).shape == (2, 8)
    saved = yaml.safe_load((straight / "config.yaml").read_text())
    assert saved["train"]["kd"]["layers"] == [1, 2] and saved["model"]["hidden"] == 16

    # A finished experiment reruns as a no-op that rewrites the same model.
    run(train_cmd(setup, straight))
    assert len(records(straight, "train")) == STEPS


def test_two_process_gloo_run_writes_the_single_process_format(setup):
    ddp = setup["root"] / "ddp"

    def torchrun(max_steps):
        run(["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
             *train_cmd(setup, ddp, "--max-steps", str(max_steps), "--override", "train.num_workers=0",
                        "--override", "train.val_every=2")])

    torchrun(3)
    torchrun(5)  # resumes the 2-process run
    assert [r["step"] for r in records(ddp, "train")] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in records(ddp, "val")] == [2, 3, 4, 5]
    state = torch.load(ddp / "checkpoints" / "last.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == 5
    assert set(state) == STATE_KEYS
    # Same parameter names as a single-process objective: no DDP "module." prefix leaks in.
    single = DistillationObjective(build_model(TINY_MODEL), [4] * 4, {"name": "aam_topk"}, TINY_TRAIN["kd"],
                                   teacher_hidden=12)
    assert state["objective"].keys() == single.state_dict().keys()
    model, ckpt = load_model_checkpoint(ddp)
    assert ckpt["format"] == "svmix-model" and ckpt["num_speakers"] == 4


def test_online_teacher_mode_and_training_without_validation(setup, tmp_path):
    from svmix.train.config import resolve_config
    from svmix.train.trainer import train

    config = resolve_config({"model": TINY_MODEL, "train": {**TINY_TRAIN, "max_steps": 2, "num_workers": 0,
                                                             "kd": {"name": "last_mse", "layers": None}}})
    teacher = tiny_teacher()
    out = train(config, setup["data"], tmp_path / "online", teacher=teacher, progress=False)
    model, ckpt = load_model_checkpoint(out)
    assert ckpt["step"] == 2 and ckpt["val_eer"] is None and ckpt["kd_layers"] == [teacher.num_layers]
    state = torch.load(tmp_path / "online" / "checkpoints" / "last.pt", weights_only=False)
    # Student hidden 16 vs teacher 12: LastMSE learns a projection, which trains with the rest.
    assert state["objective"]["kd.projection.weight"].shape == (12, 16)
    kd = [r["kd"] for r in records(tmp_path / "online", "train")]
    assert len(kd) == 2 and all(0 < x < 100 for x in kd)
    with pytest.raises(SvmixError, match="needs --teacher-cache or --teacher"):
        train(config, setup["data"], tmp_path / "none", progress=False)


def test_frontend_initialised_from_the_cached_teacher(setup, tmp_path):
    from svmix.train.config import resolve_config
    from svmix.train.trainer import train

    config = resolve_config({"model": TINY_MODEL, "train": {
        **TINY_TRAIN, "max_steps": 1, "num_workers": 0, "init_frontend_from_teacher": True,
        "optimizer": {"name": "adamw", "lr": 0.0, "weight_decay": 0.0}}})
    out = train(config, setup["data"], tmp_path / "init", teacher_cache=setup["cache"], progress=False)
    model, _ = load_model_checkpoint(out)
    teacher = tiny_teacher()
    for i, layer in enumerate(model.frontend.feature_extractor.conv_layers):
        torch.testing.assert_close(layer.conv.weight, teacher.model.feature_extractor.conv_layers[i].conv.weight)


def test_train_threads_pins_the_cpu_threads_whatever_the_environment_gives(setup, tmp_path):
    """train.threads: 1 under OMP_NUM_THREADS=2 trains the same weights as a run the environment limits to
    one thread, and train.log says which count it used."""
    pinned, limited = tmp_path / "pinned", tmp_path / "limited"
    short = ("--max-steps", "3", "--override", "train.val_every=3")
    subprocess.run([sys.executable, *train_cmd(setup, pinned, *short, "--override", "train.threads=1")],
                   env={**ENV, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}, check=True, capture_output=True,
                   timeout=300)
    run(train_cmd(setup, limited, *short))
    assert "CPU threads: 1 (train.threads: 1)" in (pinned / "train.log").read_text()
    assert "CPU threads: 1 (train.threads: None)" in (limited / "train.log").read_text()
    assert yaml.safe_load((pinned / "config.yaml").read_text())["train"]["threads"] == 1
    a, b = read_checkpoint(pinned / "model.pt")["state_dict"], read_checkpoint(limited / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
