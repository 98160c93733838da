"""Fault injection across the stage tools: every bad input gives a non-zero exit (or a counted skip)
with exactly one ``error:`` line naming the offending item, no traceback, and previously written
outputs left byte-identical; killed runs leave no partial output; full disks stop work up front.

Kill-and-resume of the long stages is tested per tool and not repeated here:
``tests/test_cache.py::test_resume_after_sigkill_gives_identical_cache``,
``tests/test_extract.py::test_killed_run_resumes_to_the_same_result``,
``tests/test_train_e2e.py::test_kill_and_resume_matches_uninterrupted_run``; truncated cache shards:
``tests/test_cache.py::test_verify_names_truncated_shard``.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from conftest import make_datadir, snapshot
from svmix.bin.cache_teacher import main as cache_cli
from svmix.bin.extract import main as extract_cli
from svmix.bin.metrics import main as metrics_cli
from svmix.bin.score import main as score_cli
from svmix.bin.validate_data import main as validate_cli
from svmix.cache import CacheSettings, build_cache
from svmix.checkpoint import load_model_checkpoint, read_checkpoint, save_model
from svmix.data.datadir import read_kv, write_datadir
from svmix.errors import SvmixError
from svmix.inference.extract import extract_embeddings, list_inputs
from svmix.models import build_model
from svmix.scoring.pipeline import score_file
from test_cache import tiny_wavlm_dir

TINY = {"hidden": 32, "embed_dim": 16, "frontend": {"channels": 32},
        "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8}, "backend": {"name": "linear"}}
EXTRACT_OPTS = ["--num-workers", "0", "--num-threads", "1"]
BAD = "zz-bad"  # sorts last, so it falls into the last cache shard


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model, teacher, data dir, and finished outputs of every stage to check against."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("faults")
    torch.manual_seed(0)
    save_model(root / "exp" / "model.pt", build_model(TINY))
    data = make_datadir(root / "corpus", num_speakers=2, utts_per_speaker=2, seconds=(1.0, 1.5))
    teacher = tiny_wavlm_dir(root / "teacher")
    extract_embeddings(root / "exp", list_inputs(data=data), root / "emb", num_workers=0, progress=False)
    build_cache(teacher, data, root / "cache", CacheSettings(layers=[1, 2], shard_mb=0.001), progress=False)
    score_file(data / "trials", root / "emb" / "xvector.scp", root / "scores")
    yield {"root": root, "exp": root / "exp", "data": data, "teacher": teacher, "emb": root / "emb",
           "cache": root / "cache", "scores": root / "scores"}
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- helpers

def invoke(cli, *args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *names: str) -> str:
    """Non-zero exit through ``user_errors``: one ``error:`` line on stderr naming every one of ``names``."""
    assert isinstance(result.exception, SystemExit), f"uncaught {type(result.exception).__name__}: {result.exception}"
    assert result.exit_code != 0, result.output
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert all(name in errors[0] for name in names), errors[0]
    assert "Traceback" not in result.output
    return errors[0]


def embeddings_of(out: Path) -> Dict[str, bytes]:
    """An extraction's embeddings (a new run into the directory drops the old done-marker and config)."""
    return {name: (out / name).read_bytes() for name in ("xvector.ark", "xvector.scp")
            if (out / name).is_file()}


def write_audio(kind: str, path: Path) -> None:
    """An audio file with one fault (or an unusual but valid format) at ``path``."""
    rng = np.random.default_rng(1)
    voice = (0.1 * rng.standard_normal(24000)).astype(np.float32)
    if kind == "missing":
        return
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)))
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "silent":
        sf.write(path, np.zeros(24000, np.float32), 16000)
    elif kind == "too_short":
        sf.write(path, voice[:200], 16000)
    elif kind in ("nan", "inf"):
        voice[1000] = np.nan if kind == "nan" else np.inf
        sf.write(path, voice, 16000, subtype="FLOAT")
    elif kind == "8khz":
        sf.write(path, voice[::2], 8000)
    elif kind == "stereo":
        sf.write(path, np.stack([voice, voice], axis=1), 16000)
    else:
        raise ValueError(kind)


