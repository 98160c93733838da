"""Deployment export of a student (frontend + encoder + backend) as a segment embedder.

Formats (registry ``EXPORT_FORMATS``; ``svmix-export --format``):

- ``onnx``: ONNX opset 17 by default (``--opset``), written by ``torch.onnx.export``; input
  ``waveform`` float32 (B, segment_samples), output ``embedding`` float32 (B, D), dynamic batch axis.
  The resolved model config is stored as JSON in the model's ``metadata_props`` under
  ``svmix_config`` (with ``segment_samples`` and ``embed_dim`` as separate keys); run it with
  :class:`svmix.inference.onnx_runtime.OnnxSegmentEmbedder`.
- ``torchscript``: ``torch.jit.trace`` of the same module; the config is stored as the extra file
  ``svmix_config.json`` (``torch.jit.load(path, _extra_files={"svmix_config.json": ""})``).

Both are traced from the fast inference path (``svmix.models.fast``) and checked against the
PyTorch model at export time (max abs difference ≤ 1e-4, else an error).
"""
from svmix.export.exporter import (CONFIG_KEY, DEFAULT_OPSET, EXPORT_FORMATS, PARITY_TOLERANCE,  # noqa: F401
                                   export_model, load_torchscript)
