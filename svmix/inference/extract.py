"""Stage 4: embedding extraction into Kaldi ``xvector.ark`` / ``xvector.scp``.

Each utterance is stored under its id as its (num_segments, D) segment-embedding matrix, so that
scoring can apply the segment-pair rule (docs/method.md §Evaluation); with ``average`` it is one 1-D embedding,
the L2-normalised mean of its L2-normalised segment embeddings.

The work runs on the resumable sharded-job engine (:mod:`svmix.utils.sharded_job`). It is split
into chunks of ``chunk_size`` consecutive utterances. A finished chunk is published atomically under
``OUT/chunks/`` (an ark, then a JSON done-marker), so a killed run resumes by redoing only unfinished
chunks. Chunks run as ``nj`` local processes or as torchrun ranks, and the last process to finish
merges. The merge concatenates the chunk arks in input order into ``OUT/xvector.ark`` and writes
``OUT/xvector.scp``, ``OUT/quality.tsv`` (each utterance's duration and embedding norm before length
normalisation, for quality-aware calibration; docs/conventions.md), ``OUT/extract_config.json``
(what the output depends on) and, last,
``OUT/extract_stats.json``, which marks the directory complete. Until that merge, the files of an
earlier successful run stay untouched.

Identical results: the segments of one chunk are embedded in batches of ``batch_size`` that never
span two chunks, so a chunk's batches do not depend on which chunks were left to do. A resumed run
keeps the batch size it started with (the plan's). Its ark is therefore byte-identical to that of an
uninterrupted run, after a kill or a disk-full stop alike. With another thread count (``--nj``,
``--num-threads``) or another machine, results can differ in the last float bits.
"""
from __future__ import annotations

import functools
import hashlib
import io
import itertools
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np
import torch

from svmix.calibration import QUALITY_FILE, embedding_norm, write_quality
from svmix.checkpoint import read_checkpoint, resolve_checkpoint_path
from svmix.data.audio import SAMPLE_RATE, load_audio, scan_audio
from svmix.data.shards import is_member_ref, is_shard_dir, load_member, shard_members
from svmix.data.datadir import DataDir, read_kv
from svmix.errors import AudioError, SvmixError
from svmix.inference.embedder import (check_runtime_options, embed_stream, exported_model_path, load_embedder,
                                      num_segments)
from svmix.inference.segments import evaluation_inputs, mean_embedding
from svmix.models.fast import kernels as cpu_kernels
from svmix.utils.fileio import atomic_open, atomic_path, check_free_space, read_json, sha256_file, write_json
from svmix.utils.logging import get_logger
from svmix.utils.progress import Progress
from svmix.utils.sharded_job import JobLayout, ShardedJob, Worker, naming_file

ARK, SCP, STATS, CONFIG = "xvector.ark", "xvector.scp", "extract_stats.json", "extract_config.json"
CHUNK_DIR = "chunks"
LAYOUT = JobLayout(plan_file=f"{CHUNK_DIR}/plan", unit_dir=CHUNK_DIR, unit_name="xvector.{:06d}",
                   data_suffix=".ark")
TOOL = "svmix-extract"
AUDIO_EXTENSIONS = (".wav", ".flac")

_log = get_logger("extract")


# ----------------------------------------------------------------------------- inputs

def list_wav_dir(wav_dir: os.PathLike) -> "OrderedDict[str, str]":
    """Every .wav/.flac under ``wav_dir`` (recursively), keyed by relative path without extension."""
    root = Path(wav_dir)
    if not root.is_dir():
        raise SvmixError(f"{root}: audio directory not found")
    utts: "OrderedDict[str, str]" = OrderedDict()
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()):
        utt = path.relative_to(root).with_suffix("").as_posix()
        if len(utt.split()) != 1 or utt != utt.strip():
            raise SvmixError(f"{path}: file name contains whitespace, cannot be an utterance id")
        if utt in utts:
            raise SvmixError(f"{path}: utterance id '{utt}' also used by {utts[utt]}")
        utts[utt] = str(path)
    if not utts:
        raise SvmixError(f"{root}: no .wav or .flac files found")
    return utts