HEADER_FAULTS = ["missing", "corrupt", "empty", "too_short"]  # found by the header scan, before any work
DECODE_FAULTS = ["silent", "nan", "inf"]  # found only when the audio is decoded
AUDIO_FAULTS = HEADER_FAULTS + DECODE_FAULTS


def datadir_with(world, tmp_path: Path, kind: str) -> Path:
    """A copy of the good data dir plus utterance ``BAD`` whose audio has fault ``kind``."""
    wav_scp, utt2spk = dict(read_kv(world["data"] / "wav.scp")), dict(read_kv(world["data"] / "utt2spk"))
    path = tmp_path / f"{kind}.wav"
    write_audio(kind, path)
    wav_scp[BAD], utt2spk[BAD] = str(path), "spk00"
    write_datadir(tmp_path / "data", wav_scp, utt2spk)
    return tmp_path / "data"


# ----------------------------------------------------------------------------- bad audio x tools

@pytest.mark.parametrize("kind", AUDIO_FAULTS)
def test_validate_data_names_bad_audio(world, tmp_path, kind):
    data = datadir_with(world, tmp_path, kind)
    result = invoke(validate_cli, data, "--deep")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    problems = [line for line in result.stderr.splitlines() if "wav.scp:" in line]
    assert len(problems) == 1 and BAD in problems[0] and f"{data}/wav.scp:5:" in problems[0], result.stderr
    assert "1 problem(s) found" in result.stderr and "Traceback" not in result.output
    result = invoke(validate_cli, data, "--deep", "--fix")
    assert result.exit_code == 0 and "dropped 1 from wav.scp, 1 from utt2spk" in result.stdout, result.output
    assert BAD not in read_kv(data / "wav.scp") and invoke(validate_cli, data, "--deep").exit_code == 0


@pytest.mark.parametrize("kind", AUDIO_FAULTS)
def test_extract_bad_audio_is_one_line_error_or_counted_skip(world, tmp_path, kind):
    data = datadir_with(world, tmp_path, kind)
    out = tmp_path / "emb"
    shutil.copytree(world["emb"], out)  # an earlier extraction into the same directory
    before = embeddings_of(out)
    result = invoke(extract_cli, "--model", world["exp"], "--data", data, "--out", out, *EXTRACT_OPTS)
    assert_one_line_error(result, BAD)
    assert embeddings_of(out) == before

    result = invoke(extract_cli, "--model", world["exp"], "--data", data, "--out", out, "--skip-bad", *EXTRACT_OPTS)
    assert result.exit_code == 0, result.output
    assert "4 utterances" in result.stdout and "1 skipped" in result.stdout
    assert list(json.loads((out / "extract_stats.json").read_text())["skipped_utts"]) == [BAD]
    assert list(kaldiio.load_scp(str(out / "xvector.scp"))) == list(read_kv(world["data"] / "wav.scp"))


@pytest.mark.parametrize("kind", HEADER_FAULTS)
def test_cache_teacher_rejects_bad_audio_before_work(world, tmp_path, kind):
    data = datadir_with(world, tmp_path, kind)
    out = tmp_path / "cache"
    shutil.copytree(world["cache"], out)  # a finished cache in the same directory
    before = snapshot(out)
    result = invoke(cache_cli, "--teacher", world["teacher"], "--data", data, "--layers", "1,2", "--out", out,
                    "--shard-mb", "0.001")
    assert "--skip-bad" in assert_one_line_error(result, BAD)
    assert snapshot(out) == before


@pytest.mark.parametrize("kind", DECODE_FAULTS)
def test_cache_teacher_keeps_finished_shards_and_skips_on_request(world, tmp_path, kind):
    data = datadir_with(world, tmp_path, kind)
    out = tmp_path / "cache"
    args = ["--teacher", world["teacher"], "--data", data, "--layers", "1,2", "--out", out, "--shard-mb", "0.001"]
    assert_one_line_error(invoke(cache_cli, *args), BAD)
    assert not (out / "manifest.json").exists()
    done = {name: data for name, data in snapshot(out / "shards").items() if not name.startswith(".")}
    assert len(done) == 8  # one .bin + .json per good utterance; the bad one is last

    result = invoke(cache_cli, *args, "--skip-bad")
    assert result.exit_code == 0 and f"{out}: 4 utterances cached; 1 skipped" in result.stdout, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["skipped"]) == [BAD] and len(manifest["utts"]) == 4
    assert {name: snapshot(out / "shards")[name] for name in done} == done  # not redone


