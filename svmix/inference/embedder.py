"""Segment embedders: (B, segment_samples) float32 segments → (B, D) embeddings, as numpy.

The PyTorch :class:`SegmentEmbedder`, the ONNX ``OnnxSegmentEmbedder``
(:mod:`svmix.inference.onnx_runtime`) and the torch.export ``ExportedProgramEmbedder``
(:mod:`svmix.inference.exported_program`) share one interface (``config``, ``embed_dim``,
``segment_samples``, ``one_pass``, ``__call__``), so extraction and the Python API treat them alike.
:func:`embed_stream` packs the fixed-length segments of many utterances (of any lengths) into
full batches; an utterance's embeddings do not depend on what it is batched with. A one-pass
embedder (``one_pass``) takes whole utterances, (1, N) of any N, and runs once per utterance.
"""
from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from svmix.data.audio import SAMPLE_RATE, check_waveform
from svmix.errors import SvmixError
from svmix.inference.segments import evaluation_inputs
from svmix.models.fast import prepare_for_inference
from svmix.models.fast.model import PRECISIONS
from svmix.registry import Registry

RUNTIMES = Registry("runtime")
ONNX_NAME = "model.onnx"  # the exported models next to a checkpoint
PT2_NAME = "model.pt2"


class SegmentEmbedder:
    """A SpeakerModel in eval mode on the fast inference path (switched in place), called on numpy
    segments; ``precision="int8"`` switches its SV-Mixer blocks to int8 GEMMs (CPU only)."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu", precision: str = "float32"):
        self.config: Dict[str, Any] = dict(model.config)
        self.embed_dim = int(model.embed_dim)
        self.segment_samples = int(model.segment_samples)
        self.one_pass = bool(model.one_pass)
        # the shortest waveform it embeds: one frontend frame in one pass (segments repeat a short one)
        self.min_samples = int(model.frontend.receptive_field) if self.one_pass else 1
        self.device = torch.device(device)
        if precision == "int8" and self.device.type != "cpu":
            raise SvmixError(f"--precision int8 runs on the CPU only, not on '{device}'")
        self.precision = precision
        self.model = prepare_for_inference(model.eval().to(self.device), precision)

    def __call__(self, segments: np.ndarray) -> np.ndarray:
        segments = np.ascontiguousarray(segments, dtype=np.float32)
        if segments.ndim != 2 or (not self.one_pass and segments.shape[1] != self.segment_samples):
            raise ValueError(f"expected segments of shape (B, {self.segment_samples}), got {segments.shape}")
        with torch.inference_mode():
            out = self.model(torch.from_numpy(segments).to(self.device))
        return out.float().cpu().numpy()


def num_segments(embedder: Any) -> int:
    return int(embedder.config["num_eval_segments"])


@RUNTIMES.register("torch")
def _torch_runtime(model: os.PathLike, onnx: Optional[os.PathLike], device: str,
                   num_threads: Optional[int], precision: str) -> SegmentEmbedder:
    from svmix.checkpoint import load_model_checkpoint

    if num_threads:
        torch.set_num_threads(num_threads)
    model, _ = load_model_checkpoint(model, device=device)
    return SegmentEmbedder(model, device=device, precision=precision)


@RUNTIMES.register("onnx")
def _onnx_runtime(model: os.PathLike, onnx: Optional[os.PathLike], device: str, num_threads: Optional[int],
                  precision: str):
    from svmix.inference.onnx_runtime import OnnxSegmentEmbedder

    if device != "cpu":
        raise SvmixError(f"the onnx runtime runs on the CPU only, not on '{device}'")
    path = exported_model_path(model, onnx, "onnx")
    embedder = OnnxSegmentEmbedder(str(path), num_threads=num_threads)
    if embedder.precision != precision:
        raise SvmixError(f"{path}: ONNX model has {embedder.precision} weights, not the {precision} asked for "
                         f"(export with svmix-export --format onnx{' --quantize int8' if precision == 'int8' else ''})")
    check_same_model(model, embedder.config, path, "ONNX")
    return embedder


def check_same_model(model: os.PathLike, exported_config: Dict[str, Any], path: os.PathLike, what: str) -> None:
    """An exported file must hold the checkpoint ``model``'s model (its stored config, compared closed)."""
    from svmix.checkpoint import read_checkpoint
    from svmix.models import resolve_model_config

    config = json.loads(json.dumps(read_checkpoint(model)["config"]))  # as stored in the export's metadata
    exported = resolve_model_config(exported_config)  # closed, like the checkpoint's (old exports are open)
    differ = sorted(k for k in set(config) | set(exported) if config.get(k) != exported.get(k))
    if differ:
        raise SvmixError(f"{path}: {what} model was exported from another model than {model} "
                         f"(config differs in {', '.join(differ)}); re-export it with svmix-export")


@RUNTIMES.register("pt2")
def _pt2_runtime(model: os.PathLike, exported: Optional[os.PathLike], device: str, num_threads: Optional[int],
                 precision: str):
    from svmix.inference.exported_program import ExportedProgramEmbedder

    if device != "cpu":
        raise SvmixError(f"the pt2 runtime runs on the CPU only, not on '{device}'")
    if precision != "float32":
        raise SvmixError(f"the pt2 runtime runs float32 exports only, not --precision {precision} "
                         "(int8: --runtime torch, or --runtime onnx with an int8 export)")
    path = exported_model_path(model, exported, "pt2")
    embedder = ExportedProgramEmbedder(path, num_threads=num_threads)
    check_same_model(model, embedder.config, path, "torch.export")
    return embedder


