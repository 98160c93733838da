"""Deployment export of a student (frontend + encoder + backend) as a segment embedder.

Formats (registry ``EXPORT_FORMATS``; ``svmix-export --format``), all with input ``waveform`` float32
(B, segment_samples), output ``embedding`` float32 (B, D) and a dynamic batch axis:

- ``onnx``: ONNX opset 17 by default (``--opset``), written by ``torch.onnx.export`` with the
  TorchScript-based exporter (``--onnx-exporter legacy``, the default: it needs only onnx, writes
  any opset from 7 on, and is what every earlier export used) or the torch.export-based one
  (``--onnx-exporter dynamo``: torch's default and supported route, needs the onnxscript package and
  opset >= 18). Run it with :class:`svmix.inference.onnx_runtime.OnnxSegmentEmbedder`.
  ``--quantize int8``: onnxruntime dynamic quantisation of the GEMMs (:func:`quantize_onnx_int8`).
  A filterbank frontend goes through the legacy exporter as an index gather and a DFT matrix product
  (it has no rfft and mis-shapes unfold: ``svmix.models.fbank.use_onnx_operators``), kept in float by int8.
- ``pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``); load it with
  :func:`load_exported_program`, or run it with ``svmix-extract --runtime pt2`` /
  ``svmix.load_model(runtime="pt2")`` (:class:`svmix.inference.exported_program.ExportedProgramEmbedder`).
- ``torchscript``: ``torch.jit.trace`` of the same module (torch marks torch.jit deprecated in favour
  of torch.export; kept for libtorch runtimes); load it with :func:`load_torchscript`.

Metadata (:func:`export_metadata`: model config, sample rate, segment length, segment rule
``num_eval_segments`` and ``one_pass``, input lengths ``min_samples``/``max_samples``, embedding size,
precision, exporter): ONNX ``metadata_props``; for ``pt2``
and ``torchscript`` the JSON extra file ``svmix_metadata.json`` inside the archive (TorchScript also
keeps the config alone as ``svmix_config.json``, as before).

All are traced from the fast inference path (``svmix.models.fast``, which runs the reference
computation while a graph is recorded) and checked against the PyTorch model at export time on random
and speech-like segments: max abs difference <= 1e-4, or for int8 a cosine >= 0.99, else an error.
A one-pass model (``SpeakerModel.one_pass``) exports as ``pt2`` only, with a dynamic samples axis
(0.1 s to 1 h) and the parity check at several lengths; ONNX and TorchScript refuse it.
"""
from svmix.export.exporter import (CONFIG_KEY, DEFAULT_ONNX_EXPORTER, DEFAULT_OPSET, EXPORT_FORMATS,  # noqa: F401
                                   INT8_MIN_COSINE, METADATA_FILE, ONNX_EXPORTERS, PARITY_TOLERANCE,
                                   QUANTIZATIONS, export_metadata, export_model, load_exported_program,
                                   load_torchscript)
