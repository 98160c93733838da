"""Audio shards: a data directory as tar files of about 1,000 utterances, read sequentially.

Layout (WeSpeaker's, so its users can reuse the shards): each ``shards/shard-NNNNNN.tar`` holds, per
utterance, ``<utt>.spk`` (the speaker id as UTF-8 text) and ``<utt>.wav`` (the audio bytes), and
``shard.list`` lists the tar paths, one per line (absolute when written; a relative line is relative
to the list's directory). svmix adds ``shards.json`` (utterances per shard, so that every DDP rank
gets the same number of batches without reading the tars), ``utt2spk`` and ``spk2utt``. A shard list
without them (one WeSpeaker wrote) is indexed from the tars' headers once and the index is cached
(:func:`read_shard_index`).

Reading for training (:class:`ShardStream`): every epoch the shards are permuted by ``(seed,
epoch)``, rank ``r`` of ``W`` takes shards ``r::W`` of the permutation and its DataLoader worker
``w`` of ``N`` takes ``w::N`` of those. A worker reads its shards in order through a shuffle buffer of
:data:`SHUFFLE_BUFFER` utterances and batches what leaves the buffer. Each utterance's crop and
augmentation draws come from :func:`svmix.data.index.example_seeds` of ``(seed, epoch,
utterance)``, as for a Kaldi data directory, so both give the same crop of every utterance they
serve in an epoch. Every rank yields the same number of batches (the smallest rank's count of full
worker batches).

Resume: with the same number of ranks and workers, a run resumed at batch ``J`` of an epoch yields
exactly batches ``J ..`` of the uninterrupted run, in the same order. Each worker re-reads the tar
headers of its share of the first ``J`` batches (no audio is decoded) to rebuild the buffer state.
With another number of ranks or workers, the epoch's shard split changes: the resumed run skips the
first ``J`` batches of the new split, so within that epoch some utterances are seen twice and others
not at all; later epochs are unaffected.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from svmix.data.audio import check_waveform, load_audio, scan_audio, scan_cache_path
from svmix.data.index import example_seeds, utterance_keys
from svmix.data.datadir import DataDir, read_kv, spk2utt_from_utt2spk, text_lines, write_kv
from svmix.errors import AudioError, SvmixError
from svmix.utils.fileio import atomic_open, atomic_path, read_json, write_json
from svmix.utils.logging import get_logger
from svmix.utils.progress import track

SHARD_LIST, MANIFEST, PLAN = "shard.list", "shards.json", ".plan.json"
FORMAT = "svmix-shards-1"
SHUFFLE_BUFFER = 2000  # utterances per DataLoader worker (about two shards)
AUDIO_MEMBERS = ("wav", "flac")  # the audio member's extension (WeSpeaker keeps the source file's)

_log = get_logger("shards")


def is_shard_dir(path: os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, SHARD_LIST))


# ----------------------------------------------------------------------------- writing

def _wav_bytes(path: str, utt: str) -> bytes:
    """The file's bytes when it is a RIFF/WAVE file, else the audio re-encoded as 16 kHz 16-bit WAV."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return data
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, load_audio(path, utt), 16000, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(data_dir: os.PathLike, out_dir: os.PathLike, utts_per_shard: int = 1000, seed: int = 0,
                 progress: bool = False) -> Dict:
    """Write ``data_dir`` as shards in ``out_dir`` (utterances in a ``seed``-shuffled order, so a shard
    mixes speakers); returns the manifest. Every file's header is checked first; a rerun after a kill
    keeps the shards already written for the same plan."""
    if utts_per_shard < 1:
        raise SvmixError(f"--utts-per-shard {utts_per_shard}: must be at least 1")
    data = DataDir(data_dir)
    wav_scp, utt2spk = data.wav_scp, data.utt2spk
    missing = [u for u in wav_scp if u not in utt2spk]
    if missing:
        raise SvmixError(f"{data.file('utt2spk')}: no speaker for utterance '{missing[0]}'")
    if not wav_scp:
        raise SvmixError(f"{data.file('wav.scp')}: no utterances")
    _, bad = scan_audio(wav_scp, progress=progress, cache=scan_cache_path(data_dir))
    if bad:
        raise AudioError(f"{next(iter(bad.values()))} ({len(bad)} bad file(s); svmix-validate-data --fix drops them)")
    utts = sorted(wav_scp)
    order = [utts[i] for i in np.random.default_rng(seed).permutation(len(utts))]
    groups = [order[i:i + utts_per_shard] for i in range(0, len(order), utts_per_shard)]
    digest = hashlib.sha256()
    for u in order:
        digest.update(f"{u} {wav_scp[u]} {utt2spk[u]}\n".encode("utf-8", "surrogateescape"))
    plan = {"format": FORMAT, "utts_per_shard": utts_per_shard, "seed": seed, "inputs_sha256": digest.hexdigest()}
    out = Path(out_dir)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    plan_file = out / PLAN
    if not plan_file.is_file() or read_json(plan_file) != plan:  # another plan's shards are not reused
        for stale in shard_dir.glob("shard-*.tar"):
            stale.unlink()
        for name in (SHARD_LIST, MANIFEST):
            (out / name).unlink(missing_ok=True)
        write_json(plan_file, plan)
    shards = []
    for k, group in enumerate(track(groups, desc="writing shards", unit="shard", enabled=progress)):
        path = shard_dir / f"shard-{k:06d}.tar"
        if not path.is_file():
            with atomic_path(path) as tmp:
                with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                    for utt in group:
                        _add_member(tar, f"{utt}.spk", utt2spk[utt].encode("utf-8"))
                        _add_member(tar, f"{utt}.wav", _wav_bytes(wav_scp[utt], utt))
        shards.append({"path": f"shards/{path.name}", "num_utts": len(group)})
    write_kv(out / "utt2spk", ((u, utt2spk[u]) for u in utts))
    write_kv(out / "spk2utt", ((s, " ".join(us)) for s, us in spk2utt_from_utt2spk({u: utt2spk[u] for u in utts}).items()))
    manifest = {**plan, "source": str(Path(data_dir).resolve()), "num_utts": len(utts), "shards": shards}
    write_json(out / MANIFEST, manifest)
    with atomic_open(out / SHARD_LIST) as f:  # last: its presence marks a complete shard dir
        f.writelines(f"{(out / s['path']).resolve()}\n" for s in shards)
    return manifest


