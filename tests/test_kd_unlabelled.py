"""KD on unlabelled audio (train.kd_unlabelled, svmix-train --kd-data): config ranges, the objective's
label-free loss, exact resume of the second stream, 2-process DDP, and the set-up errors."""
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import make_datadir
from svmix.checkpoint import read_checkpoint
from svmix.data.datadir import DataDir, write_datadir
from svmix.errors import SvmixError
from svmix.models import build_model
from svmix.teachers import save_teacher
from svmix.train.config import resolve_config
from svmix.train.objective import DistillationObjective
from svmix.train.trainer import accumulated_backward, train
from test_train_e2e import ENV, TINY_MODEL, TINY_TRAIN, records, tiny_teacher, without_timing

KD_TRAIN = {**TINY_TRAIN, "kd_unlabelled": {"lambda": 0.5, "batch_size": 2}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from svmix.cache import CacheSettings, build_cache

    root = tmp_path_factory.mktemp("kd_unlabelled")
    data = make_datadir(root / "train", num_speakers=4, utts_per_speaker=3, seconds=(0.7, 2.0))
    source = DataDir(make_datadir(root / "pool_src", num_speakers=3, utts_per_speaker=3, seconds=(0.8, 2.2),
                                  seed=2, trials=False))
    pool = root / "pool"  # other ids than the training set's, and no utt2spk: the speakers are not read
    write_datadir(pool, {f"pool-{u}": p for u, p in source.wav_scp.items()})
    teacher = root / "teacher.pt"
    save_teacher(tiny_teacher(), teacher)
    settings = CacheSettings(layers=[1, 2], dtype="float32")
    cache = build_cache(teacher, data, root / "cache", settings, progress=False)
    copy = root / "elsewhere" / "teacher.pt"  # the same teacher under another path is the same teacher
    copy.parent.mkdir()
    copy.write_bytes(teacher.read_bytes())
    pool_cache = build_cache(copy, pool, root / "pool_cache", settings, progress=False)
    other = root / "other_teacher.pt"
    torch.manual_seed(5)
    twin = tiny_teacher()
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_teacher(twin, other)
    other_cache = build_cache(other, pool, root / "other_cache", settings, progress=False)
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {**KD_TRAIN, "num_workers": 0}}))
    return {"root": root, "data": data, "pool": pool, "cache": cache, "pool_cache": pool_cache,
            "other_cache": other_cache, "teacher": teacher, "config": config}


def config_with(**train):
    return resolve_config({"model": TINY_MODEL, "train": {**KD_TRAIN, "num_workers": 0, **train}})


def test_resolution_fills_every_value_and_defaults_the_batch_to_the_labelled_one():
    config = config_with(kd_unlabelled={})
    assert config["train"]["kd_unlabelled"] == {"lambda": 1.0, "batch_size": TINY_TRAIN["batch_size"]}
    assert resolve_config(config) == config  # idempotent: EXP/config.yaml resolves to itself
    assert resolve_config({"model": TINY_MODEL, "train": TINY_TRAIN})["train"]["kd_unlabelled"] is None


@pytest.mark.parametrize("section", [
    {"lambda": 0}, {"lambda": -1.0}, {"lambda": float("nan")}, {"lambda": "big"}, {"lambda": True},
    {"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": -3}, {"batch_size": None}, {"batchsize": 4}, 7, "on"])
def test_bad_sections_are_one_line_errors_naming_the_key(section):
    with pytest.raises(SvmixError) as e:
        config_with(kd_unlabelled=section)
    message = str(e.value)
    assert "\n" not in message and "kd_unlabelled" in message


def test_a_batch_without_labels_is_weighted_kd_only_and_accumulates_exactly(one_thread):
    torch.manual_seed(0)
    student = build_model(TINY_MODEL)
    kd = {"name": "last_mse", "layers": [2], "lambda": 1.0}
    objective = DistillationObjective(student, [3, 3, 3], {"name": "aam_topk", "top_k": 2}, kd, teacher_hidden=12,
                                      unlabelled_lambda=0.5).eval()
    g = torch.Generator().manual_seed(1)
    wav = 0.1 * torch.randn(6, student.segment_samples, generator=g)
    targets = torch.randn(6, 1, student.seq_len, 12, generator=g)
    mask = torch.ones(6, student.seq_len, dtype=torch.bool)
    mask[0, student.seq_len // 3:] = False  # unequal valid frames per micro-batch
    out = objective(wav, None, targets, mask)
    assert float(out["aam"]) == 0.0 and float(out["loss"].detach()) == pytest.approx(0.5 * float(out["kd"]))
    whole = accumulated_backward(objective, objective, wav, None, targets, mask, accum=1)
    grads = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
    assert not any(n.startswith("aam.") for n in grads) and any(n.startswith("kd.") for n in grads)
    assert not any(n.startswith("student.backend.") for n in grads)  # the KD loss reads the layer states only
    objective.zero_grad(set_to_none=True)
    parts = accumulated_backward(objective, objective, wav, None, targets, mask, accum=3)
    for n, p in objective.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)
    torch.testing.assert_close(parts["loss"], whole["loss"], rtol=1e-5, atol=1e-6)
    no_kd = DistillationObjective(student, [3, 3, 3], {"name": "aam_topk"}, {"name": None, "layers": None})
    with pytest.raises(ValueError, match="without labels"):
        no_kd(wav, None, targets, mask)


