"""svmix-export: write a trained student as an ONNX or TorchScript segment embedder."""
import click

from svmix.cli import user_errors
from svmix.export import DEFAULT_OPSET, EXPORT_FORMATS, PARITY_TOLERANCE, export_model
from svmix.utils.logging import setup_logging


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_path", required=True, type=click.Path(),
              help="Experiment directory (uses EXP/model.pt) or checkpoint file.")
@click.option("--format", "fmt", required=True, type=click.Choice(EXPORT_FORMATS.names()),
              help="onnx: input 'waveform' (B, segment_samples) → output 'embedding' (B, D), dynamic batch; "
                   "torchscript: a traced module with the same signature.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file (written atomically).")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, type=int, help="ONNX opset version.")
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