def test_cache_teacher_into_a_cache_of_other_layers_or_teacher(world, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(world["cache"], out)
    before = snapshot(out)
    other = tiny_wavlm_dir(tmp_path / "other", seed=1)
    for teacher, layers, differs in ((world["teacher"], "2", "layers"), (other, "1,2", "teacher.fingerprint")):
        result = invoke(cache_cli, "--teacher", teacher, "--data", world["data"], "--layers", layers, "--out", out,
                        "--shard-mb", "0.001")
        assert differs in assert_one_line_error(result, str(out), "other settings")
        assert snapshot(out) == before


@pytest.mark.parametrize("kind", ["8khz", "stereo"])
def test_other_rates_are_resampled_and_channels_downmixed(world, tmp_path, kind, caplog):
    import logging

    from svmix.data import audio

    data = datadir_with(world, tmp_path, kind)
    assert invoke(validate_cli, data, "--deep").exit_code == 0
    logger = logging.getLogger("svmix")
    logger.addHandler(caplog.handler)
    audio._resample_noted.clear()  # the note is given once per process and rate
    try:
        result = invoke(extract_cli, "--model", world["exp"], "--data", data, "--out", tmp_path / "emb", *EXTRACT_OPTS)
    finally:
        logger.removeHandler(caplog.handler)
    assert result.exit_code == 0 and "5 utterances" in result.stdout and "0 skipped" in result.stdout, result.output
    assert ("resampling 8000 Hz audio to 16000 Hz" in caplog.text) == (kind == "8khz")
    if kind == "stereo":  # identical channels: the down-mix is the mono signal
        mono = tmp_path / "mono.wav"
        sf.write(mono, sf.read(tmp_path / "stereo.wav", dtype="float32")[0][:, 0], 16000)
        extract_embeddings(world["exp"], {BAD: str(mono)}, tmp_path / "mono", num_workers=0, progress=False)
        stereo_emb = dict(kaldiio.load_scp(str(tmp_path / "emb" / "xvector.scp")))[BAD]
        mono_emb = dict(kaldiio.load_scp(str(tmp_path / "mono" / "xvector.scp")))[BAD]
        np.testing.assert_allclose(stereo_emb, mono_emb, atol=1e-6)


# ----------------------------------------------------------------------------- data dir tables

def test_duplicate_keys_are_named_with_their_line(world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    lines = (data / "wav.scp").read_text().splitlines()
    (data / "wav.scp").write_text("\n".join(lines + [lines[0]]) + "\n")
    result = invoke(validate_cli, data, "--no-audio")
    assert result.exit_code == 1 and "wav.scp:5: duplicate key 'spk00-utt00' (first on line 1)" in result.stderr
    out = tmp_path / "emb"
    shutil.copytree(world["emb"], out)
    before = embeddings_of(out)
    result = invoke(extract_cli, "--model", world["exp"], "--data", data, "--out", out, *EXTRACT_OPTS)
    assert_one_line_error(result, "wav.scp:5", "spk00-utt00")
    assert embeddings_of(out) == before


def test_trials_naming_unknown_utterances(world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    with open(data / "trials", "a") as f:
        f.write("spk00-utt00 ghost-utt target\n")
    result = invoke(validate_cli, data, "--no-audio")
    assert result.exit_code == 1 and "trials:7: test id 'ghost-utt' is not in wav.scp" in result.stderr
    scores = tmp_path / "scores"
    scores.write_bytes(world["scores"].read_bytes())
    args = ["--trials", data / "trials", "--embeddings", world["emb"] / "xvector.scp", "--output", scores]
    assert "--skip-missing" in assert_one_line_error(invoke(score_cli, *args), "ghost-utt")
    assert scores.read_bytes() == world["scores"].read_bytes()
    result = invoke(score_cli, *args, "--skip-missing")
    assert result.exit_code == 0, result.output
    assert scores.read_bytes() == world["scores"].read_bytes()  # the same 6 trials; the 7th dropped


# ----------------------------------------------------------------------------- scoring and metrics

def write_ark(path: Path, entries: Dict[str, np.ndarray]) -> Path:
    kaldiio.save_ark(str(path), entries, scp=str(path.with_suffix(".scp")))
    return path.with_suffix(".scp")


def bad_scp(world, tmp_path: Path, fault: str) -> Path:
    """An embeddings scp with one fault; the offending utterance is 'spk01-utt00' (or the file)."""
    scp_text = (world["emb"] / "xvector.scp").read_text()
    scp = tmp_path / "bad.scp"
    if fault == "wrong_dim":
        odd = write_ark(tmp_path / "odd.ark", {"spk01-utt00": np.ones(8, np.float32)})
        scp.write_text("".join(line + "\n" for line in scp_text.splitlines() if not line.startswith("spk01-utt00"))
                       + odd.read_text())
    elif fault == "duplicate":
        scp.write_text(scp_text + scp_text.splitlines()[2] + "\n")
    elif fault == "truncated_ark":
        ark = tmp_path / "xvector.ark"
        data = (world["emb"] / "xvector.ark").read_bytes()
        offset = int(scp_text.splitlines()[2].rsplit(":", 1)[1])
        ark.write_bytes(data[:offset + 40])  # cut inside the third utterance's matrix
        scp.write_text(scp_text.replace(str((world["emb"] / "xvector.ark").resolve()), str(ark)))
    return scp


@pytest.mark.parametrize("fault, names", [
    ("wrong_dim", ["spk01-utt00", "dimension 8"]),
    ("duplicate", ["spk01-utt00", "twice"]),
    ("truncated_ark", ["spk01-utt00", "xvector.ark"]),
    ("bad_trial_line", ["trials:2"]),
    ("missing_scp", ["nowhere.scp", "not found"]),
    ("cohort_dim", ["cohort.scp", "dimension"]),
])
def test_score_bad_inputs_leave_the_previous_score_file(world, tmp_path, fault, names):
    trials, scp, extra = world["data"] / "trials", world["emb"] / "xvector.scp", []
    if fault in ("wrong_dim", "duplicate", "truncated_ark"):
        scp = bad_scp(world, tmp_path, fault)
    elif fault == "bad_trial_line":
        lines = trials.read_text().splitlines()
        trials = tmp_path / "trials"
        trials.write_text("\n".join([lines[0], "spk00-utt00 spk00-utt01 maybe"] + lines[1:]) + "\n")
    elif fault == "missing_scp":
        scp = tmp_path / "nowhere.scp"
    elif fault == "cohort_dim":
        extra = ["--cohort", write_ark(tmp_path / "cohort.ark", {f"c{i}": np.ones(8, np.float32) for i in range(3)})]
    scores = tmp_path / "scores"
    scores.write_bytes(world["scores"].read_bytes())
    result = invoke(score_cli, "--trials", trials, "--embeddings", scp, "--output", scores, *extra)
    assert_one_line_error(result, *names)
    assert scores.read_bytes() == world["scores"].read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers


def test_truncated_ark_from_the_installed_svmix_score(world, tmp_path):
    scp = bad_scp(world, tmp_path, "truncated_ark")
    proc = subprocess.run([str(Path(sys.executable).parent / "svmix-score"), "--trials", str(world["data"] / "trials"),
                           "--embeddings", str(scp), "--output", str(tmp_path / "scores")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert "'spk01-utt00'" in errors[0] and f"{tmp_path}/xvector.ark:" in errors[0]
    assert not (tmp_path / "scores").exists()


@pytest.mark.parametrize("fault, names", [
    ("missing_trial", ["no score for 1 of 6 trials", "spk01-utt00 spk01-utt01"]),
    ("not_a_number", ["scores:2", "'abc'"]),
    ("bad_line", ["scores:3", "expected '<enroll> <test> <score>'"]),
    ("unlabelled", ["target/nontarget labels"]),
    ("missing_file", ["nothing", "not found"]),
])
def test_metrics_bad_inputs_leave_the_previous_json(world, tmp_path, fault, names):
    lines = world["scores"].read_text().splitlines()
    scores, trials = tmp_path / "scores", world["data"] / "trials"
    if fault == "missing_trial":
        scores.write_text("\n".join(lines[:-1]) + "\n")
    elif fault == "not_a_number":
        scores.write_text("\n".join([lines[0], lines[1].rsplit(" ", 1)[0] + " abc"] + lines[2:]) + "\n")
    elif fault == "bad_line":
        scores.write_text("\n".join(lines[:2] + [lines[2] + " extra"] + lines[3:]) + "\n")
    elif fault == "unlabelled":
        scores.write_text("\n".join(lines) + "\n")
        trials = tmp_path / "trials"
        trials.write_text("".join(" ".join(line.split()[:2]) + "\n" for line in lines))
    elif fault == "missing_file":
        scores = tmp_path / "nothing"
    out = tmp_path / "metrics.json"
    out.write_text('{"previous": true}\n')
    assert_one_line_error(invoke(metrics_cli, "--scores", scores, "--trials", trials, "--json", out), *names)
    assert out.read_text() == '{"previous": true}\n'


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_not_matching_its_config_or_the_request(world, tmp_path):
    ckpt = read_checkpoint(world["exp"])
    ckpt["config"] = {**ckpt["config"], "embed_dim": 24}
    torch.save(ckpt, tmp_path / "mismatch.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "empty_exp").mkdir()
    for model, names in ((tmp_path / "mismatch.pt", ["mismatch.pt", "weights do not match"]),
                         (tmp_path / "garbage.pt", ["garbage.pt", "cannot read checkpoint"]),
                         (tmp_path / "empty_exp", ["empty_exp", "no model.pt"])):
        result = invoke(extract_cli, "--model", model, "--data", world["data"], "--out", tmp_path / "emb",
                        *EXTRACT_OPTS)
        assert_one_line_error(result, *names)
    with pytest.raises(SvmixError, match=r"model.embed_dim=16, but 32 was requested"):
        load_model_checkpoint(world["exp"], expect={"embed_dim": 32})


def test_onnx_exported_from_another_checkpoint(world, tmp_path):
    from svmix.export.exporter import export_model

    torch.manual_seed(1)
    save_model(tmp_path / "other" / "model.pt", build_model({**TINY, "embed_dim": 8}))
    export_model(tmp_path / "other", "onnx", tmp_path / "other.onnx", check=False)
    out = tmp_path / "emb"
    shutil.copytree(world["emb"], out)
    before = embeddings_of(out)
    result = invoke(extract_cli, "--model", world["exp"], "--data", world["data"], "--out", out, "--runtime", "onnx",
                    "--onnx", tmp_path / "other.onnx", *EXTRACT_OPTS)
    assert "embed_dim" in assert_one_line_error(result, "other.onnx", "exported from another model")
    assert embeddings_of(out) == before
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((tmp_path / "other.onnx").read_bytes()[:500])
    result = invoke(extract_cli, "--model", world["exp"], "--data", world["data"], "--out", out, "--runtime", "onnx",
                    "--onnx", truncated, *EXTRACT_OPTS)
    assert_one_line_error(result, "truncated.onnx", "cannot load ONNX model")
    assert embeddings_of(out) == before


# ----------------------------------------------------------------------------- disk space

def full_disk(monkeypatch, free: int = 1000) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 12, 10 ** 12 - free, free))


def test_extraction_stops_up_front_when_the_disk_is_full(world, tmp_path, monkeypatch):
    out = tmp_path / "emb"
    shutil.copytree(world["emb"], out)
    before = embeddings_of(out)
    utts = dict(list(list_inputs(data=world["data"]).items())[:3])  # other work than the earlier run
    full_disk(monkeypatch)
    with pytest.raises(SvmixError, match=r"embedding extraction needs about .* GB but .* has only 0.00 GB free"):
        extract_embeddings(world["exp"], utts, out, num_workers=0, progress=False)
    assert not list((out / "chunks").glob("*.ark"))
    assert embeddings_of(out) == before


def test_caching_stops_up_front_when_the_disk_is_full(world, tmp_path, monkeypatch):
    full_disk(monkeypatch)
    with pytest.raises(SvmixError, match=r"the teacher cache needs about .* GB but .* has only 0.00 GB free"):
        build_cache(world["teacher"], world["data"], tmp_path / "cache", CacheSettings(layers=[1, 2]), progress=False)
    assert not (tmp_path / "cache" / "shards").exists() and not (tmp_path / "cache" / "manifest.json").exists()
    # resuming a half-built cache only needs room for the missing shards
    out = tmp_path / "half"
    shutil.copytree(world["cache"], out)
    (out / "manifest.json").unlink()
    for name in ("shard-00003.bin", "shard-00003.json"):
        (out / "shards" / name).unlink()
    full_disk(monkeypatch, free=(out / "shards" / "shard-00002.bin").stat().st_size * 2)
    build_cache(world["teacher"], world["data"], out, CacheSettings(layers=[1, 2], shard_mb=0.001), progress=False)
    assert snapshot(out, logs=False) == snapshot(world["cache"], logs=False)


def test_disk_full_while_writing_is_one_line_and_keeps_the_previous_file(world, tmp_path, monkeypatch):
    import errno

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    scores = tmp_path / "scores"
    scores.write_bytes(b"previous scores\n")
    monkeypatch.setattr(os, "fsync", no_space)  # the last step of every atomic write before the rename
    result = invoke(score_cli, "--trials", world["data"] / "trials", "--embeddings", world["emb"] / "xvector.scp",
                    "--output", scores)
    assert_one_line_error(result, "No space left on device")
    assert scores.read_bytes() == b"previous scores\n" and [p.name for p in tmp_path.iterdir()] == ["scores"]


# ----------------------------------------------------------------------------- killed scoring

def test_killed_scoring_leaves_no_partial_score_file(world, tmp_path):
    """SIGKILL svmix-score at random points (and once mid-write): the score file is either the
    previous one or the complete new one, never partial; a rerun gives the uninterrupted result."""
    seed = int(os.environ.get("SVMIX_FAULT_SEED", random.randrange(1 << 16)))  # set it to replay a failure
    rng = np.random.default_rng(seed)
    n_utts, dim = 400, 16
    embeddings = {f"u{i:04d}": np.random.default_rng(i).standard_normal(dim).astype(np.float32) for i in range(n_utts)}
    scp = write_ark(tmp_path / "emb.ark", embeddings)
    ids = list(embeddings)
    pairs = np.random.default_rng(0).integers(0, n_utts, size=(400_000, 2))
    trials = tmp_path / "trials"
    trials.write_text("".join(f"{ids[a]} {ids[b]} {'target' if a % 7 == b % 7 else 'nontarget'}\n" for a, b in pairs))
    reference = tmp_path / "reference"
    score_file(trials, scp, reference)
    output = tmp_path / "scores"
    previous = b"previous scores\n"
    cmd = [str(Path(sys.executable).parent / "svmix-score"), "--trials", str(trials), "--embeddings", str(scp),
           "--output", str(output)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.time()
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    clean_seconds = time.time() - start

    def run_and_kill(delay):
        """Start scoring over ``previous`` and SIGKILL it after ``delay`` s (None: once writing started)."""
        output.write_bytes(previous)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + (60 if delay is None else delay)
        while time.time() < deadline and proc.poll() is None:
            if delay is None and list(tmp_path.glob(".scores.*.tmp")):
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert output.read_bytes() in (previous, reference.read_bytes()), f"partial scores (seed {seed}, {delay} s)"
        for leftover in tmp_path.glob(".scores.*.tmp"):  # a killed process cannot remove its temporary file
            leftover.unlink()
        return output.read_bytes() == previous

    # killed mid-write (retried if the machine let it finish first), then at random times
    assert any(run_and_kill(None) for _ in range(3)), "scoring always finished before it could be killed"
    for delay in rng.uniform(0.3, 1.0, size=2) * clean_seconds:
        run_and_kill(delay)
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    assert output.read_bytes() == reference.read_bytes()
