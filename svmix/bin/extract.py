"""svmix-extract: embed utterances with a trained model into Kaldi xvector.ark/xvector.scp (stage 4)."""
from pathlib import Path
from typing import Optional

import click

from svmix.cli import MAX_JOBS, InPath, OutPath, command, in_dir, in_file, user_errors
from svmix.inference.extract import extract_embeddings, list_inputs
from svmix.models.fast.model import PRECISIONS
from svmix.utils.logging import setup_logging


@command("svmix-extract")
@click.option("--model", required=True, type=InPath("any"), help="Experiment dir (its model.pt) or checkpoint.")
@click.option("--data", type=in_dir(), help="Kaldi data dir (its wav.scp), or a dir of audio shards (shard.list).")
@click.option("--wav-scp", type=in_file(), help="A wav.scp: '<utt-id> <path>' lines.")
@click.option("--wav-dir", type=in_dir(),
              help="All .wav/.flac files below DIR; utterance id = relative path without extension.")
@click.option("--out", required=True, type=OutPath("dir"), help="Output dir for xvector.ark/.scp.")
@click.option("--runtime", type=click.Choice(["torch", "onnx", "pt2"]), default="torch", show_default=True,
              help="torch: the checkpoint on PyTorch's fast CPU path; onnx: an svmix-export --format onnx "
                   "file on onnxruntime; pt2: an svmix-export --format pt2 torch.export program (float32, CPU).")
@click.option("--onnx", type=in_file(),
              help="ONNX model for --runtime onnx [default: model.onnx next to the checkpoint].")
@click.option("--pt2", type=in_file(),
              help="torch.export program for --runtime pt2 [default: model.pt2 next to the checkpoint].")
@click.option("--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True,
              help="int8 (opt-in, CPU): --runtime torch runs the SV-Mixer blocks' GEMMs with int8 weights "
                   "(per output channel) and dynamically quantised activations; --runtime onnx needs an "
                   "ONNX file exported with --quantize int8. Embeddings differ slightly from float32.")
@click.option("--average", is_flag=True,
              help="Store one embedding per utterance (normalised mean of normalised segment embeddings) "
                   "instead of the (segments, D) matrix. A one-pass model (e.g. encoder svmixer_anylen) "
                   "embeds each utterance whole, as one (1, D) row.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Segments per forward pass (a one-pass model runs one utterance per pass).")
@click.option("--num-workers", type=click.IntRange(0, MAX_JOBS), default=2, show_default=True,
              help="Audio-loading worker processes per job.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--num-threads", type=click.IntRange(1, MAX_JOBS),
              help="CPU threads per job [default: all, or cores / nj].")
@click.option("--nj", type=click.IntRange(1, MAX_JOBS), default=1, show_default=True,
              help="Parallel local jobs (one shard each).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable audio (reported and counted) instead of stopping.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=500, show_default=True,
              help="Utterances per resumable chunk (a killed run redoes only unfinished chunks).")
@user_errors
def main(model: str, data: Optional[str], wav_scp: Optional[str], wav_dir: Optional[str], out: str, runtime: str,
         onnx: Optional[str], pt2: Optional[str], precision: str, average: bool, batch_size: int, num_workers: int, device: str,
         num_threads: Optional[int], nj: int, skip_bad: bool, chunk_size: int) -> None:
    """Embed every utterance into OUT/xvector.ark + OUT/xvector.scp, keyed by utterance id.

    Resumable: rerun the same command after an interruption. Under torchrun each rank is one shard.
    """
    setup_logging(None)  # OUT/extract.log is added once this run holds OUT
    stats = extract_embeddings(model, list_inputs(data, wav_scp, wav_dir), out, runtime=runtime, onnx=onnx,
                               average=average, batch_size=batch_size, num_workers=num_workers, device=device,
                               num_threads=num_threads, nj=nj, skip_bad=skip_bad, chunk_size=chunk_size,
                               log_file=Path(out) / "extract.log", precision=precision, pt2=pt2)
    if stats is not None:
        rtf = "n/a" if stats["rtf"] is None else f"{stats['rtf']:.4f}"
        click.echo(f"{out}/xvector.scp: {stats['total_utts']} utterances; real-time factor {rtf} "
                   f"({stats['audio_seconds']:.1f} s of audio in {stats['wall_seconds']:.1f} s); "
                   f"{stats['skipped']} skipped")


if __name__ == "__main__":
    main()
