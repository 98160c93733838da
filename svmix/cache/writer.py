"""Stage 2: run a teacher over a data directory and store selected layers (see ``format.py``).

Resumable: a shard is published atomically and then marked done; a rerun keeps done shards and
redoes the rest, so the final cache is byte-identical to an uninterrupted run (same settings).
Utterances are assigned to shards from the sorted utterance list, independently of ``nj`` and of
torchrun's world size; shard ``i`` is written by rank ``i % world``, worker ``(i // world) % nj``.

Long utterances are processed in chunks of ``chunk_seconds`` with ``context_seconds`` of extra
audio on each side, and only the chunk's own frames are kept. Utterances no longer than one chunk
are exact (the whole waveform goes through the teacher at once). For chunked ones the result is
not bit-identical to a whole-utterance pass: self-attention is global, and in "group"-norm conv
extractors (Base models, the mini teacher) the first layer's GroupNorm uses statistics over the
whole input. ``benchmarks/bench_cache.py`` measures this deviation; for the trained mini teacher
(45 s utterance, 30 s chunks, 4 s context) the RMS difference is 0.02-0.4 % of the RMS value
depending on the layer (layer 0: 0.02 %), i.e. around float16 rounding (0.05 %) up to ~10x it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from svmix.cache.format import DTYPES, FORMAT, MANIFEST, PLAN, SHARD_DIR, VERSION, shard_bin, shard_marker, shard_name
from svmix.data.audio import SAMPLE_RATE, load_audio, scan_audio
from svmix.data.datadir import DataDir
from svmix.errors import AudioError, SvmixError
from svmix.teachers.protocol import Teacher
from svmix.utils.fileio import atomic_path, check_free_space, read_json, sha256_file, write_json
from svmix.utils.logging import get_logger

_log = get_logger("cache")


@dataclass
class CacheSettings:
    layers: List[int]
    dtype: str = "float16"
    chunk_seconds: float = 30.0
    context_seconds: float = 4.0
    shard_mb: float = 512.0
    skip_bad: bool = False


def utterance_frames(teacher: Teacher, wav: np.ndarray, layers: Sequence[int], dtype: str = "float32",
                     chunk_seconds: float = 30.0, context_seconds: float = 4.0) -> np.ndarray:
    """Teacher frames of one utterance as (frames, len(layers), hidden) in ``dtype`` (see module docstring)."""
    shift, field = teacher.frame_shift, teacher.receptive_field
    total = teacher.num_frames(len(wav))
    chunk = max(1, int(chunk_seconds * SAMPLE_RATE) // shift)
    context = int(context_seconds * SAMPLE_RATE) // shift
    audio = teacher.normalize(torch.from_numpy(wav)[None])  # over the whole utterance, before chunking
    out = np.empty((total, len(layers), teacher.hidden_size), dtype=dtype)
    whole = total <= chunk + context
    for start in range(0, total, total if whole else chunk):
        stop = total if whole else min(total, start + chunk)
        lo, hi = max(0, start - context), min(total, stop + context)
        end = len(wav) if hi == total else (hi - 1) * shift + field
        states = teacher.hidden_states(audio[:, lo * shift:end])
        for i, layer in enumerate(layers):
            out[start:stop, i] = states[layer][0, start - lo:stop - lo].numpy()
    if not np.isfinite(out).all():
        raise SvmixError(f"teacher features overflow {dtype} (non-finite values); use --dtype float32")
    return out


# ---------------------------------------------------------------- planning
def scan_inputs(data_dir: os.PathLike, skip_bad: bool, progress: bool = True) -> Tuple[List[Tuple[str, str, int]], Dict[str, str]]:
    """Check every utterance's audio header before any teacher work: (utt, path, est. samples), bad."""
    wav_scp = DataDir(data_dir).wav_scp
    samples, bad = scan_audio({utt: wav_scp[utt] for utt in sorted(wav_scp)}, progress)
    good = [(utt, wav_scp[utt], n) for utt, n in samples.items()]
    if bad and not skip_bad:
        first = next(iter(bad.values()))
        raise SvmixError(f"{len(bad)} unusable utterance(s) in {data_dir}, first: {first}; "
                         "fix the data or rerun with --skip-bad")
    for reason in bad.values():
        _log.warning("skipping %s", reason)
    return good, bad