# ----------------------------------------------------------------------------- index

@dataclass
class ShardIndex:
    root: Path
    paths: List[str]        # the tars, in shard.list order
    counts: np.ndarray      # utterances per tar
    utt2spk: Dict[str, str]

    @property
    def num_utts(self) -> int:
        return int(self.counts.sum())


def read_shard_index(path: os.PathLike, progress: bool = False) -> ShardIndex:
    """The shard list of a shard directory, with the utterance count of every shard.

    The counts come from ``shards.json`` (svmix-make-shards). A shard list written by another tool
    (WeSpeaker's ``shard.list``, same tar layout) has none: every tar's headers are then read once
    (:func:`scan_shards`; no audio is decoded) and the result is kept in a scan cache, keyed by each
    tar's size and modification time. The speakers come from the tars' ``.spk`` members; a
    ``utt2spk`` beside the list must agree with them."""
    root = Path(path)
    list_file = root / SHARD_LIST
    paths = []
    for lineno, line in text_lines(str(list_file)):
        if line.strip():
            p = Path(line.strip())
            paths.append(str(p if p.is_absolute() else root / p))
    if not paths:
        raise SvmixError(f"{list_file}: no shards listed")
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        counts_list, utt2spk = scan_shards(paths, cache=scan_cache_path(root, "shard-scan", ".json"),
                                           progress=progress)
        if (root / "utt2spk").is_file():
            _check_utt2spk(read_kv(root / "utt2spk"), utt2spk, root / "utt2spk")
        return ShardIndex(root, paths, np.array(counts_list, dtype=np.int64), utt2spk)
    manifest = read_json(manifest_file)
    counts = {Path(s["path"]).name: int(s["num_utts"]) for s in manifest.get("shards", [])}
    unknown = [p for p in paths if Path(p).name not in counts]
    if unknown:
        raise SvmixError(f"{list_file}: shard {unknown[0]} is not in {manifest_file}")
    utt2spk = read_kv(root / "utt2spk")
    index = ShardIndex(root, paths, np.array([counts[Path(p).name] for p in paths], dtype=np.int64), utt2spk)
    if index.num_utts != len(utt2spk):
        raise SvmixError(f"{root}: the listed shards hold {index.num_utts} utterances, utt2spk lists {len(utt2spk)}")
    return index


