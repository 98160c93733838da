"""Stage 4: embedding extraction into Kaldi ``xvector.ark`` / ``xvector.scp``.

Each utterance is stored under its id as its (num_segments, D) segment-embedding matrix, so that
scoring can apply the segment-pair rule (docs/method.md §Evaluation); with ``average`` it is one 1-D embedding,
the L2-normalised mean of its L2-normalised segment embeddings.

Work is split into chunks of ``chunk_size`` consecutive utterances (chunk ``c`` belongs to shard
``c % world``). A finished chunk is published atomically under ``OUT/chunks/`` (an ark, then a JSON
marker), so a killed run resumes by redoing only unfinished chunks. When every chunk exists, the
chunk arks are concatenated in input order into ``OUT/xvector.ark`` with ``OUT/xvector.scp``, and
``OUT/extract_stats.json`` marks the directory complete. Shards run as ``nj`` local processes or as
torchrun ranks (env ``RANK`` / ``WORLD_SIZE``); the last one to finish merges.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from svmix.checkpoint import read_checkpoint, resolve_checkpoint_path
from svmix.data.audio import SAMPLE_RATE, load_audio, scan_audio
from svmix.data.datadir import DataDir, read_kv
from svmix.errors import AudioError, SvmixError
from svmix.inference.embedder import embed_stream, load_embedder, num_segments, onnx_model_path
from svmix.inference.segments import distinct_segments, mean_embedding
from svmix.models.fast import kernels as cpu_kernels
from svmix.utils.fileio import atomic_open, atomic_path, check_free_space, read_json, sha256_file, write_json
from svmix.utils.logging import get_logger, setup_logging

ARK, SCP, STATS, CONFIG = "xvector.ark", "xvector.scp", "extract_stats.json", "extract_config.json"
CHUNK_DIR, LOCK = "chunks", ".extract.lock"
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
    """utterance id → audio path from exactly one of a data dir, a wav.scp or an audio directory."""
    given = [x for x in (data, wav_scp, wav_dir) if x is not None]
    if len(given) != 1:
        raise SvmixError("give exactly one of --data, --wav-scp and --wav-dir")
    if data is not None:
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
    """Reads and segments utterances in DataLoader workers; bad audio becomes ``error``, not a crash."""

    def __init__(self, items: Sequence[Tuple[int, str, str]], segment_samples: int, num_segments: int):
        self.items, self.segment_samples, self.num_segments = items, segment_samples, num_segments

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> LoadedUtt:
        pos, utt, path = self.items[i]
        try:
            wav = load_audio(path, utt)
        except AudioError as e:
            return LoadedUtt(pos, utt, None, None, 0.0, " ".join(str(e).split()))
        segments, index = distinct_segments(wav, self.segment_samples, self.num_segments)
        return LoadedUtt(pos, utt, segments, index, len(wav) / SAMPLE_RATE)


def _unbatched(item: LoadedUtt) -> LoadedUtt:
    return item


# ----------------------------------------------------------------------------- chunks

@dataclass
class ExtractJob:
    """Everything a shard process needs (picklable)."""

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

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    @property
    def num_chunks(self) -> int:
        return (len(self.utts) + self.chunk_size - 1) // self.chunk_size

    def chunk_utts(self, chunk: int) -> List[Tuple[str, str]]:
        return self.utts[chunk * self.chunk_size:(chunk + 1) * self.chunk_size]

    def chunk_path(self, chunk: int, suffix: str) -> Path:
        return self.out / CHUNK_DIR / f"xvector.{chunk:06d}{suffix}"


def read_chunk(job: ExtractJob, chunk: int) -> Optional[Dict[str, Any]]:
    """The marker of a finished chunk, or None when the chunk still has to be (re)done."""
    marker, ark = job.chunk_path(chunk, ".json"), job.chunk_path(chunk, ".ark")
    if not marker.is_file():
        return None
    info = read_json(marker)
    if not ark.is_file() or ark.stat().st_size != info["ark_bytes"]:
        return None
    return info


def done_chunks(job: ExtractJob) -> Set[int]:
    return {c for c in range(job.num_chunks) if read_chunk(job, c) is not None}


class ChunkWriter:
    """Collects one chunk's results (in any order) and publishes it once every utterance is in;
    ``add`` and ``skip`` return True when that happened."""

    def __init__(self, job: ExtractJob, chunk: int):
        self.job, self.chunk = job, chunk
        self.keys = [utt for utt, _ in job.chunk_utts(chunk)]
        self.embeddings: Dict[str, np.ndarray] = {}
        self.skipped: Dict[str, str] = {}
        self.audio_seconds = 0.0

    def add(self, utt: str, embedding: np.ndarray, seconds: float) -> bool:
        self.embeddings[utt] = embedding
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
        with atomic_path(self.job.chunk_path(self.chunk, ".ark")) as tmp:
            with open(tmp, "wb") as f:
                for key in keys:
                    offsets.append(f.tell() + len(key.encode()) + 1)  # data starts after "<key> "
                    kaldiio.save_ark(f, {key: self.embeddings[key]})
                ark_bytes = f.tell()
        write_json(self.job.chunk_path(self.chunk, ".json"),
                   {"keys": keys, "offsets": offsets, "ark_bytes": ark_bytes, "skipped": self.skipped,
                    "audio_seconds": self.audio_seconds})
        return True


# ----------------------------------------------------------------------------- one shard

def _shard_device(device: str, local_rank: int) -> str:
    if device != "cuda":
        return device
    if not torch.cuda.is_available():
        raise SvmixError("--device cuda was requested but CUDA is not available")
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def run_shard(job: ExtractJob, rank: int, world: int, local_rank: Optional[int] = None) -> None:
    """Embed every unfinished chunk of shard ``rank`` (of ``world``) and publish it."""
    chunks = [c for c in range(rank, job.num_chunks, world) if read_chunk(job, c) is None]
    if not chunks:
        return
    device = _shard_device(job.device, rank if local_rank is None else local_rank)
    embedder = load_embedder(job.model, job.runtime, job.onnx, device, job.num_threads)
    n_seg = num_segments(embedder)
    items = [(c * job.chunk_size + i, utt, path) for c in chunks for i, (utt, path) in enumerate(job.chunk_utts(c))]
    loader = torch.utils.data.DataLoader(SegmentDataset(items, embedder.segment_samples, n_seg), batch_size=None,
                                         num_workers=job.num_workers, collate_fn=_unbatched)
    writers = {c: ChunkWriter(job, c) for c in chunks}
    bar = tqdm(total=len(items), desc=f"extract {rank + 1}/{world}" if world > 1 else "extract", unit="utt",
               position=rank if world > 1 else None, disable=not job.progress, dynamic_ncols=True)

    def publish(pos: int, chunk_done: bool) -> None:
        bar.update(1)
        if chunk_done:
            del writers[pos // job.chunk_size]

    def loaded() -> Iterator[Tuple[Tuple[int, str, float], np.ndarray, np.ndarray]]:
        for item in loader:
            if item.error is None:
                yield (item.pos, item.utt, item.seconds), item.segments, item.index
                continue
            if not job.skip_bad:
                raise SvmixError(item.error)
            _log.warning("skipping bad audio: %s", item.error)
            publish(item.pos, writers[item.pos // job.chunk_size].skip(item.utt, item.error))

    with bar:
        for (pos, utt, seconds), embedding in embed_stream(embedder, loaded(), job.batch_size):
            stored = mean_embedding(embedding) if job.average else embedding.astype(np.float32)
            publish(pos, writers[pos // job.chunk_size].add(utt, stored, seconds))


# ----------------------------------------------------------------------------- output directory

@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Serialise output-directory bookkeeping between shards (released if the process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def fingerprint(job: ExtractJob) -> Dict[str, Any]:
    """What the output depends on: a rerun with a different fingerprint starts over."""
    inputs = hashlib.sha256("\n".join(f"{u} {p}" for u, p in job.utts).encode()).hexdigest()
    onnx = sha256_file(onnx_model_path(job.model, job.onnx)) if job.runtime == "onnx" else None
    return {"model_sha256": sha256_file(resolve_checkpoint_path(job.model)), "runtime": job.runtime,
            "onnx_sha256": onnx, "average": job.average, "chunk_size": job.chunk_size,
            "num_utts": len(job.utts), "inputs_sha256": inputs}


def prepare_output(job: ExtractJob, fp: Dict[str, Any]) -> bool:
    """Keep ``out`` when it holds results of the same work (True if already complete); else clear it."""
    out = job.out
    config = out / CONFIG
    if config.is_file() and read_json(config) == fp:
        if (out / STATS).is_file():
            shutil.rmtree(out / CHUNK_DIR, ignore_errors=True)
            return True
        return False
    if config.is_file() or (out / CHUNK_DIR).exists():
        _log.warning("%s holds results of different inputs/model/options; starting over", out)
    (out / STATS).unlink(missing_ok=True)  # an older ark + scp stay usable until the merge replaces them
    shutil.rmtree(out / CHUNK_DIR, ignore_errors=True)
    (out / CHUNK_DIR).mkdir(parents=True)
    write_json(config, fp)
    return False


def estimate_bytes(job: ExtractJob, embed_dim: int, segments: int) -> int:
    """Output size (chunk arks plus the merged ark, which coexist while merging)."""
    rows = 1 if job.average else segments
    per_utt = 16 + rows * embed_dim * 4 + sum(len(u) for u, _ in job.utts) / max(1, len(job.utts))
    return int(2 * per_utt * len(job.utts))


def merge_chunks(job: ExtractJob, resumed: Set[int], wall_seconds: float, num_threads: int) -> Dict[str, Any]:
    """Concatenate the chunk arks in input order into one ark + scp, and write the stats."""
    out = job.out
    infos = [read_chunk(job, c) for c in range(job.num_chunks)]
    ark_final = (out / ARK).resolve()
    lines: List[str] = []
    (out / SCP).unlink(missing_ok=True)  # an older scp must never point into the new ark
    with atomic_path(ark_final) as tmp:
        with open(tmp, "wb") as dst:
            for c, info in enumerate(infos):
                base = dst.tell()
                with open(job.chunk_path(c, ".ark"), "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
                lines.extend(f"{k} {ark_final}:{base + o}\n" for k, o in zip(info["keys"], info["offsets"]))
    with atomic_open(out / SCP) as f:
        f.writelines(lines)
    skipped = {u: r for info in infos for u, r in info["skipped"].items()}
    new = [info for c, info in enumerate(infos) if c not in resumed]
    audio = sum(info["audio_seconds"] for info in new)
    stats = {"num_utts": sum(len(info["keys"]) for info in new), "audio_seconds": round(audio, 3),
             "wall_seconds": round(wall_seconds, 3), "rtf": round(wall_seconds / audio, 6) if audio else None,
             "runtime": job.runtime, "device": job.device, "num_threads": num_threads,
             "skipped": len(skipped), "skipped_utts": skipped, "total_utts": len(lines),
             "resumed_utts": sum(len(infos[c]["keys"]) for c in resumed)}
    write_json(out / STATS, stats)
    shutil.rmtree(out / CHUNK_DIR, ignore_errors=True)
    return stats


# ----------------------------------------------------------------------------- driver

def shard_from_env() -> Tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, int(os.environ.get("LOCAL_RANK", str(rank)))


def extract_embeddings(model: os.PathLike, utts: "OrderedDict[str, str]", out_dir: os.PathLike, *,
                       runtime: str = "torch", onnx: Optional[os.PathLike] = None, average: bool = False,
                       batch_size: int = 32, num_workers: int = 2, device: str = "cpu",
                       num_threads: Optional[int] = None, nj: int = 1, skip_bad: bool = False,
                       chunk_size: int = 500, progress: bool = True) -> Optional[Dict[str, Any]]:
    """Embed ``utts`` (id → audio path) with the checkpoint ``model`` into ``out_dir``.

    Returns the stats, or None for a torchrun rank that finished before the others (the last
    rank to finish merges). A rerun after a kill continues from the finished chunks.
    """
    if runtime == "torch" and torch.device(device).type == "cpu":
        cpu_kernels.kernels()  # the fast path's first-use build is machine setup, not extraction time
    start = time.time()
    rank, world, local_rank = shard_from_env()
    if world > 1 and nj > 1:
        raise SvmixError("--nj cannot be combined with torchrun (WORLD_SIZE > 1)")
    if nj < 1 or chunk_size < 1 or batch_size < 1 or num_workers < 0:
        raise SvmixError("--nj, --chunk-size and --batch-size must be positive, --num-workers >= 0")
    if nj > 1 and num_threads is None:
        num_threads = max(1, (os.cpu_count() or 1) // nj)
    job = ExtractJob(str(model), str(out_dir), list(utts.items()), runtime, None if onnx is None else str(onnx),
                     average, batch_size, num_workers, device, num_threads, skip_bad, chunk_size, progress)
    fp = fingerprint(job)
    _, bad = scan_audio(utts, progress and rank == 0)  # before touching the output directory
    if bad and not skip_bad:
        raise SvmixError(f"{len(bad)} unusable utterance(s), first: {next(iter(bad.values()))}; "
                         "fix the input or rerun with --skip-bad")
    with _locked(job.out):
        if prepare_output(job, fp):
            _log.info("%s is complete already; nothing to do", job.out)
            return read_json(job.out / STATS)
        resumed = done_chunks(job)
    if resumed:
        _log.info("resuming: %d of %d chunks are done", len(resumed), job.num_chunks)
    config = read_checkpoint(model)["config"]
    check_free_space(job.out, estimate_bytes(job, int(config["embed_dim"]), int(config["num_eval_segments"])),
                     "embedding extraction")

    if nj > 1:
        with ProcessPoolExecutor(max_workers=nj, mp_context=get_context("spawn"), initializer=setup_logging,
                                 initargs=(job.out / "extract.log",)) as pool:
            futures = [pool.submit(run_shard, job, r, nj) for r in range(nj)]
            for fut in futures:
                fut.result()
    else:
        run_shard(job, rank, world, local_rank)

    with _locked(job.out):
        if (job.out / STATS).is_file():
            return read_json(job.out / STATS)
        if len(done_chunks(job)) < job.num_chunks:
            _log.info("shard %d/%d done; the last shard to finish merges", rank + 1, world)
            return None
        stats = merge_chunks(job, resumed, time.time() - start, num_threads or torch.get_num_threads())
    rtf = f"{stats['rtf']:.4f}" if stats["rtf"] is not None else "n/a"
    _log.info("extracted %d utterances (%.1f s of audio) in %.1f s: real-time factor %s; %d skipped; "
              "wrote %s", stats["num_utts"], stats["audio_seconds"], stats["wall_seconds"], rtf,
              stats["skipped"], job.out / SCP)
    return stats