def make_plan(teacher: Teacher, data_dir: os.PathLike, settings: CacheSettings, progress: bool = True) -> Dict[str, Any]:
    bad_layers = [x for x in settings.layers if not 0 <= x <= teacher.num_layers]
    if bad_layers or not settings.layers:
        raise SvmixError(f"--layers {settings.layers}: teacher '{teacher.spec}' has layers 0..{teacher.num_layers}")
    if settings.dtype not in DTYPES:
        raise SvmixError(f"--dtype {settings.dtype}: expected one of {', '.join(DTYPES)}")
    good, bad = scan_inputs(data_dir, settings.skip_bad, progress)
    if not good:
        raise SvmixError(f"{data_dir}: no usable utterances")
    row_bytes = len(settings.layers) * teacher.hidden_size * np.dtype(settings.dtype).itemsize
    shards: List[List[List[str]]] = [[]]
    shard_bytes, total_frames = 0, 0
    for utt, path, samples in good:
        frames = teacher.num_frames(samples)
        if shards[-1] and shard_bytes + frames * row_bytes > settings.shard_mb * 1e6:
            shards.append([])
            shard_bytes = 0
        shards[-1].append([utt, path])
        shard_bytes += frames * row_bytes
        total_frames += frames
    return {
        "format": FORMAT, "version": VERSION,
        "teacher": {"spec": str(teacher.spec), "fingerprint": teacher.fingerprint},
        "teacher_num_layers": teacher.num_layers, "normalize_waveform": teacher.normalize_waveform,
        "hidden_size": teacher.hidden_size, "frame_shift": teacher.frame_shift,
        "receptive_field": teacher.receptive_field, "sample_rate": SAMPLE_RATE,
        **asdict(settings), "estimated_frames": total_frames, "estimated_bytes": total_frames * row_bytes,
        "bad": bad, "shards": shards,
    }


_NOT_IDENTITY = ("teacher.spec", "skip_bad")  # a rerun may name the same teacher differently