def _check_utt2spk(listed: Dict[str, str], scanned: Dict[str, str], file: Path) -> None:
    for utt, spk in scanned.items():
        if listed.get(utt, spk) != spk:
            raise SvmixError(f"{file}: utterance '{utt}' has speaker '{listed[utt]}', its shard says '{spk}'")
    extra = [u for u in listed if u not in scanned]
    missing = [u for u in scanned if u not in listed]
    if extra or missing:
        utt, where = (extra[0], "is in no listed shard") if extra else (missing[0], "is missing from it")
        raise SvmixError(f"{file}: utterance '{utt}' {where} ({len(extra)} extra, {len(missing)} missing)")


SHARD_SCAN_FORMAT = "svmix-shard-scan-1"


def _read_shard_scan(cache: os.PathLike) -> Dict[str, Dict]:
    """The tar entries of a shard scan cache; an absent, foreign or damaged cache is empty (as the
    audio-scan cache: rescan everything rather than trust part of it)."""
    try:
        stored = read_json(cache) if os.path.isfile(cache) else None
    except (SvmixError, OSError, ValueError):
        return {}
    if not isinstance(stored, dict) or stored.get("format") != SHARD_SCAN_FORMAT:
        return {}
    tars = stored.get("tars")
    well_formed = isinstance(tars, dict) and all(
        isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("mtime_ns"), int)
        and isinstance(e.get("utts"), list)
        and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in e["utts"])
        for e in tars.values())
    return tars if well_formed else {}


def scan_shards(paths: Sequence[str], cache: Optional[os.PathLike] = None,
                progress: bool = False) -> Tuple[List[int], Dict[str, str]]:
    """``(utterances per tar, utt -> speaker)`` of the tars ``paths`` from their headers and ``.spk``
    members. With ``cache`` (a JSON file), a tar's result is reused while its size and modification
    time are unchanged; the cache is rewritten atomically when a tar was read, and failing to write
    it is only a warning (it is a shortcut, never the truth)."""
    known = _read_shard_scan(cache) if cache is not None else {}
    counts: List[int] = []
    utt2spk: Dict[str, str] = {}
    updated = False
    for path in track(paths, desc="indexing shards", unit="shard", enabled=progress):
        try:
            st = os.stat(path)
        except OSError:
            raise SvmixError(f"{path}: shard not found") from None
        key = os.path.abspath(path)
        hit = known.get(key)
        if hit is not None and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
            pairs = hit["utts"]
        else:
            pairs = [[utt, spk] for utt, spk, _ in iter_shard(path, read_audio=False)]
            known[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "utts": pairs}
            updated = True
        for utt, spk in pairs:
            if utt in utt2spk:
                raise SvmixError(f"{path}: utterance '{utt}' is also in another shard")
            utt2spk[utt] = spk
        counts.append(len(pairs))
    if cache is not None and updated:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
            with atomic_open(cache) as f:  # compact: a million utterances is tens of MB
                json.dump({"format": SHARD_SCAN_FORMAT, "tars": known}, f, separators=(",", ":"))
        except OSError as e:
            _log.warning("could not write the shard scan cache %s (%s)", cache, e.strerror or e)
    return counts, utt2spk


def iter_shard(path: str, read_audio: bool = True) -> Iterator[Tuple[str, str, Union[bytes, Tuple[str, int, int]]]]:
    """``(utt, speaker, audio)`` of one tar in order; ``audio`` is the ``.wav`` (or ``.flac``) bytes, or with
    ``read_audio`` False its ``(tar, offset, size)`` (the data are skipped, not read)."""
    try:
        tar = tarfile.open(path, "r:")
    except (OSError, tarfile.TarError) as e:
        raise SvmixError(f"{path}: cannot read shard ({' '.join(str(e).split())})") from None
    with tar:
        pending: Dict[str, Dict[str, object]] = {}
        try:
            for member in tar:
                if not member.isfile() or "." not in member.name:
                    continue
                utt, ext = member.name.rsplit(".", 1)
                entry = pending.setdefault(utt, {})
                if ext == "spk":
                    entry["spk"] = tar.extractfile(member).read().decode("utf-8").strip()
                elif ext in AUDIO_MEMBERS:
                    entry["wav"] = (tar.extractfile(member).read() if read_audio
                                    else (path, member.offset_data, member.size))
                if "spk" in entry and "wav" in entry:
                    del pending[utt]
                    yield utt, entry["spk"], entry["wav"]
        except (OSError, tarfile.TarError, UnicodeDecodeError) as e:
            raise SvmixError(f"{path}: damaged shard ({' '.join(str(e).split())})") from None
        if pending:
            utt, entry = next(iter(pending.items()))
            raise SvmixError(f"{path}: utterance '{utt}' has no {'.wav' if 'spk' in entry else '.spk'} member"
                             + (" (or .flac)" if "spk" in entry else ""))