def list_inputs(data: Optional[os.PathLike] = None, wav_scp: Optional[os.PathLike] = None,
                wav_dir: Optional[os.PathLike] = None) -> "OrderedDict[str, str]":
    """utterance id → audio path from exactly one of a data dir (Kaldi, or audio shards: then the paths
    are :func:`svmix.data.shards.member_ref` strings), a wav.scp or an audio directory."""
    given = [x for x in (data, wav_scp, wav_dir) if x is not None]
    if len(given) != 1:
        raise SvmixError("give exactly one of --data, --wav-scp and --wav-dir")
    if data is not None and is_shard_dir(data):
        utts = OrderedDict(shard_members(data))
    elif data is not None:
        utts = DataDir(data).wav_scp
    elif wav_scp is not None:
        utts = read_kv(wav_scp)
    else:
        return list_wav_dir(wav_dir)
    if not utts:
        raise SvmixError(f"{data or wav_scp}: no utterances")
    return utts


# ----------------------------------------------------------------------------- loading

@dataclass
class LoadedUtt:
    pos: int                      # position in the input list
    utt: str
    segments: Optional[np.ndarray]  # distinct segments (U, S); None when the audio is bad
    index: Optional[np.ndarray]   # (num_segments,) rows of ``segments``
    seconds: float
    error: Optional[str] = None


class SegmentDataset(torch.utils.data.Dataset):
    """Reads and segments utterances in DataLoader workers (a one-pass model's whole utterance is its
    one input); bad audio becomes ``error``, not a crash."""

    def __init__(self, items: Sequence[Tuple[int, str, str]], segment_samples: int, num_segments: int,
                 one_pass: bool = False, min_samples: int = 1):
        self.items, self.segment_samples, self.num_segments = items, segment_samples, num_segments
        self.one_pass, self.min_samples = one_pass, min_samples

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> LoadedUtt:
        pos, utt, path = self.items[i]
        try:
            wav = load_member(path, utt) if is_member_ref(path) else load_audio(path, utt)
        except AudioError as e:
            return LoadedUtt(pos, utt, None, None, 0.0, " ".join(str(e).split()))
        try:
            segments, index = evaluation_inputs(wav, self.segment_samples, self.num_segments, self.one_pass,
                                                self.min_samples)
        except ValueError as e:
            return LoadedUtt(pos, utt, None, None, 0.0, f"utterance {utt} ({path}): {e}")
        return LoadedUtt(pos, utt, segments, index, len(wav) / SAMPLE_RATE)


def _unbatched(item: LoadedUtt) -> LoadedUtt:
    return item


# ----------------------------------------------------------------------------- chunks

@dataclass
class ExtractJob:
    """The extraction settings every shard process needs (picklable)."""

    model: str
    out_dir: str
    utts: List[Tuple[str, str]]
    runtime: str = "torch"
    onnx: Optional[str] = None
    average: bool = False
    batch_size: int = 32
    num_workers: int = 2
    device: str = "cpu"
    num_threads: Optional[int] = None
    skip_bad: bool = False
    chunk_size: int = 500
    progress: bool = True
    precision: str = "float32"
    pt2: Optional[str] = None

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    @property
    def num_chunks(self) -> int:
        return (len(self.utts) + self.chunk_size - 1) // self.chunk_size

    def chunk_utts(self, chunk: int) -> List[Tuple[str, str]]:
        return self.utts[chunk * self.chunk_size:(chunk + 1) * self.chunk_size]


def ark_entry(key: str, embedding: np.ndarray) -> Tuple[bytes, int]:
    """One binary Kaldi ark entry for ``key`` and the offset of its data in it (after "<key> ")."""
    entry = io.BytesIO()
    kaldiio.save_ark(entry, {key: embedding})
    return entry.getvalue(), len(key.encode()) + 1


def write_xvectors(out_dir: os.PathLike, embeddings: Iterator[Tuple[str, np.ndarray]]) -> int:
    """Write ``OUT/xvector.ark`` and ``OUT/xvector.scp`` as svmix-extract's merge does (entries in
    the given order, the scp pointing into the ark by absolute path), each atomically; returns the
    number of entries. For tools that make embeddings without a model (``svmix-floor``)."""
    out = Path(out_dir)
    ark_final = (out / ARK).resolve()
    lines: List[str] = []
    (out / SCP).unlink(missing_ok=True)  # an older scp must never point into the new ark
    with atomic_path(ark_final) as tmp:
        with open(tmp, "wb") as dst:
            for key, embedding in embeddings:
                data, offset = ark_entry(key, embedding)
                lines.append(f"{key} {ark_final}:{dst.tell() + offset}\n")
                dst.write(data)
    with atomic_open(out / SCP) as f:
        f.writelines(lines)
    return len(lines)


