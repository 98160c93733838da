"""svmix-export: write a trained student as an ONNX, torch.export (.pt2) or TorchScript segment embedder
(a one-pass model: .pt2 with a dynamic time axis)."""
import click

from svmix.cli import InPath, OutPath, command, user_errors
from svmix.export import (DEFAULT_ONNX_EXPORTER, DEFAULT_OPSET, EXPORT_FORMATS, INT8_MIN_COSINE, ONNX_EXPORTERS,
                          PARITY_TOLERANCE, QUANTIZATIONS, export_model)
from svmix.utils.logging import setup_logging

try:  # the opsets this torch can export
    from torch.onnx._constants import ONNX_MAX_OPSET as MAX_OPSET, ONNX_MIN_OPSET as MIN_OPSET
except ImportError:  # pragma: no cover (private torch module moved)
    MIN_OPSET, MAX_OPSET = 7, DEFAULT_OPSET


@command("svmix-export")
@click.option("--model", "model_path", required=True, type=InPath("any"),
              help="Experiment directory (uses EXP/model.pt) or checkpoint file.")
@click.option("--format", "fmt", required=True, type=click.Choice(EXPORT_FORMATS.names()),
              help="onnx: input 'waveform' (B, segment_samples) → output 'embedding' (B, D), dynamic batch; "
                   "pt2: a torch.export ExportedProgram (torch.export.save) with the same signature, and the "
                   "only format of a one-pass (any-length) model: input (B, N), any N from 0.1 s to 1 h; "
                   "torchscript: a traced module with the same signature (torch marks torch.jit deprecated; "
                   "prefer pt2 unless a libtorch runtime needs TorchScript).")
@click.option("--out", required=True, type=OutPath("file"), help="Output file (written atomically).")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, type=click.IntRange(MIN_OPSET, MAX_OPSET),
              help="ONNX opset version (the dynamo exporter needs 18 or later).")
@click.option("--onnx-exporter", type=click.Choice(ONNX_EXPORTERS), default=DEFAULT_ONNX_EXPORTER, show_default=True,
              help="legacy: torch's TorchScript-based ONNX exporter (deprecated by torch; needs only onnx, any "
                   "opset); dynamo: the torch.export-based exporter (torch's supported route; needs the "
                   "onnxscript package and --opset >= 18). The default stays legacy while onnxscript is not "
                   "a dependency of svmix.")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default="none", show_default=True,
              help="int8 (opt-in, --format onnx only): onnxruntime dynamic quantisation of the GEMMs "
                   "(MatMul/Gemm/Conv weights int8 per output channel, activations quantised at run time); "
                   f"checked to keep a cosine >= {INT8_MIN_COSINE} to float32 instead of the exact parity check.")
@click.option("--no-check", is_flag=True,
              help=f"Skip the parity check against PyTorch (max abs difference ≤ {PARITY_TOLERANCE}).")
@user_errors
def main(model_path: str, fmt: str, out: str, opset: int, onnx_exporter: str, quantize: str, no_check: bool) -> None:
    """Export frontend + student encoder + backend (fast inference path) as a segment embedder.

    The metadata (model config, sample rate, segment length, segment rule, embedding size,
    precision) is stored in the file: ONNX metadata_props, .pt2 and TorchScript extra file
    'svmix_metadata.json'."""
    setup_logging(None)
    summary = export_model(model_path, fmt, out, opset=opset, check=not no_check, onnx_exporter=onnx_exporter,
                           quantize=quantize)
    check = "parity not checked" if summary["max_abs_diff"] is None else \
        f"max abs difference to PyTorch {summary['max_abs_diff']:.2e}, min cosine {summary['min_cosine']:.6f}"
    samples = f"N = {summary['min_samples']}..{summary['max_samples']}" if summary["one_pass"] else \
        summary["segment_samples"]
    click.echo(f"{out}: {fmt} {summary['precision']} embedder, input (B, {samples}) → "
               f"(B, {summary['embed_dim']}); {check}")


if __name__ == "__main__":
    main()
