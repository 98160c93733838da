"""svmix-floor: the trivial floor, mean-MFCC embeddings of a data dir (scored with svmix-score)."""
import json

import click

from svmix.cli import MAX_JOBS, OutPath, command, in_dir, user_errors


@command("svmix-floor")
@click.option("--data", "data_dir", required=True, type=in_dir(), help="Data dir (wav.scp) to embed.")
@click.option("--out", "out_dir", required=True, type=OutPath("dir"),
              help="Output dir: xvector.ark, xvector.scp (as svmix-extract writes them) and floor.json.")
@click.option("--nj", type=click.IntRange(1, MAX_JOBS), default=1, show_default=True, help="Parallel processes.")
@click.option("--keep-c0", is_flag=True, help="Keep the 0th cepstral coefficient (dropped by default).")
@user_errors
def main(data_dir: str, out_dir: str, nj: int, keep_c0: bool) -> None:
    """Embed every utterance of DATA as the mean of its 20 MFCCs (25 ms / 10 ms, c0 dropped):
    the trivial floor any speaker embedding has to beat. Prints floor.json."""
    from svmix.baselines import floor_embeddings

    click.echo(json.dumps(floor_embeddings(data_dir, out_dir, nj=nj, keep_c0=keep_c0), indent=2))


if __name__ == "__main__":
    main()