class ChunkWriter:
    """Collects one chunk's results (in any order) and publishes it once every utterance is in;
    ``add`` and ``skip`` return True when that happened."""

    def __init__(self, ex: ExtractJob, job: ShardedJob, chunk: int):
        self.job, self.chunk = job, chunk
        self.keys = [utt for utt, _ in ex.chunk_utts(chunk)]
        self.embeddings: Dict[str, np.ndarray] = {}
        self.skipped: Dict[str, str] = {}
        self.quality: Dict[str, Tuple[float, float]] = {}  # utt -> (seconds, embedding norm)
        self.audio_seconds = 0.0

    def add(self, utt: str, embedding: np.ndarray, seconds: float, norm: float) -> bool:
        self.embeddings[utt] = embedding
        self.quality[utt] = (round(seconds, 3), norm)
        self.audio_seconds += seconds
        return self._publish_if_complete()

    def skip(self, utt: str, reason: str) -> bool:
        self.skipped[utt] = reason
        return self._publish_if_complete()

    def _publish_if_complete(self) -> bool:
        if len(self.embeddings) + len(self.skipped) < len(self.keys):
            return False
        keys = [k for k in self.keys if k in self.embeddings]
        offsets = []
        with self.job.publish(self.chunk) as unit:
            for key in keys:
                data, offset = ark_entry(key, self.embeddings[key])
                offsets.append(unit.tell() + offset)
                unit.write(data)
            unit.info.update(keys=keys, offsets=offsets, skipped=self.skipped, audio_seconds=self.audio_seconds,
                             seconds=[self.quality[k][0] for k in keys], norms=[self.quality[k][1] for k in keys])
        return True


# ----------------------------------------------------------------------------- one shard

def _shard_device(device: str, slot: int) -> str:
    if device != "cuda":
        return device
    if not torch.cuda.is_available():
        raise SvmixError("--device cuda was requested but CUDA is not available")
    return f"cuda:{slot % torch.cuda.device_count()}"


