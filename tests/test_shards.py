"""Audio shards (WeSpeaker layout): writing, reading the same crops as a Kaldi data dir, exact resume."""
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from conftest import make_datadir
from svmix.data.datadir import DataDir
from svmix.data.shards import ShardStream, read_shard_index, round_robin, write_shards
from svmix.errors import SvmixError
from svmix.train.dataset import CropExamples, TrainingSet
from svmix.data.index import utterance_keys
from svmix.train.sampler import ShardedBatchSampler

SEGMENT = 8000  # 0.5 s crops of 0.7-1.5 s utterances: many possible crops per utterance


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    data = make_datadir(root / "kaldi", num_speakers=4, utts_per_speaker=3, seconds=(0.7, 1.5), trials=False)
    return data, root


def _shards(corpus, per_shard):
    data, root = corpus
    out = root / f"shards{per_shard}"
    if not (out / "shard.list").is_file():
        write_shards(data, out, utts_per_shard=per_shard, seed=3)
    return out


def _stream(shard_dir, batch, workers=0, rank=0, world=1, buffer=4, seed=11):
    index = read_shard_index(shard_dir)
    speakers = sorted(set(index.utt2spk.values()))
    return ShardStream(index, speakers, CropExamples(SEGMENT, 24), batch, seed, rank, world, workers, buffer)


def _epoch(stream, epoch, start=0, workers=0):
    stream.set_epoch(epoch, start)
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [[(u, int(f)) for u, f in zip(b["utt"], b["start_frame"])] for b in loader]


def test_shard_layout_is_wespeakers(corpus):
    data, _ = corpus
    out = _shards(corpus, 5)
    wav_scp, utt2spk = DataDir(data).wav_scp, DataDir(data).utt2spk
    tars = (out / "shard.list").read_text().split()
    assert len(tars) == 3  # 12 utterances, 5 per shard
    seen = {}
    for path in tars:
        with tarfile.open(path) as tar:
            names = tar.getnames()
            assert len(names) == 2 * len({n.rsplit(".", 1)[0] for n in names})
            for name in names:
                utt, ext = name.rsplit(".", 1)
                body = tar.extractfile(name).read()
                if ext == "spk":
                    assert body.decode() == utt2spk[utt]
                else:
                    assert ext == "wav" and body == open(wav_scp[utt], "rb").read()
                    seen[utt] = path
    assert sorted(seen) == sorted(wav_scp)
    assert (out / "utt2spk").read_text() == (data / "utt2spk").read_text()
    before = {p: (out / "shards" / p).stat().st_mtime_ns for p in ("shard-000000.tar", "shard-000002.tar")}
    (out / "shards" / "shard-000001.tar").unlink()  # as after a kill: the rerun writes only what is missing
    write_shards(data, out, utts_per_shard=5, seed=3)
    assert (out / "shards" / "shard-000001.tar").is_file()
    assert {p: (out / "shards" / p).stat().st_mtime_ns for p in before} == before


@pytest.mark.parametrize("per_shard,workers", [(3, 0), (3, 2), (4, 2)])
def test_shards_and_kaldi_dir_give_the_same_crops(corpus, per_shard, workers):
    """12 utterances in batches of 3 or 2: no batch is dropped, so both read every utterance once per
    epoch, and each with the crop that (seed, epoch, utterance) gives."""
    data, _ = corpus
    wav = DataDir(data).wav_scp
    utts = sorted(wav)
    spk = DataDir(data).utt2spk
    speakers = sorted(set(spk.values()))
    labels = [speakers.index(spk[u]) for u in utts]
    batch = 3 if per_shard == 3 else 2
    kaldi = TrainingSet(utts, [wav[u] for u in utts], labels, SEGMENT, 24)
    sampler = ShardedBatchSampler(labels, batch, seed=11, utt_keys=utterance_keys(utts))
    stream = _stream(_shards(corpus, per_shard), batch, workers)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        from_kaldi = {(utts[i], int(kaldi[(i, s)]["start_frame"])) for b in sampler for i, s in b}
        from_shards = _epoch(stream, epoch, workers=workers)
        flat = [x for b in from_shards for x in b]
        assert len(flat) == len(set(flat)) == 12 and set(flat) == from_kaldi
        if epoch == 0:
            first = from_kaldi
    assert first != from_kaldi  # crops are redrawn every epoch
    ex = stream.examples.example(sf.read(wav[utts[0]], dtype="float32")[0], 0, utts[0], 5)
    again = kaldi.example(kaldi.load(0), 0, utts[0], 5)
    assert torch.equal(ex["wav"], again["wav"])  # the shard's bytes decode to the same audio


