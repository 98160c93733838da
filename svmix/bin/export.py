"""svmix-export: write a trained student as an ONNX or TorchScript segment embedder."""
import click

from svmix.cli import InPath, OutPath, command, user_errors
from svmix.export import DEFAULT_OPSET, EXPORT_FORMATS, PARITY_TOLERANCE, export_model
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
                   "torchscript: a traced module with the same signature.")
@click.option("--out", required=True, type=OutPath("file"), help="Output file (written atomically).")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, type=click.IntRange(MIN_OPSET, MAX_OPSET),
              help="ONNX opset version.")
@click.option("--no-check", is_flag=True,
              help=f"Skip the parity check against PyTorch (max abs difference ≤ {PARITY_TOLERANCE}).")
@user_errors
def main(model_path: str, fmt: str, out: str, opset: int, no_check: bool) -> None:
    """Export frontend + student encoder + backend (fast inference path) as a segment embedder.

    The model config (segment length, embedding size, ...) is stored in the file: ONNX metadata
    key 'svmix_config', TorchScript extra file 'svmix_config.json'."""
    setup_logging(None)
    summary = export_model(model_path, fmt, out, opset=opset, check=not no_check)
    check = "parity not checked" if summary["max_abs_diff"] is None else \
        f"max abs difference to PyTorch {summary['max_abs_diff']:.2e}"
    click.echo(f"{out}: {fmt} embedder, input (B, {summary['segment_samples']}) → (B, {summary['embed_dim']}); {check}")


if __name__ == "__main__":
    main()
