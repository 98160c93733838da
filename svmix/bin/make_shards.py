"""svmix-make-shards: write a data directory as tar shards for sequential reading (WeSpeaker layout)."""
import click

from svmix.cli import SEED, OutPath, command, in_dir, user_errors


@command("svmix-make-shards")
@click.option("--data", "data_dir", required=True, type=in_dir(), help="Kaldi data dir (wav.scp, utt2spk).")
@click.option("--out", "out_dir", required=True, type=OutPath("dir"), help="Shard dir to write.")
@click.option("--utts-per-shard", type=click.IntRange(1, 10 ** 6), default=1000, show_default=True,
              help="Utterances per tar shard.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the utterance order (shuffled, so every shard mixes speakers).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@user_errors
def main(data_dir: str, out_dir: str, utts_per_shard: int, seed: int, no_progress: bool) -> None:
    """Write the data dir as OUT/shards/shard-NNNNNN.tar (<utt>.wav and <utt>.spk per utterance) plus
    OUT/shard.list, shards.json and utt2spk; svmix-train --data OUT and svmix-extract --data OUT read them."""
    from svmix.data.shards import write_shards

    manifest = write_shards(data_dir, out_dir, utts_per_shard, seed, progress=not no_progress)
    click.echo(f"{out_dir}: {manifest['num_utts']} utterances in {len(manifest['shards'])} shard(s)")


if __name__ == "__main__":
    main()
