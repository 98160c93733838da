"""Export a checkpoint's student to ONNX, a torch.export program or TorchScript and check it against PyTorch."""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from svmix.checkpoint import load_model_checkpoint
from svmix.data.audio import SAMPLE_RATE
from svmix.errors import SvmixError
from svmix.inference.exported_program import METADATA_FILE, ExportedProgramEmbedder, quiet_torch_export
from svmix.inference.exported_program import load_exported_program  # noqa: F401 (svmix.export's API)
from svmix.inference.onnx_runtime import CONFIG_KEY, OnnxSegmentEmbedder
from svmix.models.fast import prepare_for_inference
from svmix.models.fbank import FbankFrontend, use_onnx_operators
from svmix.models.svmixer_anylen import prepare_for_export
from svmix.registry import Registry
from svmix.utils.fileio import atomic_path
from svmix.utils.locking import output_lock
from svmix.utils.logging import get_logger

DEFAULT_OPSET = 17
DYNAMO_MIN_OPSET = 18  # the torch.export-based ONNX exporter writes opset 18 and later
PARITY_TOLERANCE = 1e-4
INT8_MIN_COSINE = 0.99  # an int8 export must keep every check embedding this close (cosine) to float32
TORCHSCRIPT_CONFIG_FILE = "svmix_config.json"
INPUT_NAME, OUTPUT_NAME = "waveform", "embedding"
ONNX_EXPORTERS = ("legacy", "dynamo")
DEFAULT_ONNX_EXPORTER = "legacy"
QUANTIZATIONS = ("none", "int8")
MAX_BATCH = 4096  # upper bound of the dynamic batch axis of a torch.export program
ONE_PASS_FORMATS = ("pt2",)  # the formats written with a dynamic time axis, so a one-pass model exports
ONE_PASS_MIN_SAMPLES = SAMPLE_RATE // 10  # a one-pass export takes 0.1 s ...
ONE_PASS_MAX_SAMPLES = 3600 * SAMPLE_RATE  # ... to one hour

EXPORT_FORMATS = Registry("export format")
log = get_logger("export")


def example_segments(model: nn.Module, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A reproducible batch of speech-like random segments for tracing and parity checks."""
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, model.segment_samples, generator=g)


def input_range(model: nn.Module) -> Dict[str, int]:
    """The input lengths an export takes: the segment, or a one-pass model's range."""
    if model.one_pass:
        return {"min_samples": ONE_PASS_MIN_SAMPLES, "max_samples": ONE_PASS_MAX_SAMPLES}
    return {"min_samples": model.segment_samples, "max_samples": model.segment_samples}


def export_metadata(model: nn.Module, precision: str = "float32", exporter: str = "") -> Dict[str, str]:
    """What a runtime needs besides the graph, as strings (ONNX ``metadata_props``; the JSON extra
    file ``svmix_metadata.json`` of .pt2 and TorchScript files): the resolved model config, the
    sample rate, the segment length in samples and seconds, the segment rule (``num_eval_segments``
    segments per utterance, scored as the mean cosine over all segment pairs; ``one_pass`` "false":
    the file embeds fixed-length segments, "true": whole utterances, one pass each), the input
    lengths it takes (``min_samples``..``max_samples``: the segment length, or a one-pass model's
    range), the embedding size, the weight precision and the exporter."""
    config, lengths = model.config, input_range(model)
    if model.one_pass:
        rule = (f"the whole utterance in one pass ({lengths['min_samples']}-{lengths['max_samples']} samples); "
                "score = cosine of the two embeddings")
    else:
        rule = (f"{config['num_eval_segments']} evenly spaced segments per utterance; "
                "score = mean cosine over all segment pairs")
    return {CONFIG_KEY: json.dumps(config, sort_keys=True), "sample_rate": str(SAMPLE_RATE),
            "segment_samples": str(model.segment_samples), "segment_seconds": str(config["segment_seconds"]),
            "num_eval_segments": str(config["num_eval_segments"]), "one_pass": str(model.one_pass).lower(),
            **{key: str(value) for key, value in lengths.items()}, "segment_rule": rule,
            "embed_dim": str(model.embed_dim), "precision": precision, "exporter": exporter}


_quiet_exporter = quiet_torch_export


def _dynamic_shapes(model: nn.Module) -> Dict[str, Dict[int, Any]]:
    """torch.export's dynamic axes: the batch, and a one-pass model's samples. The samples axis is
    ``Dim.AUTO``: its guards (e.g. "the half-rate path has more than one frame") hold on the whole
    range, but torch's solver cannot prove every one of them, and a named ``Dim`` would refuse
    them; the parity check at several lengths (:func:`check_lengths`) catches a program that
    specialised the axis anyway."""
    dims: Dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}
    if model.one_pass:
        dims[1] = torch.export.Dim.AUTO(min=ONE_PASS_MIN_SAMPLES, max=ONE_PASS_MAX_SAMPLES)
    return {"wav": dims}