def run_shard(ex: ExtractJob, job: ShardedJob, chunks: List[int], worker: Worker) -> None:
    """Embed and publish ``chunks`` (the engine's work function). Each chunk is embedded in batches
    of the plan's ``batch_size`` of its own segments only (see the module docstring)."""
    device = _shard_device(ex.device, worker.slot)
    embedder = load_embedder(ex.model, ex.runtime, ex.onnx, device, ex.num_threads, ex.precision, ex.pt2)
    n_seg = num_segments(embedder)
    batch_size = int(job.plan["batch_size"])
    items = [(c * ex.chunk_size + i, utt, path) for c in chunks for i, (utt, path) in enumerate(ex.chunk_utts(c))]
    loader = torch.utils.data.DataLoader(SegmentDataset(items, embedder.segment_samples, n_seg, embedder.one_pass,
                                                        embedder.min_samples), batch_size=None,
                                         num_workers=ex.num_workers, collate_fn=_unbatched)
    writers = {c: ChunkWriter(ex, job, c) for c in chunks}
    several = worker.world * worker.nj > 1
    bar = Progress(total=len(items), desc=f"extract {worker.slot + 1}" if several else "extract", unit="utt",
                   position=worker.slot if several else None, enabled=ex.progress)

    def record(pos: int, chunk_done: bool) -> None:
        bar.update(1)
        if chunk_done:
            del writers[pos // ex.chunk_size]

    def loaded() -> Iterator[Tuple[Tuple[int, str, float], np.ndarray, np.ndarray]]:
        for item in loader:
            if item.error is None:
                yield (item.pos, item.utt, item.seconds), item.segments, item.index
                continue
            if not ex.skip_bad:
                raise SvmixError(item.error)
            _log.warning("skipping bad audio: %s", item.error)
            record(item.pos, writers[item.pos // ex.chunk_size].skip(item.utt, item.error))

    with bar:
        for _, chunk_items in itertools.groupby(loaded(), key=lambda item: item[0][0] // ex.chunk_size):
            for (pos, utt, seconds), embedding in embed_stream(embedder, chunk_items, batch_size):
                stored = mean_embedding(embedding) if ex.average else embedding.astype(np.float32)
                record(pos, writers[pos // ex.chunk_size].add(utt, stored, seconds, embedding_norm(embedding)))


# ----------------------------------------------------------------------------- output directory

def fingerprint(ex: ExtractJob) -> Dict[str, Any]:
    """What the output depends on: a rerun with a different fingerprint starts over."""
    inputs = hashlib.sha256("\n".join(f"{u} {p}" for u, p in ex.utts).encode()).hexdigest()
    onnx = sha256_file(exported_model_path(ex.model, ex.onnx, "onnx")) if ex.runtime == "onnx" else None
    return {"model_sha256": sha256_file(resolve_checkpoint_path(ex.model)), "runtime": ex.runtime,
            "onnx_sha256": onnx, "average": ex.average, "chunk_size": ex.chunk_size,
            "num_utts": len(ex.utts), "inputs_sha256": inputs, "outputs": [ARK, SCP, QUALITY_FILE],
            # float32 adds no key, so outputs written before --precision existed still resume
            **({"precision": ex.precision} if ex.precision != "float32" else {}),
            **({"pt2_sha256": sha256_file(exported_model_path(ex.model, ex.pt2, "pt2"))} if ex.runtime == "pt2" else {})}


def finished_output(fp: Dict[str, Any], job: ShardedJob) -> Optional[Dict[str, Any]]:
    """The stats of a complete output of the same work (``fp``), else None."""
    config, stats = job.out / CONFIG, job.out / STATS
    if config.is_file() and stats.is_file() and read_json(config) == fp:
        return read_json(stats)
    return None


def estimate_bytes(ex: ExtractJob, embed_dim: int, segments: int) -> int:
    """Output size (chunk arks plus the merged ark, which coexist while merging)."""
    rows = 1 if ex.average else segments
    per_utt = 16 + rows * embed_dim * 4 + sum(len(u) for u, _ in ex.utts) / max(1, len(ex.utts))
    return int(2 * per_utt * len(ex.utts))


def merge_chunks(ex: ExtractJob, fp: Dict[str, Any], start: float, num_threads: int,
                 job: ShardedJob) -> Dict[str, Any]:
    """Concatenate the chunk arks in input order into one ark + scp, then write config and stats."""
    out = job.out
    infos = [job.marker(c) for c in range(job.num_units)]
    ark_final = (out / ARK).resolve()
    lines: List[str] = []
    (out / STATS).unlink(missing_ok=True)  # the directory is not complete until the new stats exist
    (out / SCP).unlink(missing_ok=True)  # an older scp must never point into the new ark
    (out / QUALITY_FILE).unlink(missing_ok=True)
    with naming_file(ark_final), atomic_path(ark_final) as tmp:
        with open(tmp, "wb") as dst:
            for c, info in enumerate(infos):
                base = dst.tell()
                with open(job.data_path(c), "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
                lines.extend(f"{k} {ark_final}:{base + o}\n" for k, o in zip(info["keys"], info["offsets"]))
    with naming_file(out / SCP), atomic_open(out / SCP) as f:
        f.writelines(lines)
    with naming_file(out / QUALITY_FILE):
        write_quality(out / QUALITY_FILE, [k for info in infos for k in info["keys"]],
                      [x for info in infos for x in info["seconds"]], [x for info in infos for x in info["norms"]])
    skipped = {u: r for info in infos for u, r in info["skipped"].items()}
    new = [info for c, info in enumerate(infos) if c not in job.resumed]
    audio = sum(info["audio_seconds"] for info in new)
    wall_seconds = time.time() - start
    stats = {"num_utts": sum(len(info["keys"]) for info in new), "audio_seconds": round(audio, 3),
             "wall_seconds": round(wall_seconds, 3), "rtf": round(wall_seconds / audio, 6) if audio else None,
             "runtime": ex.runtime, "precision": ex.precision, "device": ex.device, "num_threads": num_threads,
             "skipped": len(skipped), "skipped_utts": skipped, "total_utts": len(lines),
             "resumed_utts": sum(len(infos[c]["keys"]) for c in job.resumed)}
    with naming_file(out / CONFIG):
        write_json(out / CONFIG, fp)
    with naming_file(out / STATS):
        write_json(out / STATS, stats)
    shutil.rmtree(out / CHUNK_DIR, ignore_errors=True)
    return stats


# ----------------------------------------------------------------------------- driver

def extract_embeddings(model: os.PathLike, utts: "OrderedDict[str, str]", out_dir: os.PathLike, *,
                       runtime: str = "torch", onnx: Optional[os.PathLike] = None, average: bool = False,
                       batch_size: int = 32, num_workers: int = 2, device: str = "cpu",
                       num_threads: Optional[int] = None, nj: int = 1, skip_bad: bool = False,
                       chunk_size: int = 500, progress: bool = True,
                       log_file: Optional[os.PathLike] = None, precision: str = "float32",
                       pt2: Optional[os.PathLike] = None) -> Optional[Dict[str, Any]]:
    """Embed ``utts`` (id → audio path) with the checkpoint ``model`` into ``out_dir``, logging also
    to ``log_file`` once the output is this run's.

    Returns the stats, or None for a torchrun rank that finished before the others (the last
    rank to finish merges). A rerun after a kill continues from the finished chunks. Another run
    on the same ``out_dir`` at the same time is refused (:mod:`svmix.utils.locking`).
    """
    from svmix.train.distributed import launch_env

    if runtime == "torch" and torch.device(device).type == "cpu":
        cpu_kernels.kernels()  # the fast path's first-use build is machine setup, not extraction time
    start = time.time()
    env = launch_env()
    if env.distributed and nj > 1:
        raise SvmixError("--nj cannot be combined with torchrun (WORLD_SIZE > 1)")
    if nj < 1 or chunk_size < 1 or batch_size < 1 or num_workers < 0:
        raise SvmixError("--nj, --chunk-size and --batch-size must be positive, --num-workers >= 0")
    if nj > 1 and num_threads is None:
        num_threads = max(1, (os.cpu_count() or 1) // nj)
    ex = ExtractJob(str(model), str(out_dir), list(utts.items()), runtime, None if onnx is None else str(onnx),
                    average, batch_size, num_workers, device, num_threads, skip_bad, chunk_size, progress,
                    precision, None if pt2 is None else str(pt2))
    check_runtime_options(runtime, onnx, pt2)
    fp = fingerprint(ex)
    files = {u: p for u, p in utts.items() if not is_member_ref(p)}  # shard audio was checked when written
    _, bad = scan_audio(files, progress and env.rank == 0)  # before touching the output directory
    if bad and not skip_bad:
        raise SvmixError(f"{len(bad)} unusable utterance(s), first: {next(iter(bad.values()))}; "
                         "fix the input or rerun with --skip-bad")
    config = read_checkpoint(model)["config"]
    needed = estimate_bytes(ex, int(config["embed_dim"]), int(config["num_eval_segments"]))
    job = ShardedJob(ex.out, {**fp, "batch_size": batch_size}, ex.num_chunks, LAYOUT, tool=TOOL,
                     what="embeddings", on_other_plan="restart", sticky=("batch_size",),
                     log_file=log_file)
    stats = job.run(functools.partial(run_shard, ex), functools.partial(merge_chunks, ex, fp, start,
                                                                       num_threads or torch.get_num_threads()),
                    finished=functools.partial(finished_output, fp), nj=nj,
                    before_work=lambda job: check_free_space(job.out, needed, "embedding extraction"))
    if stats is None:
        return None
    if job.complete_at_start:
        _log.info("%s is complete already; nothing to do", job.out)
        return stats
    rtf = f"{stats['rtf']:.4f}" if stats["rtf"] is not None else "n/a"
    _log.info("extracted %d utterances (%.1f s of audio) in %.1f s: real-time factor %s; %d skipped; "
              "wrote %s", stats["num_utts"], stats["audio_seconds"], stats["wall_seconds"], rtf,
              stats["skipped"], job.out / SCP)
    return stats
