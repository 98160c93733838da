"""Stage 2: run a teacher over a data directory and store selected layers (see ``format.py``).

Runs on the resumable sharded-job engine (:mod:`svmix.utils.sharded_job`). A shard is published
atomically and then marked done. A rerun keeps the done shards whose size and crc32 match their
marker and redoes the rest, so the final cache is byte-identical to an uninterrupted run with the
same settings. Utterances are assigned to shards from the sorted utterance list, independently of
``nj`` and of torchrun's world size. Shard ``i`` belongs to rank ``i % world``, and within a rank
the shards are split over ``nj`` local processes. The last process to finish writes the manifest.

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

import functools
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from svmix.cache.codecs import CODECS, LayerCodecs
from svmix.cache.format import CODEC_INFO, CODEC_STATE, FORMAT, MANIFEST, PLAN, SHARD_DIR, VERSION, shard_name
from svmix.cache.reader import codec_spec_of, open_codecs
from svmix.data.audio import SAMPLE_RATE, load_audio, scan_audio
from svmix.data.datadir import DataDir
from svmix.errors import AudioError, SvmixError
from svmix.teachers.protocol import Teacher
from svmix.utils.fileio import atomic_open, check_free_space, read_json, sha256_file, write_json
from svmix.utils.logging import get_logger
from svmix.utils.progress import Progress
from svmix.utils.sharded_job import JobLayout, ShardedJob, Worker, naming_file

_log = get_logger("cache")


@dataclass
class CacheSettings:
    """``dtype`` names the frame codec (:mod:`svmix.cache.codecs`), ``codec_options`` its constructor
    options (int8: ``scale``; pq: ``subspaces``, the bytes per vector). Trained codecs are fitted
    before any shard on ``fit_frames`` frames of utterances drawn with ``fit_seed``."""

    layers: List[int]
    dtype: str = "float16"
    chunk_seconds: float = 30.0
    context_seconds: float = 4.0
    shard_mb: float = 512.0
    skip_bad: bool = False
    codec_options: Dict[str, Any] = field(default_factory=dict)
    fit_seed: int = 0
    fit_frames: int = 20000

    def codec(self, hidden: int) -> Tuple[Dict[str, Any], LayerCodecs]:
        """The plan's ``codec`` entry (what the stored bytes depend on: the fit settings only for a
        trained codec) and a one-layer codec of it for vectors of ``hidden`` values."""
        if self.dtype not in CODECS.names():
            raise SvmixError(f"--dtype {self.dtype}: expected one of {', '.join(CODECS.names())}")
        spec: Dict[str, Any] = {"name": self.dtype, "options": dict(self.codec_options)}
        try:
            codecs = LayerCodecs(self.dtype, hidden, 1, self.codec_options)
        except (TypeError, SvmixError) as e:
            raise SvmixError(f"--dtype {self.dtype} with options {self.codec_options}: {e}") from None
        if codecs.trained:
            if self.fit_frames < LayerCodecs.MIN_FIT_FRAMES:
                raise SvmixError(f"--fit-frames {self.fit_frames}: the {self.dtype} codec needs at least "
                                 f"{LayerCodecs.MIN_FIT_FRAMES} sample frames")
            spec["fit"] = {"seed": int(self.fit_seed), "frames": int(self.fit_frames)}
        return spec, codecs


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
    spec, codecs = settings.codec(teacher.hidden_size)
    good, bad = scan_inputs(data_dir, settings.skip_bad, progress)
    if not good:
        raise SvmixError(f"{data_dir}: no usable utterances")
    row_bytes = len(settings.layers) * codecs.row_bytes
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
        **{k: v for k, v in asdict(settings).items() if k not in _CODEC_SETTINGS}, "codec": spec,
        "bytes_per_frame": row_bytes, "estimated_frames": total_frames, "estimated_bytes": total_frames * row_bytes,
        "bad": bad, "shards": shards,
    }


_CODEC_SETTINGS = ("codec_options", "fit_seed", "fit_frames")  # in the plan as its "codec" entry
_NOT_IDENTITY = ("teacher.spec", "skip_bad")  # a rerun may name the same teacher differently


def _plan_differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    def flat(d: Dict[str, Any]) -> Dict[str, Any]:
        out = {k: v for k, v in d.items() if k not in ("teacher", "bytes_per_frame")}
        out["codec"] = codec_spec_of(d)  # a plan from before codecs existed: plain dtype
        out.update({f"teacher.{k}": v for k, v in d.get("teacher", {}).items()})
        return {k: v for k, v in out.items() if k not in _NOT_IDENTITY}

    a, b = flat(old), flat(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# ---------------------------------------------------------------- shards (on the sharded-job engine)
LAYOUT = JobLayout(plan_file=PLAN, unit_dir=SHARD_DIR, unit_name="shard-{:05d}", data_suffix=".bin")
TOOL = "svmix-cache-teacher"
LOG_FILE = "cache.log"  # this tool's log, beside the shards


def _write_shard(job: ShardedJob, index: int, teacher: Any, codecs: LayerCodecs, bar: Progress) -> None:
    plan = job.plan
    rows, utts, skipped = 0, {}, {}
    with job.publish(index) as unit:
        for utt, path in plan["shards"][index]:
            try:
                feats = utterance_frames(teacher, load_audio(path, utt), plan["layers"], "float32",
                                         plan["chunk_seconds"], plan["context_seconds"])
            except AudioError as e:
                if not plan["skip_bad"]:
                    raise
                _log.warning("skipping %s", e)
                skipped[utt] = str(e)
                bar.update(1)
                continue
            unit.write(codecs.encode(feats).tobytes())
            utts[utt] = [rows, len(feats)]
            rows += len(feats)
            bar.update(1)
        unit.info.update(rows=rows, utts=utts, skipped=skipped)


# ---------------------------------------------------------------- codec fit pass (trained codecs)
def _codec_state(job: ShardedJob) -> Optional[Dict[str, Any]]:
    """The description of the codec state in ``shards/`` when it exists, is intact and was fitted
    for this plan's codec; None otherwise (and always for untrained codecs)."""
    info_path = job.unit_dir / CODEC_INFO
    if not info_path.is_file():
        return None
    try:
        info = read_json(info_path)
    except SvmixError:
        return None
    state = job.unit_dir / CODEC_STATE
    if (not isinstance(info, dict) or info.get("codec") != job.plan["codec"] or not state.is_file()
            or sha256_file(state) != info.get("sha256")):
        return None
    return info