def decode_wav(audio: Union[bytes, Tuple[str, int, int]], utt: str) -> np.ndarray:
    """16 kHz mono float32 from shard audio (bytes, or a ``(tar, offset, size)`` reference)."""
    import soundfile as sf

    if not isinstance(audio, bytes):
        path, offset, size = audio
        with open(path, "rb") as f:
            f.seek(offset)
            audio = f.read(size)
    name = f"utterance '{utt}' (shard)"
    try:
        wav, sr = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{name}: cannot read audio ({' '.join(str(e).split())})") from None
    return check_waveform(wav, sr, name)


# ----------------------------------------------------------------------------- reading for extraction

MEMBER_PREFIX = "shard-member:"


def member_ref(tar: str, offset: int, size: int) -> str:
    """A string naming one ``.wav`` member of a tar (where a wav.scp would hold a path)."""
    return f"{MEMBER_PREFIX}{offset}:{size}:{tar}"


def is_member_ref(path: str) -> bool:
    return str(path).startswith(MEMBER_PREFIX)


def load_member(ref: str, utt: str) -> np.ndarray:
    """The audio of a :func:`member_ref`, as :func:`svmix.data.audio.load_audio` reads a file."""
    offset, size, tar = ref[len(MEMBER_PREFIX):].split(":", 2)
    try:
        return decode_wav((tar, int(offset), int(size)), utt)
    except OSError as e:
        raise AudioError(f"utterance '{utt}' ({tar}): cannot read shard ({e.strerror or e})") from None


def shard_members(shard_dir: os.PathLike, progress: bool = False) -> "Dict[str, str]":
    """utterance id -> :func:`member_ref` of every utterance of a shard directory, in shard order (tar
    headers are read, audio is not), so that extraction reads each tar front to back."""
    index = read_shard_index(shard_dir)
    members: Dict[str, str] = {}
    for path in track(index.paths, desc="listing shards", unit="shard", enabled=progress):
        for utt, _, (tar, offset, size) in iter_shard(path, read_audio=False):
            if utt in members:
                raise SvmixError(f"{path}: utterance '{utt}' is also in another shard")
            members[utt] = member_ref(tar, offset, size)
    return members


# ----------------------------------------------------------------------------- reading for training

def round_robin(counts: Sequence[int], total: int) -> np.ndarray:
    """The worker of each of the first ``total`` batches when workers with ``counts`` batches are read
    in turn, an exhausted worker being passed over (the order of a PyTorch DataLoader)."""
    left = list(counts)
    order = []
    while len(order) < total:
        active = [w for w in range(len(left)) if left[w] > 0]
        if not active:
            raise ValueError("fewer batches than asked for")
        for w in active:
            if len(order) == total:
                break
            order.append(w)
            left[w] -= 1
    return np.array(order, dtype=np.int64)