EXPORTED_NAMES = {"onnx": ONNX_NAME, "pt2": PT2_NAME}


def exported_model_path(model: os.PathLike, exported: Optional[os.PathLike], runtime: str) -> Path:
    """The exported file the ``onnx`` or ``pt2`` runtime uses: ``exported``, or ``model.onnx`` /
    ``model.pt2`` next to the checkpoint."""
    from svmix.checkpoint import resolve_checkpoint_path

    path = Path(exported) if exported is not None else resolve_checkpoint_path(model).parent / EXPORTED_NAMES[runtime]
    if not path.is_file():
        what = "ONNX" if runtime == "onnx" else "torch.export"
        raise SvmixError(f"{path}: {what} model not found (export it with svmix-export --format {runtime}, "
                         f"or pass --{runtime})")
    return path


def check_runtime_options(runtime: str, onnx: Optional[os.PathLike], pt2: Optional[os.PathLike]) -> None:
    """An exported file is given only to the runtime that reads it."""
    for name, path in (("onnx", onnx), ("pt2", pt2)):
        if path is not None and runtime != name:
            raise SvmixError(f"--{name} is only used with --runtime {name}")


def load_embedder(model: os.PathLike, runtime: str = "torch", onnx: Optional[os.PathLike] = None,
                  device: str = "cpu", num_threads: Optional[int] = None, precision: str = "float32",
                  pt2: Optional[os.PathLike] = None):
    """A segment embedder for the checkpoint (or experiment dir) ``model`` on ``runtime``: ``torch``
    (the checkpoint on the fast path), ``onnx`` (the ONNX file ``onnx``, default ``model.onnx`` next
    to the checkpoint) or ``pt2`` (the torch.export program ``pt2``, default ``model.pt2``).

    ``precision`` int8: the torch runtime switches the SV-Mixer blocks to int8 GEMMs; the onnx
    runtime requires an ONNX file exported with ``--quantize int8``; pt2 is float32 only."""
    if precision not in PRECISIONS:
        raise SvmixError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    run = RUNTIMES.get(runtime, "runtime")
    check_runtime_options(runtime, onnx, pt2)
    return run(model, pt2 if runtime == "pt2" else onnx, device, num_threads, precision)


Item = Tuple[Any, np.ndarray, np.ndarray]  # (key, distinct segments (U, S), index (num_segments,))


def embed_stream(embedder: Any, items: Iterable[Item], batch_size: int) -> Iterator[Tuple[Any, np.ndarray]]:
    """Embed utterances given as ``(key, distinct segments, index)`` and yield ``(key, (n, D))``
    in input order, running the embedder on full batches of ``batch_size`` segments; a one-pass
    embedder runs once per utterance instead (its inputs differ in length, and padding them into one
    batch would reach the frontend's normalisation and the backend's pooling)."""
    if batch_size < 1:
        raise SvmixError(f"batch size must be positive, got {batch_size}")
    if getattr(embedder, "one_pass", False):
        for key, inputs, index in items:
            yield key, embedder(inputs)[index]
        return
    waiting: deque = deque()  # (key, number of distinct segments, index) with segments queued
    queued: List[np.ndarray] = []
    num_queued = 0
    done: List[np.ndarray] = []  # embeddings of queued segments, in order
    num_done = 0

    def run(final: bool) -> Iterator[Tuple[Any, np.ndarray]]:
        nonlocal queued, num_queued, num_done
        if num_queued >= batch_size or (final and num_queued):
            rows = np.concatenate(queued)
            cut = len(rows) - len(rows) % batch_size if not final else len(rows)
            for lo in range(0, cut, batch_size):
                done.append(embedder(rows[lo:lo + batch_size]))
            num_done += cut
            queued = [rows[cut:]] if cut < len(rows) else []
            num_queued = len(rows) - cut
        while waiting and waiting[0][1] <= num_done:
            key, count, index = waiting.popleft()
            out = np.concatenate(done) if len(done) > 1 else done[0]
            done[:] = [out[count:]]
            num_done -= count
            yield key, out[:count][index]

    for key, segments, index in items:
        waiting.append((key, len(segments), index))
        queued.append(segments)
        num_queued += len(segments)
        yield from run(final=False)
    yield from run(final=True)


def embed_utterances(embedder: Any, wavs: Sequence[np.ndarray], batch_size: int = 32) -> List[np.ndarray]:
    """(num_segments, D) segment embeddings (a one-pass model's: (1, D)) of each 1-D 16 kHz waveform
    in ``wavs``; each one first passes the checks of every input audio (:func:`svmix.data.audio.check_waveform`)."""
    n, one_pass = num_segments(embedder), embedder.one_pass
    names = ["waveform" if len(wavs) == 1 else f"waveform {i}" for i in range(len(wavs))]
    wavs = [check_waveform(w, SAMPLE_RATE, name) for w, name in zip(wavs, names)]

    def inputs(i: int) -> Item:
        try:
            return (i, *evaluation_inputs(wavs[i], embedder.segment_samples, n, one_pass,
                                          embedder.min_samples))
        except ValueError as e:
            raise SvmixError(f"{names[i]}: {e}") from None

    return [emb for _, emb in embed_stream(embedder, (inputs(i) for i in range(len(wavs))), batch_size)]