def test_round_robin_passes_over_exhausted_workers():
    assert round_robin([3, 1, 2], 6).tolist() == [0, 1, 2, 0, 2, 0]
    assert round_robin([3, 1, 2], 4).tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_on_shards_replays_the_rest_of_the_epoch_exactly(corpus, workers):
    # Shards of 5, 5, 2 utterances and batches of 2: the workers hold 3 and 2 (or 6) batches, so the
    # DataLoader's turn order passes over an exhausted worker.
    stream = _stream(_shards(corpus, 5), 2, workers, buffer=3)
    full = _epoch(stream, 1, workers=workers)
    assert len(full) == stream.batches_per_epoch and len(full) >= 5
    for start in range(1, len(full) + 1):
        assert _epoch(stream, 1, start, workers=workers) == full[start:]
    assert _epoch(stream, 2, workers=workers) != full


def test_ranks_get_disjoint_shards_and_equal_batch_counts(corpus):
    shard_dir = _shards(corpus, 3)  # 4 shards of 3
    ranks = [_stream(shard_dir, 2, world=2, rank=r) for r in (0, 1)]
    for epoch in (0, 1):
        got = [_epoch(r, epoch) for r in ranks]
        assert len(got[0]) == len(got[1]) == ranks[0].batches_per_epoch == 3
        utts = [{u for b in g for u, _ in b} for g in got]
        assert not utts[0] & utts[1]
    with pytest.raises(SvmixError, match="4 shard.*5 processes"):
        _stream(shard_dir, 1, world=5)


def test_training_on_shards_resumes_exactly(corpus, tmp_path):
    from svmix.train.trainer import train

    model = {"segment_seconds": 0.5, "hidden": 16, "embed_dim": 8, "frontend": {"channels": 8},
             "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8}, "backend": {"name": "linear"}}

    def config(steps):
        return {"model": model, "train": {"batch_size": 2, "max_steps": steps, "log_every": 1, "val_every": 100,
                                          "checkpoint_every": 100, "num_workers": 2, "seed": 5, "augment": None,
                                          "kd": {"name": None}}}

    shard_dir = _shards(corpus, 5)  # 5 batches per epoch: the resume at step 3 is mid-epoch 0
    train(config(6), shard_dir, tmp_path / "straight", progress=False)
    train(config(3), shard_dir, tmp_path / "resumed", progress=False)
    train(config(6), shard_dir, tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 6 and a["epoch"] == b["epoch"] == 1
    for key in a["objective"]:
        assert torch.equal(a["objective"][key], b["objective"][key]), key


def test_extraction_reads_shards_as_the_kaldi_dir(corpus, tmp_path, one_thread):
    import kaldiio

    from svmix.checkpoint import save_model
    from svmix.inference.extract import extract_embeddings, list_inputs
    from svmix.models import build_model

    data, _ = corpus
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", build_model({"segment_seconds": 0.5, "num_eval_segments": 2, "hidden": 16,
                                                    "embed_dim": 8, "frontend": {"channels": 8},
                                                    "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8},
                                                    "backend": {"name": "linear"}}))
    shard_dir = _shards(corpus, 5)
    inputs = list_inputs(data=shard_dir)
    assert sorted(inputs) == sorted(DataDir(data).wav_scp) and all(v.startswith("shard-member:") for v in inputs.values())
    for name, source in (("kaldi", data), ("shards", shard_dir)):
        extract_embeddings(tmp_path / "model.pt", list_inputs(data=source), tmp_path / name, num_workers=0,
                           chunk_size=5, progress=False)
    a, b = (dict(kaldiio.load_scp(str(tmp_path / n / "xvector.scp"))) for n in ("kaldi", "shards"))
    assert a.keys() == b.keys() and len(a) == 12
    for utt in a:
        assert np.array_equal(a[utt], b[utt]), utt