def _plan_differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    def flat(d: Dict[str, Any]) -> Dict[str, Any]:
        out = {k: v for k, v in d.items() if k != "teacher"}
        out.update({f"teacher.{k}": v for k, v in d.get("teacher", {}).items()})
        return {k: v for k, v in out.items() if k not in _NOT_IDENTITY}

    a, b = flat(old), flat(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# ---------------------------------------------------------------- shards
def _shard_done(cache_dir: Path, index: int) -> bool:
    marker, data = shard_marker(cache_dir, index), shard_bin(cache_dir, index)
    if not (marker.is_file() and data.is_file()):
        return False
    return read_json(marker).get("bytes") == data.stat().st_size


def _write_shard(cache_dir: Path, index: int, plan: Dict[str, Any], teacher: Any, bar: Any) -> None:
    for stale in (cache_dir / SHARD_DIR).glob(f".{shard_name(index)}.*.tmp"):
        stale.unlink()  # left by a killed run
    digest, rows, utts, skipped = hashlib.sha256(), 0, {}, {}
    with atomic_path(shard_bin(cache_dir, index)) as tmp:
        with open(tmp, "wb") as f:
            for utt, path in plan["shards"][index]:
                try:
                    feats = utterance_frames(teacher, load_audio(path, utt), plan["layers"], plan["dtype"],
                                             plan["chunk_seconds"], plan["context_seconds"])
                except AudioError as e:
                    if not plan["skip_bad"]:
                        raise
                    _log.warning("skipping %s", e)
                    skipped[utt] = str(e)
                    bar.update(1)
                    continue
                data = feats.tobytes()
                f.write(data)
                digest.update(data)
                utts[utt] = [rows, len(feats)]
                rows += len(feats)
                bar.update(1)
        size = os.path.getsize(tmp)
    write_json(shard_marker(cache_dir, index),
               {"rows": rows, "bytes": size, "sha256": digest.hexdigest(), "utts": utts, "skipped": skipped})


def _run_shards(cache_dir: Path, plan: Dict[str, Any], indices: List[int], teacher: Any = None,
                device: str = "cpu", position: int = 0, threads: Optional[int] = None, progress: bool = True) -> None:
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(threads)
    todo = [i for i in indices if not _shard_done(cache_dir, i)]
    if not todo:
        return
    if teacher is None:
        from svmix.teachers import load_teacher

        teacher = load_teacher(plan["teacher"]["spec"], device=device)
        if teacher.fingerprint != plan["teacher"]["fingerprint"]:
            raise SvmixError(f"teacher '{plan['teacher']['spec']}' changed while caching")
    total = sum(len(plan["shards"][i]) for i in todo)
    with tqdm(total=total, desc=f"caching teacher [{position}]", position=position, unit="utt",
              disable=not progress) as bar:
        for index in todo:
            _write_shard(cache_dir, index, plan, teacher, bar)


def _worker(args: Tuple) -> None:
    _run_shards(*args)


def _merge_manifest(cache_dir: Path, plan: Dict[str, Any]) -> Dict[str, Any]:
    utts, shards, skipped = {}, [], dict(plan["bad"])
    for index in range(len(plan["shards"])):
        marker = read_json(shard_marker(cache_dir, index))
        shards.append({"file": f"{SHARD_DIR}/{shard_name(index)}.bin", "bytes": marker["bytes"],
                       "rows": marker["rows"], "sha256": marker["sha256"]})
        for utt, (offset, frames) in marker["utts"].items():
            utts[utt] = {"shard": index, "offset": offset, "frames": frames}
        skipped.update(marker["skipped"])
    keep = ("teacher", "teacher_num_layers", "normalize_waveform", "hidden_size", "frame_shift",
            "receptive_field", "sample_rate", "layers", "dtype", "chunk_seconds", "context_seconds")
    manifest = {"format": FORMAT, "version": VERSION, **{k: plan[k] for k in keep},
                "num_frames": sum(u["frames"] for u in utts.values()),
                "utts": utts, "shards": shards, "skipped": skipped}
    write_json(cache_dir / MANIFEST, manifest)
    return manifest


def _distributed() -> Tuple[int, int]:
    """(rank, world size) under torchrun (gloo process group for the final barrier), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), world


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def build_cache(teacher_spec: os.PathLike, data_dir: os.PathLike, out: os.PathLike, settings: CacheSettings,
                nj: int = 1, device: str = "cpu", progress: bool = True) -> Path:
    """Build (or finish) the cache in ``out``; returns its directory. See the module docstring."""
    from svmix.teachers import load_teacher

    cache_dir = Path(out)
    rank, world = _distributed()
    teacher = load_teacher(teacher_spec, device=device)
    plan = make_plan(teacher, data_dir, settings, progress=progress and rank == 0)
    if (cache_dir / PLAN).is_file():
        differences = _plan_differences(read_json(cache_dir / PLAN), plan)
        if differences:
            raise SvmixError(f"{cache_dir}: holds a teacher cache with other settings (differs in "
                             f"{', '.join(differences)}); remove it or choose another --out")
        if (cache_dir / MANIFEST).is_file() and all(_shard_done(cache_dir, i) for i in range(len(plan["shards"]))):
            _log.info("%s: teacher cache already complete", cache_dir)
            return cache_dir
    n_frames, layers = plan["estimated_frames"], len(settings.layers)
    itemsize = np.dtype(settings.dtype).itemsize
    _log.info("teacher cache estimate: %d utterances, %d frames x %d layers x %d dims x %d bytes = %.3f GB",
              sum(len(s) for s in plan["shards"]), n_frames, layers, teacher.hidden_size, itemsize,
              plan["estimated_bytes"] / 1e9)
    if rank == 0:
        done = sum(shard_bin(cache_dir, i).stat().st_size for i in range(len(plan["shards"]))
                   if _shard_done(cache_dir, i))
        check_free_space(cache_dir, plan["estimated_bytes"] - done, "the teacher cache")
        (cache_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        write_json(cache_dir / PLAN, plan)
    _barrier(world)
    mine = [i for i in range(len(plan["shards"])) if i % world == rank]
    nj = max(1, min(nj, len(mine)))
    if nj == 1:
        _run_shards(cache_dir, plan, mine, teacher, device, rank, None, progress)
    else:
        del teacher  # every worker loads its own copy
        import multiprocessing

        threads = max(1, torch.get_num_threads() // nj)  # share this process's thread budget
        jobs = [(cache_dir, plan, mine[k::nj], None, device, rank * nj + k, threads, progress) for k in range(nj)]
        with multiprocessing.get_context("spawn").Pool(nj) as pool:
            pool.map(_worker, jobs)
    _barrier(world)
    if rank == 0:
        manifest = _merge_manifest(cache_dir, plan)
        if manifest["skipped"]:
            _log.warning("skipped %d unusable utterance(s) (listed under 'skipped' in %s)",
                         len(manifest["skipped"]), cache_dir / MANIFEST)
        _log.info("teacher cache complete: %s (%d utterances, %d frames, %d shards)", cache_dir,
                  len(manifest["utts"]), manifest["num_frames"], len(manifest["shards"]))
    _barrier(world)
    return cache_dir


def verify_cache(cache_dir: os.PathLike) -> List[str]:
    """Problems of a finished cache (missing/truncated shards, checksum mismatches); empty when sound."""
    cache_dir = Path(cache_dir)
    manifest = read_json(cache_dir / MANIFEST)
    problems = []
    for shard in manifest.get("shards", []):
        file = cache_dir / shard["file"]
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file.stat().st_size != shard["bytes"]:
            problems.append(f"{file}: {file.stat().st_size} bytes, expected {shard['bytes']} (truncated or corrupt)")
        elif sha256_file(file) != shard["sha256"]:
            problems.append(f"{file}: checksum mismatch (corrupt)")
    return problems

