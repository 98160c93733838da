"""Teacher feature cache: contents, crop alignment, resume after SIGKILL, verify, compatibility."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_datadir, snapshot
from svmix.cache import CacheSettings, TeacherCache, build_cache, utterance_frames, verify_cache
from svmix.errors import SvmixError
from svmix.teachers import load_teacher
from svmix.teachers.hf_format import save_hf_wavlm
from svmix.teachers.model import build_torchaudio_model

BIN = Path(sys.executable).parent


def tiny_wavlm_dir(path: Path, seed: int = 0, extractor: str = "layer_norm", stable_ln: bool = True,
                   hidden: int = 32, channels: int = 16) -> Path:
    params = dict(extractor_mode=extractor, extractor_conv_layer_config=[(channels, 10, 5)] + [(channels, 3, 2)] * 4
                  + [(channels, 2, 2)] * 2, extractor_conv_bias=False, encoder_embed_dim=hidden,
                  encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
                  encoder_num_layers=2, encoder_num_heads=2, encoder_num_buckets=320, encoder_max_distance=800,
                  encoder_attention_dropout=0.0, encoder_ff_interm_features=2 * hidden, encoder_ff_interm_dropout=0.0,
                  encoder_dropout=0.0, encoder_layer_norm_first=stable_ln, encoder_layer_drop=0.0)
    torch.manual_seed(seed)
    save_hf_wavlm(build_torchaudio_model("wavlm", params), params, path)
    return path



@pytest.fixture
def setup(tmp_path, one_thread):
    data = make_datadir(tmp_path / "corpus", num_speakers=3, utts_per_speaker=2, seconds=(3.2, 4.0))
    return tmp_path, data, tiny_wavlm_dir(tmp_path / "teacher")


def run_cli(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(BIN / "svmix-cache-teacher"), *map(str, args)], capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cache_holds_teacher_layers_and_crops_map_to_frames(setup):
    tmp_path, data, teacher_dir = setup
    cache_dir = build_cache(teacher_dir, data, tmp_path / "cache", CacheSettings(layers=[0, 2], dtype="float32",
                                                                                   shard_mb=0.02), progress=False)
    cache = TeacherCache(cache_dir)
    teacher = load_teacher(teacher_dir)
    assert (cache.layers, cache.hidden_size, cache.frame_shift, cache.dtype) == ([0, 2], 32, 320, "float32")
    assert len(cache.manifest["shards"]) > 1 and len(cache.utt_ids) == 6
    from svmix.data.audio import load_audio
    from svmix.data.datadir import DataDir

    wav_scp = DataDir(data).wav_scp
    utt = cache.utt_ids[0]
    wav = load_audio(wav_scp[utt], utt)
    full = teacher(torch.from_numpy(wav)[None])
    assert cache.num_frames(utt) == full[0].shape[1] == (len(wav) - 400) // 320 + 1
    np.testing.assert_array_equal(cache.frames(utt)[1], full[2][0].numpy())  # one pass: exact
    # a 3 s waveform crop at sample 320 k maps to frames k .. k+148; away from the crop edges the
    # Transformer input (conv + positional conv, context +-8 frames here) is the same either way
    k = 7
    crop = teacher(torch.from_numpy(wav[320 * k:320 * k + 48000])[None])[0][0].numpy()
    cached = cache.frames(utt, k, 149)
    assert crop.shape == cached[0].shape == (149, 32)
    np.testing.assert_allclose(cached[0][8:-8], crop[8:-8], atol=1e-4)
    assert np.abs(cache.frames(utt, k + 1, 149)[0][8:-8] - crop[8:-8]).max() > 1e-2  # off by one frame: differs
    with pytest.raises(SvmixError, match="out of range"):
        cache.frames(utt, cache.num_frames(utt) - 10, 11)
    with pytest.raises(SvmixError, match="not in the teacher cache"):
        cache.frames("nobody")


def test_long_utterances_are_chunked_with_small_deviation(tmp_path, one_thread):
    teacher = load_teacher(tiny_wavlm_dir(tmp_path / "teacher"))
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000 * 12)).astype(np.float32)
    whole = utterance_frames(teacher, wav, [0, 1, 2], chunk_seconds=100)
    np.testing.assert_array_equal(whole[:, 2], teacher(torch.from_numpy(wav)[None])[2][0].numpy())
    chunked = utterance_frames(teacher, wav, [0, 1, 2], chunk_seconds=3, context_seconds=1)
    assert chunked.shape == whole.shape == (teacher.num_frames(len(wav)), 3, 32)
    np.testing.assert_allclose(chunked[:, 0], whole[:, 0], atol=1e-5)  # conv + local positional conv: exact
    rel_rms = np.sqrt(np.mean((chunked - whole) ** 2)) / whole.std()
    assert 0 < rel_rms < 0.1, rel_rms  # global attention sees less context; documented in writer.py


def test_resume_after_sigkill_gives_identical_cache(tmp_path, one_thread):
    data = make_datadir(tmp_path / "corpus", num_speakers=4, utts_per_speaker=6, seconds=(3.0, 3.5))
    teacher = tiny_wavlm_dir(tmp_path / "teacher", hidden=64, channels=64)
    args = ["--teacher", teacher, "--data", data, "--layers", "1,2", "--shard-mb", "0.01"]
    run_cli(*args, "--out", tmp_path / "reference")
    interrupted = tmp_path / "interrupted"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(BIN / "svmix-cache-teacher"), *map(str, args), "--out", str(interrupted)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while len(list(interrupted.glob("shards/shard-*.json"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(interrupted.glob("shards/shard-*.json")))
    assert not (interrupted / "manifest.json").exists() and 3 <= done < 24, done
    run_cli(*args, "--out", interrupted)
    ref_files = sorted(p.relative_to(tmp_path / "reference") for p in (tmp_path / "reference").rglob("*") if p.is_file())
    new_files = sorted(p.relative_to(interrupted) for p in interrupted.rglob("*") if p.is_file())
    assert ref_files == new_files  # no temporary leftovers
    for rel in ref_files:
        # plan.json names the output paths of the data, identical too; cache.log holds the runs' times
        if rel.name not in ("plan.json", "cache.log"):
            assert (tmp_path / "reference" / rel).read_bytes() == (interrupted / rel).read_bytes(), rel
    assert len(json.loads((interrupted / "manifest.json").read_text())["utts"]) == 24


def test_verify_names_truncated_shard(setup):
    tmp_path, data, teacher_dir = setup
    out = tmp_path / "cache"
    settings = CacheSettings(layers=[2], shard_mb=0.02)
    build_cache(teacher_dir, data, out, settings, progress=False)
    assert verify_cache(out) == []
    shard = out / "shards" / "shard-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    proc = run_cli("--verify", "--out", out, check=False)
    assert proc.returncode == 1 and "shard-00001.bin" in proc.stderr and "shard-00000" not in proc.stderr
    assert verify_cache(out) and "shard-00001.bin" in verify_cache(out)[0]
    with pytest.raises(SvmixError, match="shard-00001.bin"):
        TeacherCache(out)
    build_cache(teacher_dir, data, out, settings, progress=False)
    assert verify_cache(out) == []  # the truncated shard was redone


def test_check_compatible_rejects_other_teacher_or_layers(setup):
    tmp_path, data, teacher_dir = setup
    build_cache(teacher_dir, data, tmp_path / "cache", CacheSettings(layers=[1, 2]), progress=False)
    cache = TeacherCache(tmp_path / "cache")
    cache.check_compatible(teacher_dir, [1, 2])
    cache.check_compatible(load_teacher(teacher_dir))
    other = tiny_wavlm_dir(tmp_path / "other", seed=1)
    with pytest.raises(SvmixError, match="built with teacher"):
        cache.check_compatible(other, [1, 2])
    with pytest.raises(SvmixError, match=r"holds layers \[1, 2\], but \[2\]"):
        cache.check_compatible(teacher_dir, [2])
    with pytest.raises(SvmixError, match="other settings"):  # reusing the directory for another setup
        build_cache(other, data, tmp_path / "cache", CacheSettings(layers=[1, 2]), progress=False)


def test_corrupt_audio_fails_early_or_is_skipped(setup):
    tmp_path, data, teacher_dir = setup
    bad_path = Path(open(data / "wav.scp").readline().split()[1])
    bad_path.write_bytes(b"RIFF garbage")
    proc = run_cli("--teacher", teacher_dir, "--data", data, "--layers", "2", "--out", tmp_path / "c1", check=False)
    assert proc.returncode == 1 and "spk00-utt00" in proc.stderr and "--skip-bad" in proc.stderr
    assert "teacher cache estimate" not in proc.stderr and not list((tmp_path / "c1").glob("shards/*.bin"))
    build_cache(teacher_dir, data, tmp_path / "c2", CacheSettings(layers=[2], skip_bad=True), progress=False)
    cache = TeacherCache(tmp_path / "c2")
    assert "spk00-utt00" not in cache and len(cache) == 5 and list(cache.manifest["skipped"]) == ["spk00-utt00"]


def test_storage_estimate_stops_when_disk_is_full(setup, monkeypatch):
    import shutil

    tmp_path, data, teacher_dir = setup
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(SvmixError, match="teacher cache needs about"):
        build_cache(teacher_dir, data, tmp_path / "cache", CacheSettings(layers=[2]), progress=False)
    assert not (tmp_path / "cache" / "shards").exists()


def test_parallel_workers_and_dataloader_reads(setup):
    tmp_path, data, teacher_dir = setup
    build_cache(teacher_dir, data, tmp_path / "c1", CacheSettings(layers=[0, 2], shard_mb=0.02), progress=False)
    proc = run_cli("--teacher", teacher_dir, "--data", data, "--layers", "0,2", "--out", tmp_path / "c2",
                   "--shard-mb", "0.02", "--nj", "2", "--verify")
    assert "teacher cache estimate: 6 utterances" in proc.stderr and "OK" in proc.stdout
    one, two = TeacherCache(tmp_path / "c1"), TeacherCache(tmp_path / "c2")
    assert one.manifest["utts"] == two.manifest["utts"]
    for utt in one.utt_ids:
        np.testing.assert_allclose(one.frames(utt), two.frames(utt), atol=2e-3)

    class Crops(torch.utils.data.Dataset):
        def __len__(self):
            return len(one.utt_ids)

        def __getitem__(self, i):
            return torch.from_numpy(one.frames(one.utt_ids[i], 2, 100))

    one.frames(one.utt_ids[0])  # a shard opened in the parent before forking
    loaded = torch.cat(list(torch.utils.data.DataLoader(Crops(), batch_size=2, num_workers=2)))
    expected = torch.stack([torch.from_numpy(one.frames(u, 2, 100)) for u in one.utt_ids])
    assert torch.equal(loaded, expected)


@pytest.mark.parametrize("damage", ["flip_byte", "zero_block", "truncate"])
def test_rerun_finds_and_redoes_a_corrupted_shard(setup, damage):
    tmp_path, data, teacher_dir = setup
    out = tmp_path / "cache"
    args = ["--teacher", teacher_dir, "--data", data, "--layers", "2", "--shard-mb", "0.02", "--out", out]
    run_cli(*args)
    good = snapshot(out, logs=False)
    shard = out / "shards" / "shard-00001.bin"
    raw = bytearray(shard.read_bytes())
    if damage == "flip_byte":  # same size: only a checksum can tell
        raw[len(raw) // 3] ^= 0x01
    elif damage == "zero_block":
        raw[100:4196] = bytes(4096)
    else:
        raw = raw[:-64]
    shard.write_bytes(bytes(raw))
    proc = run_cli(*args)
    assert "already complete" not in proc.stderr
    assert "shard-00001.bin" in proc.stderr and "redoing it" in proc.stderr and "shard-00000" not in proc.stderr
    assert snapshot(out, logs=False) == good
    assert verify_cache(out) == []
    assert "already complete" in run_cli(*args).stderr


def test_torchrun_ranks_build_one_cache_and_one_rank_reports(setup, monkeypatch):
    tmp_path, data, teacher_dir = setup
    out, settings = tmp_path / "cache", CacheSettings(layers=[2], shard_mb=0.02)
    build_cache(teacher_dir, data, tmp_path / "reference", settings, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")  # the ranks run one after another: no process group is needed
    assert build_cache(teacher_dir, data, out, settings, progress=False) is None
    assert not (out / "manifest.json").exists()
    monkeypatch.setenv("RANK", "0")
    assert build_cache(teacher_dir, data, out, settings, progress=False) == out  # the last one merges
    assert (out / "manifest.json").read_bytes() == (tmp_path / "reference" / "manifest.json").read_bytes()
    monkeypatch.setenv("RANK", "1")
    assert build_cache(teacher_dir, data, out, settings, progress=False) is None  # complete: rank 0 reports
    monkeypatch.setenv("RANK", "0")
    assert build_cache(teacher_dir, data, out, settings, progress=False) == out