@EXPORT_FORMATS.register("onnx")
def export_onnx(model: nn.Module, path: Path, opset: int = DEFAULT_OPSET, onnx_exporter: str = DEFAULT_ONNX_EXPORTER,
                quantize: str = "none") -> Callable[[np.ndarray], np.ndarray]:
    """Write ``model`` as ONNX to ``path`` with the TorchScript-based (``legacy``) or the
    torch.export-based (``dynamo``, needs onnxscript) exporter, optionally with int8 weights
    (:func:`quantize_onnx_int8`); return a function running the file with onnxruntime."""
    import onnx

    if onnx_exporter == "dynamo":
        if opset < DYNAMO_MIN_OPSET:
            raise SvmixError(f"--onnx-exporter dynamo writes opset {DYNAMO_MIN_OPSET} or later, not --opset {opset}")
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise SvmixError("--onnx-exporter dynamo needs the onnxscript package (pip install onnxscript), "
                             "or use --onnx-exporter legacy") from None
    with _quiet_exporter():
        if onnx_exporter == "dynamo":
            torch.onnx.export(model, (example_segments(model),), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                              dynamic_shapes=_dynamic_shapes(model), external_data=False, verbose=False)
        else:  # any opset from 7 on; the traced copy avoids rfft and unfold (use_onnx_operators)
            traced = use_onnx_operators(copy.deepcopy(model))
            torch.onnx.export(traced, (example_segments(model),), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    if quantize == "int8":  # the filterbanks' DFT and mel products stay float: int8 would wreck log energies
        quantize_onnx_int8(path, keep_float=["/" + name.replace(".", "/") + "/" for name, module
                                             in model.named_modules() if isinstance(module, FbankFrontend)])
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in export_metadata(model, "int8" if quantize == "int8" else "float32",
                                      f"torch.onnx.export ({onnx_exporter})").items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return OnnxSegmentEmbedder(path)


ONNX_INT8_OPS = ("MatMul", "Gemm", "Conv")  # the GEMMs: Linear layers, 1×1 / grouped / k-tap convolutions


def quantize_onnx_int8(path: Path, keep_float: Sequence[str] = ()) -> None:
    """Rewrite the float ONNX file ``path`` with onnxruntime's dynamic quantisation: int8 weights
    with a scale per output channel, activations quantised at run time (uint8, one scale per
    tensor per call), for the ``ONNX_INT8_OPS`` nodes, except those whose names start with one of
    ``keep_float`` (module scopes as the exporter names nodes, e.g. ``/frontend/fbank/``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name(path.name + ".pre.onnx")
    quantized = path.with_name(path.name + ".int8.onnx")
    try:
        with _quiet_exporter():
            quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
            excluded = [node.name for node in onnx.load(str(prepared)).graph.node
                        if keep_float and node.name.startswith(tuple(keep_float))]
            quantize_dynamic(str(prepared), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=list(ONNX_INT8_OPS), nodes_to_exclude=excluded)
        os.replace(quantized, path)
    finally:
        for leftover in (prepared, quantized):
            leftover.unlink(missing_ok=True)


@EXPORT_FORMATS.register("pt2")
def export_pt2(model: nn.Module, path: Path, **_: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Write ``model`` as a ``torch.export`` ExportedProgram (``torch.export.save``) with a dynamic
    batch axis (and, for a one-pass model, a dynamic samples axis) and the metadata in the extra file
    ``svmix_metadata.json``; return a function running the loaded file."""
    traced = prepare_for_export(copy.deepcopy(model)) if model.one_pass else model
    with _quiet_exporter():
        program = torch.export.export(traced, (example_segments(model),), dynamic_shapes=_dynamic_shapes(model))
    torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(export_metadata(
        model, exporter="torch.export"), sort_keys=True)})
    return ExportedProgramEmbedder(path)


