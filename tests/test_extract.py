"""Stage 4: segment embedders, batching, and svmix-extract (resume, sharding, bad audio, ONNX)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_datadir
from svmix.bin.extract import main as extract_cli
from svmix.calibration import read_quality
from svmix.checkpoint import save_model
from svmix.data.audio import load_audio
from svmix.data.datadir import read_kv
from svmix.errors import SvmixError
from svmix.inference.embedder import SegmentEmbedder, embed_utterances, load_embedder
from svmix.inference.extract import extract_embeddings, list_inputs
from svmix.inference.segments import mean_embedding, segment_pair_score, segment_waveform
from svmix.models import build_model

TINY = {"hidden": 32, "embed_dim": 16, "frontend": {"channels": 32},
        "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8}, "backend": {"name": "linear"}}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model(TINY)
    for p in model.backend.norm.parameters():  # non-trivial BatchNorm so eval mode matters
        torch.nn.init.uniform_(p, 0.5, 1.5)
    save_model(path, model)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    ckpt = make_checkpoint(root / "exp" / "model.pt")
    data = make_datadir(root, num_speakers=3, utts_per_speaker=3, seconds=(1.0, 5.0), seed=3, trials=False)
    return root, ckpt, data


def load_scp(out: Path) -> dict:
    return dict(kaldiio.load_scp(str(out / "xvector.scp")))


def reference_embeddings(ckpt: Path, data: Path) -> dict:
    """Plain model forward on the evaluation segments, one utterance at a time (no batching tricks)."""
    model = build_model(TINY)
    model.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    model.eval()
    out = {}
    with torch.no_grad():
        for utt, path in read_kv(data / "wav.scp").items():
            segs = segment_waveform(load_audio(path), model.segment_samples, model.num_eval_segments)
            out[utt] = model(torch.from_numpy(segs)).numpy()
    return out



def kill_after_first_chunk(cmd, out, wait_seconds: float) -> None:
    """Start the extraction ``cmd`` and SIGKILL it as soon as a chunk of ``out`` is published (or it
    ends, or ``wait_seconds`` pass)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + wait_seconds
    while not list((out / "chunks").glob("xvector.*.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

def test_mixed_length_batches_match_single_utterances(setup):
    _, ckpt, _ = setup
    embedder = load_embedder(ckpt)
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(n).astype(np.float32) for n in (20000, 50000, 48000, 90000, 1000, 160000)]
    alone = [embed_utterances(embedder, [w], batch_size=32)[0] for w in wavs]
    for batch_size in (1, 7, 64):
        mixed = embed_utterances(embedder, wavs, batch_size=batch_size)
        for a, b in zip(alone, mixed):
            assert a.shape == (10, 16)
            np.testing.assert_allclose(a, b, atol=1e-5)
    segs = np.stack([segment_waveform(w, 48000, 10) for w in wavs[:2]]).reshape(-1, 48000)
    assert embedder(segs).shape == (20, 16)


def test_embedder_interface(setup):
    _, ckpt, _ = setup
    embedder = load_embedder(ckpt)
    assert isinstance(embedder, SegmentEmbedder)
    assert embedder.embed_dim == 16 and embedder.segment_samples == 48000
    assert embedder.config["num_eval_segments"] == 10
    with pytest.raises(ValueError):
        embedder(np.zeros((2, 1000), np.float32))


def test_extract_writes_segment_matrices_in_input_order(setup, tmp_path):
    _, ckpt, data = setup
    stats = extract_embeddings(ckpt, list_inputs(data=data), tmp_path / "emb", num_workers=1, batch_size=5,
                               chunk_size=4, progress=False)
    got = load_scp(tmp_path / "emb")
    ref = reference_embeddings(ckpt, data)
    assert list(got) == list(read_kv(data / "wav.scp"))
    for utt in ref:
        np.testing.assert_allclose(got[utt], ref[utt], atol=1e-5)
    assert not (tmp_path / "emb" / "chunks").exists()
    assert stats["num_utts"] == 9 and stats["skipped"] == 0 and stats["runtime"] == "torch"
    # wall_seconds is stored to the millisecond, the RTF from the unrounded time.
    assert stats["audio_seconds"] > 9
    assert stats["rtf"] * stats["audio_seconds"] == pytest.approx(stats["wall_seconds"], abs=1e-3)
    assert set(stats) >= {"num_utts", "audio_seconds", "wall_seconds", "rtf", "runtime", "device", "num_threads",
                          "skipped"}

    # Beside the embeddings: each utterance's duration and embedding norm before length normalisation.
    quality = read_quality(tmp_path / "emb")
    assert list(quality) == list(ref)
    wavs = read_kv(data / "wav.scp")
    for utt in ref:
        seconds, norm = quality[utt]
        assert seconds == pytest.approx(len(load_audio(wavs[utt])) / 16000, abs=1e-3)
        assert norm == pytest.approx(np.linalg.norm(ref[utt], axis=1).mean(), rel=1e-4)
        assert norm > 1.5  # a raw norm, not the 1.0 of a normalised embedding

    # A rerun of finished work is a no-op; --average stores normalised means (a different output).
    ark = tmp_path / "emb" / "xvector.ark"
    before = ark.stat().st_mtime_ns
    extract_embeddings(ckpt, list_inputs(data=data), tmp_path / "emb", num_workers=0, chunk_size=4, progress=False)
    assert ark.stat().st_mtime_ns == before
    extract_embeddings(ckpt, list_inputs(data=data), tmp_path / "emb", num_workers=0, chunk_size=4, average=True,
                       progress=False)
    avg = load_scp(tmp_path / "emb")
    for utt in ref:
        assert avg[utt].shape == (16,)
        np.testing.assert_allclose(avg[utt], mean_embedding(ref[utt]), atol=1e-5)
    assert read_quality(tmp_path / "emb") == quality  # norms of the segments, before averaging


def test_nj2_matches_nj1(setup, tmp_path):
    _, ckpt, data = setup
    utts = list_inputs(data=data)
    extract_embeddings(ckpt, utts, tmp_path / "one", num_workers=0, chunk_size=2, progress=False)
    stats = extract_embeddings(ckpt, utts, tmp_path / "two", num_workers=0, chunk_size=2, nj=2, num_threads=1,
                               progress=False)
    one, two = load_scp(tmp_path / "one"), load_scp(tmp_path / "two")
    assert list(one) == list(two) == list(utts) and stats["num_utts"] == len(utts)
    for utt in one:
        np.testing.assert_allclose(one[utt], two[utt], atol=1e-5)
    assert (tmp_path / "one" / "xvector.scp").read_text().replace(str(tmp_path / "one"), "X") == \
        (tmp_path / "two" / "xvector.scp").read_text().replace(str(tmp_path / "two"), "X")


def test_torchrun_ranks_shard_and_the_last_one_merges(setup, tmp_path, monkeypatch):
    _, ckpt, data = setup
    utts = list_inputs(data=data)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert extract_embeddings(ckpt, utts, tmp_path / "emb", num_workers=0, chunk_size=2, progress=False) is None
    assert not (tmp_path / "emb" / "xvector.scp").exists()
    assert sorted(p.name for p in (tmp_path / "emb" / "chunks").glob("*.json")) == \
        ["xvector.000001.json", "xvector.000003.json"]
    monkeypatch.setenv("RANK", "0")
    stats = extract_embeddings(ckpt, utts, tmp_path / "emb", num_workers=0, chunk_size=2, progress=False)
    assert stats["total_utts"] == len(utts) and list(load_scp(tmp_path / "emb")) == list(utts)
    with pytest.raises(SvmixError, match="torchrun"):
        extract_embeddings(ckpt, utts, tmp_path / "emb2", nj=2, progress=False)


def test_wav_dir_inputs(tmp_path):
    import soundfile as sf

    for rel in ("a/x.wav", "a/b/y.flac", "z.WAV"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, np.zeros(800, np.float32), 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    assert list(list_inputs(wav_dir=tmp_path)) == ["a/b/y", "a/x", "z"]
    with pytest.raises(SvmixError, match="exactly one"):
        list_inputs(data=tmp_path, wav_dir=tmp_path)


def test_bad_audio_is_one_line_error_or_skipped(setup, tmp_path):
    _, ckpt, data = setup
    wav_scp = dict(read_kv(data / "wav.scp"))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(200))
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {p}\n" for u, p in wav_scp.items()) + f"broken-utt {corrupt}\n")
    runner = CliRunner()

    result = runner.invoke(extract_cli, ["--model", str(ckpt.parent), "--wav-scp", str(scp), "--out",
                                         str(tmp_path / "e1"), "--num-workers", "0"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken-utt" in errors[0] and "Traceback" not in result.output

    result = runner.invoke(extract_cli, ["--model", str(ckpt.parent), "--wav-scp", str(scp), "--out",
                                         str(tmp_path / "e2"), "--num-workers", "1", "--skip-bad"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "e2" / "extract_stats.json").read_text())
    assert stats["skipped"] == 1 and list(stats["skipped_utts"]) == ["broken-utt"]
    assert list(load_scp(tmp_path / "e2")) == list(wav_scp)

    scp.write_text(f"ghost-utt {tmp_path / 'missing.wav'}\n")
    result = runner.invoke(extract_cli, ["--model", str(ckpt), "--wav-scp", str(scp), "--out", str(tmp_path / "e3"),
                                         "--num-workers", "0"])
    assert result.exit_code == 1 and "ghost-utt" in result.output and "not found" in result.output


def test_killed_run_resumes_to_the_same_result(tmp_path):
    ckpt = make_checkpoint(tmp_path / "exp" / "model.pt")
    data = make_datadir(tmp_path, num_speakers=3, utts_per_speaker=4, seconds=(3.2, 4.0), seed=5, trials=False)
    out = tmp_path / "emb"
    cmd = [sys.executable, "-m", "svmix.bin.extract", "--model", str(ckpt.parent), "--data", str(data),
           "--out", str(out), "--chunk-size", "1", "--batch-size", "2", "--num-workers", "0", "--num-threads", "1"]
    kill_after_first_chunk(cmd, out, wait_seconds=120)
    assert not (out / "xvector.scp").exists(), "the run finished before it could be killed"
    finished = len(list((out / "chunks").glob("*.json")))
    assert 1 <= finished < 12

    stats = extract_embeddings(ckpt, list_inputs(data=data), out, chunk_size=1, num_workers=0, progress=False)
    assert stats["resumed_utts"] >= finished and stats["num_utts"] + stats["resumed_utts"] == 12
    ref_out = tmp_path / "ref"
    extract_embeddings(ckpt, list_inputs(data=data), ref_out, chunk_size=1, num_workers=0, progress=False)
    assert (out / "xvector.scp").read_text().replace(str(out), "X") == \
        (ref_out / "xvector.scp").read_text().replace(str(ref_out), "X")
    got, ref = load_scp(out), load_scp(ref_out)
    assert list(got) == list(ref)
    for utt in ref:
        np.testing.assert_allclose(got[utt], ref[utt], atol=1e-6)


def test_onnx_runtime_matches_torch(setup, tmp_path):
    from svmix.export.exporter import export_model
    from svmix.inference.onnx_runtime import OnnxSegmentEmbedder

    _, ckpt, data = setup
    model_dir = tmp_path / "exp"
    make_checkpoint(model_dir / "model.pt")
    export_model(model_dir, "onnx", model_dir / "model.onnx", check=False)
    utts = list_inputs(data=data)
    extract_embeddings(model_dir, utts, tmp_path / "torch", num_workers=0, progress=False)
    stats = extract_embeddings(model_dir, utts, tmp_path / "onnx", num_workers=0, runtime="onnx", progress=False)
    assert stats["runtime"] == "onnx" and isinstance(load_embedder(model_dir, "onnx"), OnnxSegmentEmbedder)
    a, b = load_scp(tmp_path / "torch"), load_scp(tmp_path / "onnx")
    assert list(a) == list(b)
    for utt in a:
        np.testing.assert_allclose(a[utt], b[utt], atol=1e-4)
    for x in a:
        for y in a:
            assert segment_pair_score(b[x], b[y]) == pytest.approx(segment_pair_score(a[x], a[y]), abs=1e-4)


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    """Utterances of several distinct segments, and an uninterrupted reference extraction."""
    root = tmp_path_factory.mktemp("resume")
    ckpt = make_checkpoint(root / "exp" / "model.pt")
    data = make_datadir(root, num_speakers=3, utts_per_speaker=4, seconds=(3.2, 6.0), seed=11, trials=False)
    extract_embeddings(ckpt, list_inputs(data=data), root / "ref", chunk_size=2, batch_size=3, num_workers=0,
                       progress=False)
    return ckpt, data, root / "ref"


def assert_same_output(out: Path, ref: Path) -> None:
    assert (out / "xvector.ark").read_bytes() == (ref / "xvector.ark").read_bytes()
    assert (out / "xvector.scp").read_text().replace(str(out.resolve()), "X") == \
        (ref / "xvector.scp").read_text().replace(str(ref.resolve()), "X")
    assert (out / "quality.tsv").read_bytes() == (ref / "quality.tsv").read_bytes()
    assert not (out / "chunks").exists() and not (out / ".svmix.lock").exists()


def test_resume_after_a_kill_is_byte_identical(resumable, tmp_path):
    ckpt, data, ref = resumable
    out = tmp_path / "emb"
    cmd = [sys.executable, "-m", "svmix.bin.extract", "--model", str(ckpt), "--data", str(data), "--out", str(out),
           "--chunk-size", "2", "--batch-size", "3", "--num-workers", "0", "--num-threads", "1"]
    kill_after_first_chunk(cmd, out, wait_seconds=300)
    finished = len(list((out / "chunks").glob("xvector.*.json")))
    assert 1 <= finished < 6 and not (out / "xvector.scp").exists()
    # resumed with another batch size: the plan's batch size is kept, so the batches are the same
    stats = extract_embeddings(ckpt, list_inputs(data=data), out, chunk_size=2, batch_size=7, num_workers=0,
                               progress=False)
    assert stats["resumed_utts"] == 2 * finished
    assert_same_output(out, ref)


@pytest.mark.parametrize("ok_writes, file", [(1, "chunks/xvector.000000.ark"), (4, "chunks/xvector.000001.json"),
                                              (13, "xvector.ark")])
def test_disk_full_names_the_file_and_the_rerun_is_byte_identical(resumable, tmp_path, monkeypatch, ok_writes, file):
    ckpt, data, ref = resumable
    out = tmp_path / "emb"
    calls = []

    def fsync_until_full(fd):  # the last step of every atomic write: plan, then ark + marker per chunk
        calls.append(fd)
        if len(calls) > ok_writes:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync_until_full)
    result = CliRunner().invoke(extract_cli, ["--model", str(ckpt), "--data", str(data), "--out", str(out),
                                              "--chunk-size", "2", "--batch-size", "3", "--num-workers", "0"])
    monkeypatch.undo()
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.exit_code == 1 and "Traceback" not in result.output and len(errors) == 1, result.output
    assert errors[0].endswith(f" error: [Errno 28] No space left on device: '{out / file}'"), errors[0]
    extract_embeddings(ckpt, list_inputs(data=data), out, chunk_size=2, batch_size=3, num_workers=0, progress=False)
    assert_same_output(out, ref)


@pytest.mark.parametrize("earlier", [False, True])
def test_failed_extraction_leaves_no_config_lock_or_chunks(resumable, tmp_path, earlier):
    import soundfile as sf

    ckpt, data, ref = resumable
    out = tmp_path / "emb"
    if earlier:  # a finished extraction of other inputs in the same directory
        extract_embeddings(ckpt, dict(list(list_inputs(data=data).items())[:3]), out, num_workers=0, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if earlier else {}
    sf.write(tmp_path / "silent.wav", np.zeros(24000, np.float32), 16000)  # found only when decoded
    scp = tmp_path / "wav.scp"
    scp.write_text((data / "wav.scp").read_text() + f"zz-silent {tmp_path / 'silent.wav'}\n")
    result = CliRunner().invoke(extract_cli, ["--model", str(ckpt), "--wav-scp", str(scp), "--out", str(out),
                                              "--num-workers", "0"])
    assert result.exit_code == 1 and "zz-silent" in result.stderr and "all silence" in result.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "extract.log"}
    assert after == before  # nothing new (no extract_config.json, lock or chunks), nothing earlier changed
