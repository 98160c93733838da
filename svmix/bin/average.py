"""svmix-average: average the N best checkpoints of an experiment into one model."""
from typing import Optional

import click

from svmix.cli import OutPath, command, in_dir, user_errors


@command("svmix-average")
@click.option("--exp", "exp_dir", required=True, type=in_dir(), help="Experiment dir.")
@click.option("--num", type=click.IntRange(min=1), help="How many of the best checkpoints (default: all kept).")
@click.option("--out", type=OutPath("file"), help="Output model (default: EXP/model.pt).")
@user_errors
def main(exp_dir: str, num: Optional[int], out: Optional[str]) -> None:
    """Average the NUM best checkpoints (by validation EER) listed in EXP/checkpoints/best.json."""
    from svmix.train.checkpointing import average_checkpoints

    click.echo(str(average_checkpoints(exp_dir, num, out)))


if __name__ == "__main__":
    main()
