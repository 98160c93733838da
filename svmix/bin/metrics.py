"""svmix-metrics: EER and minDCF of one or more score files on labelled trials; optional DET plot."""
import os
from typing import Optional, Tuple

import click

from svmix.cli import OutPath, Text, command, in_file, user_errors
from svmix.errors import SvmixError
from svmix.metrics import DEFAULT_RESAMPLES, compute_metrics, plot_det
from svmix.scoring.pipeline import read_scored_trials
from svmix.utils.fileio import write_json
from svmix.utils.logging import setup_logging



@command("svmix-metrics")
@click.option("--scores", "score_paths", required=True, multiple=True, type=in_file(),
              help="Score file '<enroll> <test> <score>' (repeat to compare systems on the same trials).")
@click.option("--trials", required=True, type=in_file(), help="Labelled trials (Kaldi or VoxCeleb format).")
@click.option("--json", "json_path", type=OutPath("file"),
              help="Write metrics JSON (one score file: the metrics object; several: {label: metrics}).")
@click.option("--det-plot", type=OutPath("file"), help="Write a DET plot (PNG) of all score files.")
@click.option("--label", "labels", multiple=True, type=Text(),
              help="Name per --scores, in order [default: file names].")
@click.option("--utt2spk", type=in_file(),
              help="Speakers of the trial utterances, for the confidence intervals [default: utt2spk beside --trials].")
@click.option("--bootstrap", type=click.IntRange(min=0, max=100000), default=DEFAULT_RESAMPLES, show_default=True,
              help="Speaker-bootstrap resamples for 95% intervals of EER and minDCF (0: none).")
@user_errors
def main(score_paths: Tuple[str, ...], trials: str, json_path: Optional[str], det_plot: Optional[str],
         labels: Tuple[str, ...], utt2spk: Optional[str], bootstrap: int) -> None:
    """Compute EER (%) and minDCF (p_target 0.01 and 0.05) for each score file, with 95% speaker-bootstrap
    intervals, plus actual DCF, Cllr and minCllr (scores read as log-likelihood ratios)."""
    setup_logging()
    if labels and len(labels) != len(score_paths):
        raise SvmixError(f"{len(labels)} --label values for {len(score_paths)} --scores files")
    names = list(labels) or [os.path.basename(p) for p in score_paths]
    if len(set(names)) < len(names):
        names = list(score_paths)
    target, all_scores, speakers = read_scored_trials(trials, score_paths, utt2spk, speakers=bootstrap > 0)
    results = {name: compute_metrics(scores, target, speakers=speakers, bootstrap=bootstrap)
               for name, scores in zip(names, all_scores)}
    width = max(len(n) for n in names)
    click.echo(f"{'system':<{width}}  {'EER%':>7}  {'95% CI':>15}  {'minDCF0.01':>10}  {'minDCF0.05':>10}  "
               f"{'Cllr':>7}  {'minCllr':>7}")
    for name, m in results.items():
        ci = "[{:.2f}, {:.2f}]".format(*m["eer_ci"]) if "eer_ci" in m else "-"
        click.echo(f"{name:<{width}}  {m['eer']:7.3f}  {ci:>15}  {m['min_dcf']['0.01']:10.4f}  "
                   f"{m['min_dcf']['0.05']:10.4f}  {m['cllr']:7.3f}  {m['min_cllr']:7.3f}")
    if json_path is not None:
        write_json(json_path, results[names[0]] if len(names) == 1 else results)
    if det_plot is not None:
        plot_det([(name, scores, target) for name, scores in zip(names, all_scores)], det_plot)


if __name__ == "__main__":
    main()