@EXPORT_FORMATS.register("torchscript")
def export_torchscript(model: nn.Module, path: Path, **_: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Write ``model`` as traced TorchScript to ``path``; return a function running the loaded file.

    torch marks ``torch.jit`` (trace, script, save) deprecated in favour of torch.export (``pt2``);
    it stays for runtimes that load TorchScript (libtorch C++)."""
    with _quiet_exporter():
        traced = torch.jit.trace(model, (example_segments(model),), check_trace=False)
        extra = {TORCHSCRIPT_CONFIG_FILE: json.dumps(model.config, sort_keys=True),
                 METADATA_FILE: json.dumps(export_metadata(model, exporter="torch.jit.trace"), sort_keys=True)}
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


def check_segments(model: nn.Module, batch: int = 3, samples: Optional[int] = None) -> torch.Tensor:
    """Parity-check input: random segments and speech-like ones (harmonics with a moving pitch under
    a syllable-rate envelope, plus noise), in a batch size other than the traced one (so a batch
    axis frozen by tracing is caught too), of ``samples`` (default: the segment's)."""
    n = samples or model.segment_samples
    g = torch.Generator().manual_seed(1)
    t = torch.arange(n) / SAMPLE_RATE
    speech = []
    for i in range(batch - 1):
        f0 = 100.0 + 60.0 * i + 20.0 * torch.sin(2 * torch.pi * 3.0 * t)
        phase = 2 * torch.pi * torch.cumsum(f0, 0) / SAMPLE_RATE
        voiced = sum(torch.sin(k * phase) / k for k in range(1, 8))
        envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 4.0 * t + i))
        speech.append(0.05 * voiced * envelope + 0.003 * torch.randn(n, generator=g))
    return torch.cat([0.1 * torch.randn(1, n, generator=g), torch.stack(speech)])


def check_lengths(model: nn.Module) -> Tuple[int, ...]:
    """Input lengths of the parity check: the segment; for a one-pass model also the shortest input
    its export takes and one of 2⅓ segments (three token windows, the last one moved back)."""
    n = model.segment_samples
    return (n, ONE_PASS_MIN_SAMPLES, 2 * n + n // 3 + 7) if model.one_pass else (n,)


def check_parity(model: nn.Module, run: Callable[[np.ndarray], np.ndarray], batch: int = 3) -> Tuple[float, float]:
    """(max abs difference, min cosine) between ``run`` and the PyTorch model on ``check_segments``
    of every length of :func:`check_lengths`."""
    diff, cosine = 0.0, 1.0
    for samples in check_lengths(model):
        segments = check_segments(model, batch, samples)
        with torch.inference_mode():
            expected = model(segments).numpy()
        try:
            got = np.asarray(run(segments.numpy()))
        except Exception as e:  # e.g. a guard of a program that specialised the length
            raise SvmixError(f"the exported model fails on a {tuple(segments.shape)} input "
                             f"({' '.join(str(e).split())[:200]})") from None
        if got.shape != expected.shape:
            return float("inf"), float("-inf")
        cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1) + 1e-12)
        diff, cosine = max(diff, float(np.abs(got - expected).max())), min(cosine, float(cos.min()))
    return diff, cosine


