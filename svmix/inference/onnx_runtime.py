"""Run an exported ONNX segment embedder (``svmix-export --format onnx``) with onnxruntime."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import numpy as np

from svmix.errors import SvmixError

CONFIG_KEY = "svmix_config"  # the ONNX metadata entry holding the model config (written by svmix.export)


class OnnxSegmentEmbedder:
    """(B, segment_samples) float32 segments → (B, D) embeddings, like ``SegmentEmbedder``.

    ``config`` is the model config stored in the file, ``segment_samples`` and ``embed_dim`` come from it."""

    def __init__(self, path: os.PathLike, num_threads: Optional[int] = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise SvmixError(f"{path}: cannot load ONNX model ({' '.join(str(e).split())[:200]})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in metadata:
            raise SvmixError(f"{path}: not an svmix export (no '{CONFIG_KEY}' metadata)")
        self.config: Dict[str, Any] = json.loads(metadata[CONFIG_KEY])
        self.segment_samples = int(metadata["segment_samples"])
        self.embed_dim = int(metadata["embed_dim"])
        self.precision = metadata.get("precision", "float32")  # exports before int8 existed were float32
        self.one_pass = False  # svmix-export writes one-pass models as pt2 only
        self.min_samples = 1   # fixed-length segments: a short utterance is repeated to one segment
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, segments: np.ndarray) -> np.ndarray:
        segments = np.ascontiguousarray(segments, dtype=np.float32)
        if segments.ndim != 2 or segments.shape[1] != self.segment_samples:
            raise ValueError(f"expected segments of shape (B, {self.segment_samples}), got {segments.shape}")
        return self.session.run([self.output_name], {self.input_name: segments})[0]