def test_bad_shard_dirs_are_one_line_errors(corpus, tmp_path):
    import json
    import shutil

    good = _shards(corpus, 5)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "shard.list").write_text("".join(f"shards/{p.split('/')[-1]}\n" for p in
                                            (good / "shard.list").read_text().split()))  # relative lines
    manifest = json.loads((bad / "shards.json").read_text())
    for s in manifest["shards"]:
        s["num_utts"] += 2  # promises 18 utterances, utt2spk lists 12
    (bad / "shards.json").write_text(json.dumps(manifest))
    with pytest.raises(SvmixError, match="hold 18 utterances, utt2spk lists 12"):
        read_shard_index(bad)
    (bad / "utt2spk").write_text((bad / "utt2spk").read_text() + "".join(f"x{i} spk00\n" for i in range(6)))
    stream = _stream(bad, 2)  # the index now agrees, the tars do not
    with pytest.raises(SvmixError, match="fewer utterances than shards.json"):
        _epoch(stream, 0)
    (bad / "shards.json").unlink()  # indexed from the tars now: the extra utt2spk lines are reported
    with pytest.raises(SvmixError, match=r"utt2spk: utterance 'x0' is in no listed shard \(6 extra, 0 missing\)"):
        read_shard_index(bad)


def _wespeaker_copy(good, dest):
    """A shard list as WeSpeaker writes it: shard.list (relative lines) and the tars, no svmix files."""
    import shutil

    shutil.copytree(good / "shards", dest / "shards")
    (dest / "shard.list").write_text("".join(f"shards/{p.split('/')[-1]}\n" for p in
                                             (good / "shard.list").read_text().split()))
    return dest


def test_wespeaker_shard_lists_without_svmix_files_read_as_svmix_shards(corpus, tmp_path, monkeypatch):
    """No shards.json, utt2spk or spk2utt: the tars' headers give the same index, the same crops, and
    the index is cached per tar (size, mtime) so a restart reads no tar."""
    import os

    import svmix.data.shards as shards

    good = _shards(corpus, 5)
    wes = _wespeaker_copy(good, tmp_path / "wes")
    want, got = read_shard_index(good), read_shard_index(wes)
    assert [p.split("/")[-1] for p in got.paths] == [p.split("/")[-1] for p in want.paths]
    assert got.counts.tolist() == want.counts.tolist() and got.utt2spk == want.utt2spk
    assert _epoch(_stream(wes, 3), 1) == _epoch(_stream(good, 3), 1)

    def no_tar_reads(*args, **kwargs):
        raise AssertionError("a cached shard index was read again")

    monkeypatch.setattr(shards, "iter_shard", no_tar_reads)
    assert read_shard_index(wes).utt2spk == want.utt2spk  # from the scan cache
    tar = got.paths[1]
    st = os.stat(tar)
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # a changed tar is read again
    with pytest.raises(AssertionError, match="read again"):
        read_shard_index(wes)
    monkeypatch.undo()
    (wes / "utt2spk").write_text((good / "utt2spk").read_text())  # a utt2spk beside it must agree
    assert read_shard_index(wes).utt2spk == want.utt2spk


def test_wespeaker_shards_may_hold_flac_members(corpus, tmp_path):
    """WeSpeaker keeps the source file's extension: a shard of .flac members reads as its .wav twin."""
    import io

    good = _shards(corpus, 5)
    first = (good / "shard.list").read_text().split()[0]
    (tmp_path / "shards").mkdir()
    with tarfile.open(first) as src, tarfile.open(tmp_path / "shards" / "a.tar", "w") as dst:
        for member in src:
            body = src.extractfile(member).read()
            if member.name.endswith(".wav"):
                wav, sr = sf.read(io.BytesIO(body), dtype="int16")
                buf = io.BytesIO()
                sf.write(buf, wav, sr, format="FLAC")
                body, member.name = buf.getvalue(), member.name[:-4] + ".flac"
            member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    (tmp_path / "shard.list").write_text("shards/a.tar\n")
    from svmix.data.shards import decode_wav, iter_shard

    want = {u: decode_wav(a, u) for u, _, a in iter_shard(first)}
    got = {u: decode_wav(a, u) for u, _, a in iter_shard(str(tmp_path / "shards" / "a.tar"))}
    assert got.keys() == want.keys() and len(got) == 5
    for utt in want:
        assert np.array_equal(got[utt], want[utt]), utt
    assert read_shard_index(tmp_path).counts.tolist() == [5]