def export_model(model_path: os.PathLike, fmt: str, out: os.PathLike, opset: int = DEFAULT_OPSET,
                 check: bool = True, onnx_exporter: str = DEFAULT_ONNX_EXPORTER,
                 quantize: str = "none") -> Dict[str, Any]:
    """Export the checkpoint (or experiment dir) ``model_path`` to ``out`` in format ``fmt``.

    A float export must match PyTorch within ``PARITY_TOLERANCE`` (max abs difference); an int8 one
    (``quantize="int8"``, ONNX only) must keep a cosine of at least ``INT8_MIN_COSINE`` to the float
    PyTorch embeddings. Returns a summary (format, path, opset, onnx_exporter, precision,
    segment_samples, embed_dim, max_abs_diff, min_cosine)."""
    exporter = EXPORT_FORMATS.get(fmt)
    if fmt == "onnx" and not 7 <= opset <= 23:
        raise SvmixError(f"--opset {opset} is outside the supported range 7-23")
    if onnx_exporter not in ONNX_EXPORTERS:
        raise SvmixError(f"--onnx-exporter must be one of {', '.join(ONNX_EXPORTERS)}, not {onnx_exporter!r}")
    if quantize not in QUANTIZATIONS:
        raise SvmixError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    if quantize != "none" and fmt != "onnx":
        raise SvmixError(f"--quantize {quantize} is for --format onnx (the PyTorch int8 path is "
                         f"svmix-extract --precision int8), not --format {fmt}")
    if onnx_exporter != DEFAULT_ONNX_EXPORTER and fmt != "onnx":
        raise SvmixError(f"--onnx-exporter is for --format onnx, not --format {fmt}")
    model, _ = load_model_checkpoint(model_path)
    if model.one_pass and fmt not in ONE_PASS_FORMATS:  # docs/architecture.md §Any-length SV-Mixer
        raise SvmixError(f"{model_path}: a one-pass model ('{model.config['encoder']['name']}' encoder) takes "
                         f"inputs of any length; --format {fmt} writes fixed-length segment embedders, "
                         f"--format {' or '.join(ONE_PASS_FORMATS)} exports it with a dynamic time axis")
    model = prepare_for_inference(model)
    out = Path(out)
    log.info("exporting %s to %s (%s)", model_path, out, fmt)
    with output_lock(out, "svmix-export", is_dir=False), atomic_path(out) as tmp:
        try:
            options = {"onnx_exporter": onnx_exporter, "quantize": quantize} if fmt == "onnx" else {}
            run = exporter(model, tmp, opset=opset, **options)
        except SvmixError:
            raise
        except Exception as e:  # an exporter failure is reported in one line, not as a traceback
            raise SvmixError(f"{fmt} export of {model_path} failed: {' '.join(str(e).split())[:300]}") from e
        try:
            diff, cosine = check_parity(model, run) if check else (None, None)
        except SvmixError as e:
            raise SvmixError(f"{out}: {e}; not written") from None
        if quantize == "int8":
            if cosine is not None and not cosine >= INT8_MIN_COSINE:
                raise SvmixError(f"{out}: int8 {fmt} model keeps a cosine of only {cosine:.4f} to float32 "
                                 f"(< {INT8_MIN_COSINE}); not written")
        elif diff is not None and not diff <= PARITY_TOLERANCE:
            raise SvmixError(f"{out}: exported {fmt} model differs from PyTorch by {diff:.3g} "
                             f"(> {PARITY_TOLERANCE}); not written")
    if diff is not None:
        log.info("parity check passed: max abs difference %.3g, min cosine %.6f", diff, cosine)
    return {"format": fmt, "path": str(out), "opset": opset if fmt == "onnx" else None,
            "onnx_exporter": onnx_exporter if fmt == "onnx" else None,
            "precision": "int8" if quantize == "int8" else "float32",
            "segment_samples": model.segment_samples, "embed_dim": model.embed_dim, "max_abs_diff": diff,
            "min_cosine": cosine, "one_pass": model.one_pass, **input_range(model)}