def cmd(w, exp, *extra):
    return [sys.executable, "-m", "svmix.bin.train", "--config", str(w["config"]), "--data", str(w["data"]),
            "--teacher-cache", str(w["cache"]), "--kd-data", str(w["pool"]), "--kd-teacher-cache",
            str(w["pool_cache"]), "--exp", str(exp), "--no-progress", *extra]


def test_the_unlabelled_stream_resumes_exactly_and_changes_training(world):
    """6 steps straight = 4 steps then a resumed run to 6 (the stream of 9 utterances in batches of 2
    wraps into its second epoch at step 5, across the resume), and the students differ from KD without it."""
    root = world["root"]
    run = lambda *a: subprocess.run(cmd(world, *a), env=ENV, capture_output=True, text=True, timeout=300)
    straight, split = root / "straight", root / "split"
    for exp, steps in ((straight, 6), (split, 4), (split, 6)):
        proc = run(exp, "--max-steps", str(steps))
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = records(straight, "train"), records(split, "train")
    assert without_timing(a) == without_timing(b) and [r["step"] for r in a] == list(range(1, 7))
    assert all(0 < r["kd_unlabelled"] < 100 for r in a)
    state = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    assert state["unlabelled"] == {"epoch": 1, "batch": 2, "num_utts": 9}  # 4 batches of 2 per epoch
    saved = yaml.safe_load((straight / "config.yaml").read_text())
    assert saved["train"]["kd_unlabelled"] == {"lambda": 0.5, "batch_size": 2}
    assert "KD on unlabelled audio: 9 utterances" in (straight / "train.log").read_text()
    sa, sb = read_checkpoint(straight / "model.pt")["state_dict"], read_checkpoint(split / "model.pt")["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    plain = root / "plain"
    proc = subprocess.run([sys.executable, "-m", "svmix.bin.train", "--config", str(world["config"]), "--data",
                           str(world["data"]), "--teacher-cache", str(world["cache"]), "--exp", str(plain),
                           "--no-progress", "--max-steps", "6", "--override", "train.kd_unlabelled=null"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sp = read_checkpoint(plain / "model.pt")["state_dict"]
    assert any(not torch.equal(sa[k], sp[k]) for k in sa)
    assert all("kd_unlabelled" not in r for r in records(plain, "train"))
    # The same exp dir cannot switch the stream on or off.
    proc = run(plain, "--max-steps", "8")
    assert proc.returncode != 0 and "trained without train.kd_unlabelled" in proc.stderr


def test_two_process_gloo_run_with_the_unlabelled_stream(world):
    exp = world["root"] / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                           "--nproc_per_node", "2", *cmd(world, exp, "--max-steps", "3")[1:]],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(exp / "checkpoints" / "last.pt", weights_only=False)
    assert state["world_size"] == 2 and state["unlabelled"]["batch"] == 3
    assert [r["step"] for r in records(exp, "train")] == [1, 2, 3]


@pytest.mark.parametrize("case", ["no_data", "no_section", "no_kd", "no_pool_cache", "cache_lacks_utts",
                                  "other_teacher", "batch_too_large", "shards"])
def test_set_up_errors_before_any_training(world, tmp_path, case):
    w = world
    kwargs = {"teacher_cache": w["cache"], "kd_data": w["pool"], "kd_teacher_cache": w["pool_cache"]}
    config = config_with()
    expected = {
        "no_data": "needs --kd-data", "no_section": "need train.kd_unlabelled", "no_kd": "needs distillation",
        "no_pool_cache": "needs --kd-teacher-cache", "cache_lacks_utts": "lacks 9 training utterance",
        "other_teacher": "built by another teacher", "batch_too_large": "larger than the 9 training utterances",
        "shards": "not audio shards"}[case]
    if case == "no_data":
        kwargs.pop("kd_data")
    elif case == "no_section":
        config = config_with(kd_unlabelled=None)
    elif case == "no_kd":
        config = config_with(kd={"name": None})
        kwargs.pop("teacher_cache")
    elif case == "no_pool_cache":
        kwargs.pop("kd_teacher_cache")
    elif case == "cache_lacks_utts":
        kwargs["kd_teacher_cache"] = w["cache"]
    elif case == "other_teacher":
        kwargs["kd_teacher_cache"] = w["other_cache"]
    elif case == "batch_too_large":
        config = config_with(kd_unlabelled={"batch_size": 10})
    elif case == "shards":
        shards = tmp_path / "shards"
        shards.mkdir()
        (shards / "shard.list").write_text("shard-000000.tar\n")
        kwargs["kd_data"] = shards
    exp = tmp_path / "exp"
    with pytest.raises(SvmixError) as e:
        train(config, w["data"], exp, progress=False, **kwargs)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert not (exp / "checkpoints").exists()  # nothing trained


def test_cli_help_and_a_bad_kd_data_path(world, tmp_path):
    out = subprocess.run([sys.executable, "-m", "svmix.bin.train", "--help"], env=ENV, capture_output=True,
                         text=True, timeout=120).stdout
    assert "--kd-data" in out and "--kd-teacher-cache" in out and "train.kd_unlabelled" in out
    args = cmd(world, tmp_path / "exp")
    args[args.index("--kd-data") + 1] = str(tmp_path / "missing")
    proc = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "missing" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
