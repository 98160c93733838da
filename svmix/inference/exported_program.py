"""Run an exported torch.export program (``svmix-export --format pt2``) as a segment (or one-pass) embedder."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from svmix.errors import SvmixError
from svmix.inference.onnx_runtime import CONFIG_KEY

METADATA_FILE = "svmix_metadata.json"  # extra file of .pt2 (and TorchScript) exports: svmix.export.export_metadata


@contextlib.contextmanager
def quiet_torch_export():
    """Silence torch's exporter chatter (deprecation notes, progress lines, skipped torchvision ops)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def load_exported_program(path: os.PathLike) -> Tuple[nn.Module, Dict[str, str]]:
    """Load a ``.pt2`` export: the callable module (B, N) → (B, D) and its metadata
    (``svmix.export.export_metadata``; the model config is ``json.loads(metadata["svmix_config"])``)."""
    extra = {METADATA_FILE: ""}
    try:
        with quiet_torch_export():
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as e:
        raise SvmixError(f"{path}: cannot load torch.export program ({' '.join(str(e).split())[:200]})") from None
    if not extra[METADATA_FILE]:
        raise SvmixError(f"{path}: not an svmix export (no {METADATA_FILE})")
    return program.module(), json.loads(extra[METADATA_FILE])


class ExportedProgramEmbedder:
    """(B, segment_samples) float32 segments → (B, D) embeddings from a ``.pt2`` file on the CPU,
    like ``SegmentEmbedder``; ``config``, ``segment_samples``, ``embed_dim``, ``precision`` and
    ``one_pass`` come from its metadata. A one-pass export takes (B, N) inputs of any N from
    ``min_samples`` to ``max_samples``."""

    def __init__(self, path: os.PathLike, num_threads: Optional[int] = None):
        self.module, metadata = load_exported_program(path)
        if CONFIG_KEY not in metadata:
            raise SvmixError(f"{path}: not an svmix export (no '{CONFIG_KEY}' in {METADATA_FILE})")
        self.config: Dict[str, Any] = json.loads(metadata[CONFIG_KEY])
        self.segment_samples = int(metadata["segment_samples"])
        self.embed_dim = int(metadata["embed_dim"])
        self.precision = metadata.get("precision", "float32")
        self.one_pass = metadata.get("one_pass") == "true"
        self.min_samples = int(metadata.get("min_samples", self.segment_samples))
        self.max_samples = int(metadata.get("max_samples", self.segment_samples))
        if num_threads:
            torch.set_num_threads(num_threads)

    def __call__(self, segments: np.ndarray) -> np.ndarray:
        segments = np.ascontiguousarray(segments, dtype=np.float32)
        if self.one_pass:
            if segments.ndim != 2 or not self.min_samples <= segments.shape[1] <= self.max_samples:
                raise ValueError(f"expected inputs of shape (B, N) with {self.min_samples} <= N <= "
                                 f"{self.max_samples} samples, got {segments.shape}")
        elif segments.ndim != 2 or segments.shape[1] != self.segment_samples:
            raise ValueError(f"expected segments of shape (B, {self.segment_samples}), got {segments.shape}")
        with torch.inference_mode():
            return self.module(torch.from_numpy(segments)).numpy()
