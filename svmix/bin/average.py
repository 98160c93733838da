"""svmix-average: average the N best checkpoints of an experiment into one model."""
from typing import Optional

import click

from svmix.cli import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--exp", "exp_dir", required=True, type=click.Path(file_okay=False), help="Experiment dir.")
@click.option("--num", type=int, help="How many of the best checkpoints (default: all kept).")
@click.option("--out", type=click.Path(dir_okay=False), help="Output model (default: EXP/model.pt).")
@user_errors
def main(exp_dir: str, num: Optional[int], out: Optional[str]) -> None:
    """Average the NUM best checkpoints (by validation EER) listed in EXP/checkpoints/best.json."""
    from svmix.train.checkpointing import average_checkpoints

    click.echo(str(average_checkpoints(exp_dir, num, out)))


if __name__ == "__main__":
    main()