def _plan_codecs(job: ShardedJob) -> LayerCodecs:
    """The plan's per-layer codecs, with their state loaded when trained (after the fit pass)."""
    plan = job.plan
    spec = plan["codec"]
    info = _codec_state(job)
    state = None if info is None else {"file": f"{SHARD_DIR}/{CODEC_STATE}", "arrays": info["arrays"],
                                       "sha256": info["sha256"]}
    return open_codecs(job.out, {k: spec[k] for k in ("name", "options")}, plan["hidden_size"], len(plan["layers"]),
                       state)


def fit_sample(teacher: Teacher, plan: Dict[str, Any]) -> np.ndarray:
    """The frames a trained codec is fitted on: (n, layers, hidden) float32 from utterances taken in
    an order drawn with the fit seed until ``frames`` frames are reached, then ``frames`` of them
    drawn with the same generator (sorted, so the sample is a pure function of plan and teacher)."""
    fit = plan["codec"]["fit"]
    rng = np.random.default_rng(fit["seed"])
    utts = [tuple(entry) for shard in plan["shards"] for entry in shard]
    parts, total = [], 0
    for i in rng.permutation(len(utts)):
        utt, path = utts[i]
        try:
            parts.append(utterance_frames(teacher, load_audio(path, utt), plan["layers"], "float32",
                                          plan["chunk_seconds"], plan["context_seconds"]))
        except AudioError:
            if not plan["skip_bad"]:
                raise
            continue  # skipped (and reported) when its shard is written
        total += len(parts[-1])
        if total >= fit["frames"]:
            break
    if total < LayerCodecs.MIN_FIT_FRAMES:
        raise SvmixError(f"the {plan['codec']['name']} codec is trained on teacher frames, but the data have only "
                         f"{total} frames (at least {LayerCodecs.MIN_FIT_FRAMES} needed); use --dtype float16 or int8")
    sample = np.concatenate(parts)
    if total > fit["frames"]:
        sample = sample[np.sort(rng.choice(total, fit["frames"], replace=False))]
    return sample


