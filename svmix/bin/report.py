"""svmix-report: write RESULTS.md (and RESULTS_per_seed.md beside it) from the recipe's experiment dirs."""
from typing import Optional, Tuple

import click

from svmix.cli import NAME, IntList, OutPath, Text, command, in_dir, in_file, user_errors
from svmix.report import write_report


@command("svmix-report")
@click.option("--system", "systems", multiple=True, required=True, type=in_dir(),
              help="Experiment dir of a trained system, one seed<k>/ run per seed (repeatable).")
@click.option("--seeds", type=IntList(min=0), default="0", show_default=True,
              help="Training seeds: reads SYSTEM/seed<k>/ for each.")
@click.option("--test-data", "test_dirs", multiple=True, required=True, type=in_dir(),
              help="Test set data dir (repeatable): reads its trials lists and utt2spk, and "
                   "SYSTEM/seed<k>/emb_<set>/extract_stats.json.")
@click.option("--trials-name", "trials_names", multiple=True, default=("trials",), show_default=True, type=NAME,
              help="Trials list in every test set: reads SYSTEM/seed<k>/metrics_<set>_<name>.json (repeatable).")
@click.option("--trials-of", "set_trials", multiple=True, type=Text(r"[^=]+=[A-Za-z0-9][A-Za-z0-9._,-]*", "SET=NAME[,NAME...]"),
              help="A test set's own trials lists instead of --trials-name, e.g. 'voices=trials' (repeatable).")
@click.option("--missing", multiple=True, type=Text(r"[^=]+=.+", "SET=REASON"),
              help="A test set the run could not test, and why; listed in RESULTS.md (repeatable).")
@click.option("--fusion", "fusion_dir", type=in_dir(),
              help="A fusion's dir (seed<k>/fusion.json and metrics_<set>_<name>.json): a row of the back-ends table.")
@click.option("--floor", "floor_dir", type=in_dir(), help="The floor's dir (svmix-floor; its metrics_<set>_<name>.json).")
@click.option("--teacher", type=in_dir(), help="Teacher dir; its eval.json, if any, is quoted.")
@click.option("--note", "notes", multiple=True, type=Text(r"[^=]+=.+", "SET=DESCRIPTION"),
              help="What a test set is, e.g. 'test_noisy=reverberated and noised' (repeatable).")
@click.option("--commands", type=in_file(), help="Log of the commands the recipe ran.")
@click.option("--plots", "plots_dir", type=in_dir(),
              help="Where stage 5 drew its pictures (det_*, tsne_*, hist_*.png): RESULTS.md links those there.")
@click.option("--out", required=True, type=OutPath("file"), help="Where to write RESULTS.md.")
@user_errors
def main(systems: Tuple[str, ...], seeds, test_dirs: Tuple[str, ...], trials_names: Tuple[str, ...],
         set_trials: Tuple[str, ...], missing: Tuple[str, ...], fusion_dir: Optional[str], floor_dir: Optional[str], teacher: Optional[str],
         notes: Tuple[str, ...], commands: Optional[str], plots_dir: Optional[str], out: str) -> None:
    """Summarise trained systems (EER with CI, minDCF, params and GMACs by part, CPU RTF; mean ± std over
    the seeds) into RESULTS.md, with links to the pictures of --plots."""
    write_report(systems, out, test_dirs, trials_names, seeds, floor_dir, teacher, notes, commands, plots_dir,
                 set_trials, missing, fusion_dir)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