class ShardStream(IterableDataset):
    """Batches of training examples read from shards (see the module docstring for the order and the
    resume guarantee). ``batch_size`` is this rank's; ``examples`` makes each example
    (:class:`svmix.train.dataset.CropExamples`); ``speakers`` gives the labels."""

    def __init__(self, index: ShardIndex, speakers: Sequence[str], examples, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, buffer_size: int = SHUFFLE_BUFFER):
        if len(index.paths) < world_size:
            raise SvmixError(f"{index.root}: {len(index.paths)} shard(s) for {world_size} processes; "
                             "write more, smaller shards (--utts-per-shard)")
        self.index = ShardIndex(index.root, index.paths, index.counts, {})  # workers need no utterance table
        self.examples = examples
        self.label_of = {s: i for i, s in enumerate(speakers)}
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.num_streams = max(1, num_workers)
        self.buffer_size = buffer_size
        self.epoch, self.start_batch = 0, 0
        self._plans: Dict[int, Tuple[List[List[List[int]]], int]] = {}
        self.buffer: List[Tuple[str, int, object]] = []
        if self.batches_per_epoch < 1:
            raise SvmixError(f"{index.root}: no rank gets a full batch of {batch_size} from its shards")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def plan(self, epoch: int) -> Tuple[List[List[List[int]]], int]:
        """``(shards[rank][stream], batches per rank)`` of ``epoch``."""
        if epoch not in self._plans:
            perm = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(len(self.index.paths))
            shards = [[perm[r::self.world_size][w::self.num_streams].tolist() for w in range(self.num_streams)]
                      for r in range(self.world_size)]
            per_rank = [sum(int(self.index.counts[s].sum()) // self.batch_size for s in rank) for rank in shards]
            self._plans = {epoch: (shards, min(per_rank))}
        return self._plans[epoch]

    def stream_batches(self, epoch: int) -> List[int]:
        shards, _ = self.plan(epoch)
        return [int(self.index.counts[s].sum()) // self.batch_size for s in shards[self.rank]]

    @property
    def batches_per_epoch(self) -> int:
        return self.plan(self.epoch)[1]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def _items(self, shards: Sequence[int], rng: np.random.Generator, skip: int):
        """Utterances of ``shards`` through the shuffle buffer: ``(utt, label, audio)``; the first
        ``skip`` are produced without reading their audio."""
        buffer = self.buffer = []
        produced = 0
        for s in shards:
            for utt, spk, audio in iter_shard(self.index.paths[s], read_audio=produced + len(buffer) >= skip):
                if spk not in self.label_of:
                    raise SvmixError(f"{self.index.paths[s]}: utterance '{utt}' has speaker '{spk}', "
                                     f"which {self.index.root / 'utt2spk'} does not list")
                item = (utt, self.label_of[spk], audio)
                if len(buffer) < self.buffer_size:
                    buffer.append(item)
                    continue
                j = int(rng.integers(len(buffer)))
                out, buffer[j] = buffer[j], item
                produced += 1
                yield out
        for j in rng.permutation(len(buffer)).tolist():
            produced += 1
            yield buffer[j]
            buffer[j] = None

    def other_speech(self, rng: np.random.Generator, count: int, exclude_label: int) -> List[np.ndarray]:
        """Babble sources: crops of utterances of other speakers now in this worker's shuffle buffer."""
        pool = [x for x in self.buffer if x is not None and x[1] != exclude_label] or \
            [x for x in self.buffer if x is not None]
        return [self.examples.crop(decode_wav(pool[int(rng.integers(len(pool)))][2], "babble source"), rng)[0]
                for _ in range(count)] if pool else []

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.num_streams:
            raise SvmixError(f"the shard stream was planned for {self.num_streams} DataLoader worker(s), "
                             f"runs in {workers}")
        shards, total = self.plan(self.epoch)
        start = min(self.start_batch, total)
        order = round_robin(self.stream_batches(self.epoch), total)
        # The DataLoader asks worker 0 first; map it to the stream whose turn it is at ``start``.
        stream = (worker + (int(order[start]) if start < total else 0)) % workers
        skip, take = int((order[:start] == stream).sum()), int((order[start:] == stream).sum())
        if take == 0:
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, stream])
        b = self.batch_size
        batch: List[Dict[str, torch.Tensor]] = []
        for n, (utt, label, audio) in enumerate(self._items(shards[self.rank][stream], rng, skip * b)):
            if n < skip * b:
                continue
            seed = int(example_seeds(self.seed, self.epoch, utterance_keys([utt]))[0])
            example = self.examples.example(decode_wav(audio, utt), label, utt, seed)
            example["utt"] = utt
            batch.append(example)
            if len(batch) == b:
                yield default_collate(batch)
                batch, take = [], take - 1
                if take == 0:
                    return
        # Fewer utterances than shards.json promised: a rank would run short of batches and DDP hang.
        raise SvmixError(f"{self.index.root}: the shards of stream {stream} hold fewer utterances than "
                         f"{MANIFEST} says; rewrite them with svmix-make-shards")
