"""svmix-cache-teacher: stage 2, run a teacher over a data directory and cache selected layers."""
import sys
from typing import List, Optional

import click

from svmix.cli import DEVICE, MAX_JOBS, SEED, FiniteFloat, IntList, OutPath, TeacherSpec, command, in_dir, user_errors
from svmix.errors import SvmixError


@command("svmix-cache-teacher")
@click.option("--teacher", "teacher_spec", type=TeacherSpec(),
              help="torchaudio bundle name, Hugging Face directory or svmix teacher checkpoint.")
@click.option("--data", "data_dir", type=in_dir(), help="Kaldi data directory (wav.scp).")
@click.option("--layers", type=IntList(min=0),
              help="Teacher layers to store, HF indexing (0 = Transformer input), e.g. 8,16,24 or 1-4.")
@click.option("--out", "out_dir", required=True, type=OutPath("dir"), help="Cache directory.")
@click.option("--dtype", type=click.Choice(["float16", "float32", "int8", "pq"]), default="float16", show_default=True,
              help="Frame format: float16/float32; int8 (see --int8-scale); pq, product quantisation to "
              "--pq-bytes bytes per layer and frame with k-means codebooks fitted on sample frames first.")
@click.option("--int8-scale", type=click.Choice(["frame", "channel"]), default="frame", show_default=True,
              help="int8: one scale per frame (hidden+4 bytes) or per channel, fitted on sample frames (hidden bytes).")
@click.option("--pq-bytes", type=click.IntRange(16, 64), default=32, show_default=True,
              help="pq: bytes (subspaces of 256 centroids) per layer and frame; must divide the teacher's hidden size.")
@click.option("--fit-frames", type=click.IntRange(256, 10**7), default=20000, show_default=True,
              help="pq / int8 per-channel: sample frames the codec is fitted on before caching.")
@click.option("--fit-seed", type=SEED, default=0, show_default=True,
              help="Seed of the fit sample and of k-means (the codec, hence the cache, is a function of it).")
@click.option("--nj", type=click.IntRange(1, MAX_JOBS), default=1, show_default=True,
              help="Parallel processes (per torchrun rank).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option("--chunk-seconds", type=FiniteFloat(min=0, min_open=True), default=30.0, show_default=True,
              help="Longer utterances are processed in chunks of this length (with context on both sides).")
@click.option("--chunk-context-seconds", type=FiniteFloat(min=0), default=4.0, show_default=True)
@click.option("--shard-mb", type=FiniteFloat(min=0, min_open=True), default=512.0, show_default=True,
              help="Target shard size.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable / too short audio (reported) instead of failing.")
@click.option("--verify", is_flag=True, help="Check sizes and checksums of the finished cache "
              "(alone: only verify OUT); exit 1 naming each bad shard.")
@user_errors
def main(teacher_spec: Optional[str], data_dir: Optional[str], layers: Optional[List[int]], out_dir: str, dtype: str,
         int8_scale: str, pq_bytes: int, fit_frames: int, fit_seed: int, nj: int, device: str, chunk_seconds: float,
         chunk_context_seconds: float, shard_mb: float, skip_bad: bool, verify: bool) -> None:
    """Cache teacher layers for every utterance of DATA into OUT.

    Resumable: rerun the same command after an interruption. A rerun checks each shard's size and
    crc32 and redoes bad ones; --verify also checks the sha256 of each shard. The cache layout is described in
    docs/conventions.md §Teacher feature cache.

    With --dtype pq (or int8 --int8-scale channel) a fit pass comes first: the teacher runs over
    utterances drawn with --fit-seed until --fit-frames frames are collected, and the codec is
    trained on them (k-means per subspace, one thread); training reads the cache unchanged."""
    from svmix.cache import CacheSettings, TeacherCache, build_cache, verify_cache
    from svmix.utils.logging import setup_logging

    setup_logging()
    given = [teacher_spec, data_dir, layers]
    if any(given) or not verify:
        if not all(given):
            raise SvmixError("--teacher, --data and --layers are required (or use --verify --out DIR alone)")
        options = {"int8": {"scale": int8_scale}, "pq": {"subspaces": pq_bytes}}.get(dtype, {})
        settings = CacheSettings(layers=layers, dtype=dtype, chunk_seconds=chunk_seconds,
                                 context_seconds=chunk_context_seconds, shard_mb=shard_mb, skip_bad=skip_bad,
                                 codec_options=options, fit_seed=fit_seed, fit_frames=fit_frames)
        if build_cache(teacher_spec, data_dir, out_dir, settings, nj=nj, device=device) is None:
            return  # a torchrun rank that finished before the last one, which reports
    if all(given):
        manifest = TeacherCache(out_dir).manifest
        click.echo(f"{out_dir}: {len(manifest['utts'])} utterances cached; {len(manifest['skipped'])} skipped")
    if verify:
        problems = verify_cache(out_dir)
        for problem in problems:
            click.echo(f"bad shard: {problem}", err=True)
        if problems:
            click.echo(f"{out_dir}: {len(problems)} bad shard(s); delete them and rerun svmix-cache-teacher "
                       "to rebuild only those", err=True)
            sys.exit(1)
        click.echo(f"{out_dir}: OK")


if __name__ == "__main__":
    main()
