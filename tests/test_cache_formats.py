"""Compressed teacher caches (--dtype int8 / pq): round trip against float32 frames, manifest, verify,
deterministic fit pass, resume, old caches, and training from every format."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import make_datadir, one_error_line, snapshot
from svmix.cache import CacheSettings, TeacherCache, build_cache, verify_cache
from svmix.cache.codecs import distortion
from svmix.errors import SvmixError
from test_cache import tiny_wavlm_dir

LAYERS = [1, 2]
FORMATS = {  # name -> (settings, stored bytes per layer and frame at hidden 32, min mean cosine to float32)
    "float16": (dict(dtype="float16"), 64, 0.9999),
    "int8-frame": (dict(dtype="int8", codec_options={"scale": "frame"}), 36, 0.999),
    "int8-channel": (dict(dtype="int8", codec_options={"scale": "channel"}, fit_frames=400), 32, 0.99),
    "pq": (dict(dtype="pq", codec_options={"subspaces": 16}, fit_frames=600, fit_seed=5), 16, 0.8),
}
TINY_MODEL = {"segment_seconds": 1.0, "num_eval_segments": 2, "hidden": 16, "embed_dim": 8,
              "frontend": {"channels": 8}, "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8},
              "backend": {"name": "linear"}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("formats")
    data = make_datadir(root / "corpus", num_speakers=3, utts_per_speaker=2, seconds=(2.0, 2.5))
    teacher = tiny_wavlm_dir(root / "teacher")
    reference = build_cache(teacher, data, root / "float32", CacheSettings(layers=LAYERS, dtype="float32"),
                            progress=False)
    caches = {name: build_cache(teacher, data, root / name, CacheSettings(layers=LAYERS, shard_mb=0.01, **settings),
                                progress=False) for name, (settings, _, _) in FORMATS.items()}
    yield {"root": root, "data": data, "teacher": teacher, "reference": TeacherCache(reference), "caches": caches}
    torch.set_num_threads(threads)


def files_of(directory):
    """A cache's files but its log (each run's times) and plan.json (it names the output paths)."""
    return {name: data for name, data in snapshot(directory, logs=False).items() if Path(name).name != "plan.json"}


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_round_trips_verifies_and_records_its_codec(world, name):
    settings, layer_bytes, min_cosine = FORMATS[name]
    cache = TeacherCache(world["caches"][name])
    ref = world["reference"]
    codec = cache.manifest["codec"]
    assert cache.dtype == codec["name"] == settings["dtype"] and codec["options"] == settings.get("codec_options", {})
    assert codec["row_bytes"] == layer_bytes and cache.bytes_per_frame == len(LAYERS) * layer_bytes
    assert len(cache.manifest["shards"]) > 1
    trained = name in ("pq", "int8-channel")
    assert ("state" in codec) == trained and ("fit" in codec) == trained
    stored = sum(s["bytes"] for s in cache.manifest["shards"])
    assert stored == cache.manifest["num_frames"] * cache.bytes_per_frame
    assert set(cache.utt_ids) == set(ref.utt_ids)
    for utt in ref.utt_ids:
        got, want = cache.frames(utt), ref.frames(utt)
        assert got.dtype == np.float32 and got.shape == want.shape
        for layer in range(len(LAYERS)):
            d = distortion(want[layer], got[layer])
            assert d["mean_cosine"] > min_cosine, (utt, layer, d)
        np.testing.assert_array_equal(cache.frames(utt, 3, 20), got[:, 3:23])  # crops decode the same rows
    assert verify_cache(world["caches"][name]) == []


def test_pq_is_deterministic_from_its_seed_and_the_seed_matters(world, tmp_path):
    settings = dict(FORMATS["pq"][0], layers=LAYERS, shard_mb=0.01)
    again = build_cache(world["teacher"], world["data"], tmp_path / "again", CacheSettings(**settings), progress=False)
    assert files_of(again) == files_of(world["caches"]["pq"])
    other = build_cache(world["teacher"], world["data"], tmp_path / "other", CacheSettings(**{**settings, "fit_seed": 6}),
                        progress=False)
    assert (other / "shards" / "codec.bin").read_bytes() != (again / "shards" / "codec.bin").read_bytes()


def test_pq_resumes_and_repairs_a_damaged_codec_state(world, tmp_path):
    out = tmp_path / "pq"
    shutil.copytree(world["caches"]["pq"], out)
    good = files_of(out)
    settings = CacheSettings(layers=LAYERS, shard_mb=0.01, **FORMATS["pq"][0])
    # An interrupted run: the manifest and one shard missing, the codec state damaged.
    (out / "manifest.json").unlink()
    for suffix in (".bin", ".json"):
        (out / "shards" / f"shard-00001{suffix}").unlink()
    state = out / "shards" / "codec.bin"
    raw = bytearray(state.read_bytes())
    raw[-5] ^= 0xFF
    state.write_bytes(bytes(raw))
    build_cache(world["teacher"], world["data"], out, settings, progress=False)
    assert files_of(out) == good  # refitted to the same codebooks, the missing shard redone
    # A finished cache whose codec state is damaged: verify names it, the reader refuses, a rerun repairs.
    state.write_bytes(bytes(raw))
    assert any("codec.bin" in p for p in verify_cache(out))
    with pytest.raises(SvmixError, match="codec state .*codec.bin.* corrupt"):
        TeacherCache(out)
    build_cache(world["teacher"], world["data"], out, settings, progress=False)
    assert files_of(out) == good and verify_cache(out) == []


def test_float16_cache_written_before_codecs_still_loads_and_counts_as_complete(world, tmp_path, caplog):
    out = tmp_path / "old"
    shutil.copytree(world["caches"]["float16"], out)
    for name in ("manifest.json", "plan.json"):  # what the writer stored before codecs existed
        record = json.loads((out / name).read_text())
        for key in ("codec", "bytes_per_frame"):
            record.pop(key)
        (out / name).write_text(json.dumps(record))
    old, new = TeacherCache(out), TeacherCache(world["caches"]["float16"])
    assert old.dtype == "float16" and old.bytes_per_frame == new.bytes_per_frame
    for utt in new.utt_ids:
        np.testing.assert_array_equal(old.frames(utt), new.frames(utt))
    assert verify_cache(out) == []
    with caplog.at_level("INFO"):
        build_cache(world["teacher"], world["data"], out, CacheSettings(layers=LAYERS, shard_mb=0.01), progress=False)
    assert "already complete" in caplog.text


def test_pq_is_over_30x_smaller_than_float16_at_1024_dims(tmp_path, one_thread):
    data = make_datadir(tmp_path / "corpus", num_speakers=1, utts_per_speaker=3, seconds=(2.0, 2.0))  # 297 frames
    teacher = tiny_wavlm_dir(tmp_path / "teacher", hidden=1024, channels=16)
    sizes = {}
    for dtype, options in (("float16", {}), ("pq", {"subspaces": 64})):  # 64: the largest --pq-bytes
        out = build_cache(teacher, data, tmp_path / dtype, CacheSettings(layers=[2], dtype=dtype, codec_options=options,
                                                                        fit_frames=256), progress=False)
        manifest = TeacherCache(out).manifest
        sizes[dtype] = sum(s["bytes"] for s in manifest["shards"]) / manifest["num_frames"]
    assert sizes["float16"] == 2048 and sizes["pq"] == 64
    assert sizes["float16"] / sizes["pq"] >= 30


def test_bad_codec_settings_are_one_line_errors(world, tmp_path):
    from svmix.bin.cache_teacher import main as cache_cli

    args = ["--teacher", world["teacher"], "--data", world["data"], "--layers", "1,2", "--out", tmp_path / "c",
            "--dtype", "pq"]
    result = CliRunner().invoke(cache_cli, [str(a) for a in args + ["--pq-bytes", "24"]])
    assert "not divisible into 24 subspaces" in one_error_line(result, "--dtype pq")
    result = CliRunner().invoke(cache_cli, [str(a) for a in args + ["--pq-bytes", "8"]])
    assert "16<=x<=64" in one_error_line(result, "--pq-bytes")  # range-checked when parsed
    short = make_datadir(tmp_path / "short", num_speakers=1, utts_per_speaker=1, seconds=(1.0, 1.0))
    result = CliRunner().invoke(cache_cli, [str(a) for a in args[:2] + ["--data", short] + args[4:] + ["--pq-bytes", "16"]])
    assert "at least 256" in one_error_line(result, "pq codec")
    assert not (tmp_path / "c" / "manifest.json").exists()


@pytest.mark.parametrize("name", list(FORMATS))
def test_svmix_train_runs_two_steps_from_each_format(world, name, tmp_path):
    import torch

    from svmix.bin.train import main as train_cli

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {
        "batch_size": 3, "max_steps": 2, "log_every": 1, "num_workers": 0, "seed": 1,
        "kd": {"name": "distilhubert", "layers": LAYERS}}}))
    result = CliRunner().invoke(train_cli, ["--config", str(config), "--data", str(world["data"]), "--teacher-cache",
                                            str(world["caches"][name]), "--exp", str(tmp_path / "exp"), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    kd = [r["kd"] for r in records if r["type"] == "train"]
    assert len(kd) == 2 and all(np.isfinite(kd))
    assert torch.load(tmp_path / "exp" / "checkpoints" / "last.pt", weights_only=False)["step"] == 2
