"""Export a checkpoint's student to ONNX or TorchScript and check it against PyTorch."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch
from torch import nn

from svmix.checkpoint import load_model_checkpoint
from svmix.errors import SvmixError
from svmix.inference.onnx_runtime import CONFIG_KEY, OnnxSegmentEmbedder
from svmix.models.fast import prepare_for_inference
from svmix.registry import Registry
from svmix.utils.fileio import atomic_path
from svmix.utils.locking import output_lock
from svmix.utils.logging import get_logger

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
TORCHSCRIPT_CONFIG_FILE = "svmix_config.json"
INPUT_NAME, OUTPUT_NAME = "waveform", "embedding"

EXPORT_FORMATS = Registry("export format")
log = get_logger("export")


def example_segments(model: nn.Module, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A reproducible batch of speech-like random segments for tracing and parity checks."""
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, model.segment_samples, generator=g)


def _runtime_metadata(model: nn.Module) -> Dict[str, str]:
    return {CONFIG_KEY: json.dumps(model.config, sort_keys=True),
            "segment_samples": str(model.segment_samples), "embed_dim": str(model.embed_dim)}


@EXPORT_FORMATS.register("onnx")
def export_onnx(model: nn.Module, path: Path, opset: int = DEFAULT_OPSET) -> Callable[[np.ndarray], np.ndarray]:
    """Write ``model`` as ONNX to ``path``; return a function running the file with onnxruntime."""
    import onnx

    # The TorchScript-based exporter writes any opset from 7 on (the dynamo one starts at 18).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example_segments(model),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load(str(path))
    for key, value in _runtime_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return OnnxSegmentEmbedder(path)


@EXPORT_FORMATS.register("torchscript")
def export_torchscript(model: nn.Module, path: Path, opset: int = DEFAULT_OPSET) -> Callable[[np.ndarray], np.ndarray]:
    """Write ``model`` as traced TorchScript to ``path``; return a function running the loaded file."""
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, but still the
        warnings.simplefilter("ignore")  # format that C++ (libtorch) runtimes load
        traced = torch.jit.trace(model, (example_segments(model),), check_trace=False)
        extra = {TORCHSCRIPT_CONFIG_FILE: json.dumps(model.config, sort_keys=True)}
        torch.jit.save(traced, str(path), _extra_files=extra)
        loaded, _ = load_torchscript(path)

    def run(segments: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return loaded(torch.from_numpy(segments)).numpy()

    return run


def load_torchscript(path: os.PathLike) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """Load an exported TorchScript embedder and its model config."""
    extra = {TORCHSCRIPT_CONFIG_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[TORCHSCRIPT_CONFIG_FILE])


def check_parity(model: nn.Module, run: Callable[[np.ndarray], np.ndarray], batch: int = 3) -> float:
    """Max abs difference between ``run`` and the PyTorch model on segments of a batch size other than
    the traced one (so a batch axis frozen by tracing is caught too)."""
    segments = example_segments(model, batch=batch, seed=1)
    with torch.inference_mode():
        expected = model(segments).numpy()
    got = np.asarray(run(segments.numpy()))
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max())


def export_model(model_path: os.PathLike, fmt: str, out: os.PathLike, opset: int = DEFAULT_OPSET,
                 check: bool = True) -> Dict[str, Any]:
    """Export the checkpoint (or experiment dir) ``model_path`` to ``out`` in format ``fmt``.

    Returns a summary (format, path, opset, segment_samples, embed_dim, max_abs_diff)."""
    exporter = EXPORT_FORMATS.get(fmt)
    if fmt == "onnx" and not 7 <= opset <= 23:
        raise SvmixError(f"--opset {opset} is outside the supported range 7-23")
    model, _ = load_model_checkpoint(model_path)
    model = prepare_for_inference(model)
    out = Path(out)
    log.info("exporting %s to %s (%s)", model_path, out, fmt)
    with output_lock(out, "svmix-export", is_dir=False), atomic_path(out) as tmp:
        try:
            run = exporter(model, tmp, opset=opset)
        except SvmixError:
            raise
        except Exception as e:  # an exporter failure is reported in one line, not as a traceback
            raise SvmixError(f"{fmt} export of {model_path} failed: {' '.join(str(e).split())[:300]}") from e
        diff = check_parity(model, run) if check else None
        if diff is not None and not diff <= PARITY_TOLERANCE:
            raise SvmixError(f"{out}: exported {fmt} model differs from PyTorch by {diff:.3g} "
                             f"(> {PARITY_TOLERANCE}); not written")
    if diff is not None:
        log.info("parity check passed: max abs difference %.3g", diff)
    return {"format": fmt, "path": str(out), "opset": opset if fmt == "onnx" else None,
            "segment_samples": model.segment_samples, "embed_dim": model.embed_dim, "max_abs_diff": diff}
