"""svmix-report: write RESULTS.md from the recipe's experiment directories."""
from typing import Optional, Tuple

import click

from svmix.cli import NAME, OutPath, command, in_dir, in_file, user_errors
from svmix.report import write_report


@command("svmix-report")
@click.option("--system", "systems", multiple=True, required=True, type=in_dir(),
              help="Experiment dir of a trained system (repeatable).")
@click.option("--trials-name", "trials_names", multiple=True, default=("trials",), show_default=True, type=NAME,
              help="Trials list name: reads EXP/metrics_<name>.json (repeatable).")
@click.option("--emb-name", type=NAME, default="test", show_default=True,
              help="Evaluation set: reads EXP/emb_<name>/extract_stats.json.")
@click.option("--teacher", type=in_dir(), help="Teacher dir with eval.json (optional).")
@click.option("--commands", type=in_file(), help="Log of the commands the recipe ran.")
@click.option("--out", required=True, type=OutPath("file"), help="Where to write RESULTS.md.")
@user_errors
def main(systems: Tuple[str, ...], trials_names: Tuple[str, ...], emb_name: str, teacher: Optional[str],
         commands: Optional[str], out: str) -> None:
    """Summarise trained systems (params, GMACs, EER, minDCF, CPU RTF) into RESULTS.md."""
    write_report(systems, out, trials_names, emb_name, teacher, commands)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