def _fit_codecs(teacher: Teacher, job: ShardedJob) -> None:
    """The fit pass: train a trained codec before any shard is written, unless its intact state for
    this plan is in ``shards/`` (a resumed run, or another torchrun rank that fitted first). The fit
    is deterministic, so refitting after a damaged state reproduces the bytes the done shards used."""
    plan = job.plan
    codecs = LayerCodecs(plan["codec"]["name"], plan["hidden_size"], len(plan["layers"]), plan["codec"]["options"])
    if not codecs.trained or _codec_state(job) is not None:
        return
    sample = fit_sample(teacher, plan)
    _log.info("fitting the %s codec on %d frames x %d layers (seed %d)", codecs.name, len(sample),
              len(plan["layers"]), plan["codec"]["fit"]["seed"])
    codecs.fit(sample, seed=plan["codec"]["fit"]["seed"])
    job.unit_dir.mkdir(parents=True, exist_ok=True)
    state = job.unit_dir / CODEC_STATE
    with naming_file(state):
        with atomic_open(state, "wb") as f:
            names = codecs.write_state(f)
        write_json(job.unit_dir / CODEC_INFO, {"codec": plan["codec"], "arrays": names,
                                              "bytes": state.stat().st_size, "sha256": sha256_file(state)})


def _run_shards(teacher: Any, device: str, threads: Optional[int], progress: bool, job: ShardedJob,
                indices: List[int], worker: Worker) -> None:
    """The engine's work function: cache shards ``indices`` (loading the teacher unless given)."""
    if worker.nj > 1 and threads:
        torch.set_num_threads(threads)
    plan = job.plan
    if teacher is None:
        from svmix.teachers import load_teacher

        teacher = load_teacher(plan["teacher"]["spec"], device=device)
        if teacher.fingerprint != plan["teacher"]["fingerprint"]:
            raise SvmixError(f"teacher '{plan['teacher']['spec']}' changed while caching")
    codecs = _plan_codecs(job)
    total = sum(len(plan["shards"][i]) for i in indices)
    with Progress(total=total, desc=f"caching teacher [{worker.slot}]", unit="utt", position=worker.slot,
                  enabled=progress) as bar:
        for index in indices:
            _write_shard(job, index, teacher, codecs, bar)


def _merge_manifest(job: ShardedJob) -> Path:
    cache_dir, plan = job.out, job.plan
    utts, shards, skipped = {}, [], dict(plan["bad"])
    for index in range(job.num_units):
        marker = job.marker(index)
        shards.append({"file": f"{SHARD_DIR}/{shard_name(index)}.bin", "bytes": marker["bytes"],
                       "rows": marker["rows"], "sha256": marker["sha256"], "crc32": marker["crc32"]})
        for utt, (offset, frames) in marker["utts"].items():
            utts[utt] = {"shard": index, "offset": offset, "frames": frames}
        skipped.update(marker["skipped"])
    keep = ("teacher", "teacher_num_layers", "normalize_waveform", "hidden_size", "frame_shift",
            "receptive_field", "sample_rate", "layers", "dtype", "chunk_seconds", "context_seconds", "bytes_per_frame")
    codec = dict(plan["codec"], row_bytes=_plan_codecs(job).row_bytes)  # opening it checks a trained state
    info = _codec_state(job)
    if info is not None:
        codec["state"] = {"file": f"{SHARD_DIR}/{CODEC_STATE}", "arrays": info["arrays"], "bytes": info["bytes"],
                          "sha256": info["sha256"]}
    manifest = {"format": FORMAT, "version": VERSION, **{k: plan[k] for k in keep}, "codec": codec,
                "num_frames": sum(u["frames"] for u in utts.values()),
                "utts": utts, "shards": shards, "skipped": skipped}
    with naming_file(cache_dir / MANIFEST):
        write_json(cache_dir / MANIFEST, manifest)
    if manifest["skipped"]:
        _log.warning("skipped %d unusable utterance(s) (listed under 'skipped' in %s)",
                     len(manifest["skipped"]), cache_dir / MANIFEST)
    _log.info("teacher cache complete: %s (%d utterances, %d frames, %d shards)", cache_dir,
              len(manifest["utts"]), manifest["num_frames"], len(manifest["shards"]))
    return cache_dir