@pytest.mark.parametrize("damage", ["not json", '{"format": "other"}', "entry", "pair", "size", "tars"])
def test_a_damaged_shard_scan_cache_is_rescanned_not_trusted(corpus, tmp_path, damage):
    """Generated damage to the shard scan cache: the index is rebuilt from the tars, never an error."""
    import json

    from svmix.data.audio import scan_cache_path

    good = _shards(corpus, 5)
    wes = _wespeaker_copy(good, tmp_path / "wes")
    want = read_shard_index(wes)
    cache = scan_cache_path(wes, "shard-scan", ".json")
    stored = json.loads(open(cache).read())
    first = next(iter(stored["tars"]))
    if damage in ("not json", '{"format": "other"}'):
        text = damage
    else:
        if damage == "entry":
            stored["tars"][first] = ["not", "a", "mapping"]
        elif damage == "pair":
            stored["tars"][first]["utts"][0] = ["only-one"]
        elif damage == "size":
            stored["tars"][first]["size"] = str(stored["tars"][first]["size"])
        else:
            stored["tars"] = []
        text = json.dumps(stored)
    open(cache, "w").write(text)
    got = read_shard_index(wes)
    assert got.utt2spk == want.utt2spk and got.counts.tolist() == want.counts.tolist()


@pytest.mark.parametrize("case", range(6))
def test_wespeaker_shard_lists_with_bad_content_are_one_line_errors(corpus, tmp_path, case):
    """Generated damage to a shard list without shards.json: each is one line naming the file."""
    good = _shards(corpus, 5)
    wes = _wespeaker_copy(good, tmp_path / "wes")
    tars = sorted((wes / "shards").glob("*.tar"))
    rng = np.random.default_rng(case)
    victim = tars[int(rng.integers(len(tars)))]
    utts = sorted(read_shard_index(good).utt2spk)
    kind = ["truncated", "missing", "duplicate", "speaker", "extra", "orphan"][case]
    if kind == "truncated":
        data = victim.read_bytes()
        victim.write_bytes(data[: int(rng.integers(600, len(data) - 1100))])
        pattern = f"{victim}: (damaged|cannot read) shard|{victim}: utterance '.*' has no \\.(wav|spk) member"
    elif kind == "missing":
        victim.unlink()
        pattern = f"{victim}: shard not found"
    elif kind == "duplicate":
        (wes / "shard.list").write_text((wes / "shard.list").read_text() + f"shards/{victim.name}\n")
        pattern = "utterance '.*' is also in another shard"
    elif kind == "speaker":
        utt = utts[int(rng.integers(len(utts)))]
        (wes / "utt2spk").write_text((good / "utt2spk").read_text().replace(f"{utt} ", f"{utt} nobody_", 1))
        pattern = f"{wes / 'utt2spk'}: utterance '{utt}' has speaker 'nobody_.*', its shard says"
    elif kind == "extra":
        (wes / "utt2spk").write_text((good / "utt2spk").read_text() + "ghost spk00\n")
        pattern = "utterance 'ghost' is in no listed shard"
    else:
        lines = (good / "utt2spk").read_text().splitlines(keepends=True)
        drop = int(rng.integers(len(lines)))
        (wes / "utt2spk").write_text("".join(lines[:drop] + lines[drop + 1:]))
        pattern = f"utterance '{lines[drop].split()[0]}' is missing from it"
    with pytest.raises(SvmixError, match=pattern) as err:
        read_shard_index(wes)
    assert "\n" not in str(err.value)