def _finished_cache(job: ShardedJob) -> Optional[Path]:
    """The cache directory when its manifest lists exactly the done shards (sizes and checksums)."""
    path = job.out / MANIFEST
    if not path.is_file():
        return None
    manifest = read_json(path)
    listed = manifest.get("shards", [])
    if len(listed) != job.num_units:
        return None
    state = manifest.get("codec", {}).get("state")
    if state is not None and (_codec_state(job) or {}).get("sha256") != state["sha256"]:
        return None  # the codec state is damaged: refit it (deterministically) and merge again
    for index, entry in enumerate(listed):
        marker = job.marker(index)
        if marker is None or (marker["bytes"], marker.get("sha256")) != (entry.get("bytes"), entry.get("sha256")):
            return None
    return job.out


def _before_work(teacher: Teacher, job: ShardedJob) -> None:
    _check_space(job)
    _fit_codecs(teacher, job)


def _check_space(job: ShardedJob) -> None:
    done = sum(job.data_path(i).stat().st_size for i in job.done_units())
    check_free_space(job.out, job.plan["estimated_bytes"] - done, "the teacher cache")


def build_cache(teacher_spec: os.PathLike, data_dir: os.PathLike, out: os.PathLike, settings: CacheSettings,
                nj: int = 1, device: str = "cpu", progress: bool = True) -> Optional[Path]:
    """Build (or finish) the cache in ``out``; returns its directory, or None on a torchrun rank
    that does not report: one that finished before the others (the last one writes the manifest),
    or one other than rank 0 when the cache was complete already.

    A rerun of a complete cache checks each shard's size and crc32 against its done-marker and
    redoes shards that fail; ``verify_cache`` (``--verify``) checks the sha256 of the manifest.
    Another run on the same ``out`` at the same time is refused (:mod:`svmix.utils.locking`)."""
    from svmix.teachers import load_teacher
    from svmix.train.distributed import launch_env

    cache_dir = Path(out)
    env = launch_env()
    teacher = load_teacher(teacher_spec, device=device)
    plan = make_plan(teacher, data_dir, settings, progress=progress and env.rank == 0)
    n_frames, layers = plan["estimated_frames"], len(settings.layers)
    _log.info("teacher cache estimate: %d utterances, %d frames x %d layers x %d dims, %s (%d bytes/frame) = %.3f GB",
              sum(len(s) for s in plan["shards"]), n_frames, layers, teacher.hidden_size, settings.dtype,
              plan["bytes_per_frame"], plan["estimated_bytes"] / 1e9)
    job = ShardedJob(cache_dir, plan, len(plan["shards"]), LAYOUT, tool=TOOL, what="a teacher cache",
                     on_other_plan="refuse", differences=_plan_differences, log_file=cache_dir / LOG_FILE)
    threads = max(1, torch.get_num_threads() // nj) if nj > 1 else None  # share this process's threads
    work = functools.partial(_run_shards, teacher if nj == 1 else None, device, threads, progress)
    result = job.run(work, _merge_manifest, finished=_finished_cache,
                     before_work=functools.partial(_before_work, teacher), nj=nj)
    if job.complete_at_start:
        if env.rank != 0:
            return None  # every rank found it complete; rank 0 reports
        _log.info("%s: teacher cache already complete (shard sizes and crc32 checked)", cache_dir)
    return result


def verify_cache(cache_dir: os.PathLike) -> List[str]:
    """Problems of a finished cache (missing/truncated shards, checksum mismatches); empty when sound."""
    cache_dir = Path(cache_dir)
    manifest = read_json(cache_dir / MANIFEST)
    problems = []
    state = manifest.get("codec", {}).get("state")
    if state is not None:
        file = cache_dir / state["file"]
        if not file.is_file():
            problems.append(f"{file}: missing (codec state)")
        elif sha256_file(file) != state["sha256"]:
            problems.append(f"{file}: checksum mismatch (corrupt codec state)")
    for shard in manifest.get("shards", []):
        file = cache_dir / shard["file"]
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file.stat().st_size != shard["bytes"]:
            problems.append(f"{file}: {file.stat().st_size} bytes, expected {shard['bytes']} (truncated or corrupt)")
        elif sha256_file(file) != shard["sha256"]:
            problems.append(f"{file}: checksum mismatch (corrupt)")
    return problems

