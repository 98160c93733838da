"""svmix-calibrate: fit a score calibration on development trials, or apply one (scores → LLRs)."""
from typing import Optional

import click

from svmix.cli import FiniteFloat, OutPath, command, in_file, user_errors
from svmix.errors import SvmixError


@command("svmix-calibrate")
@click.option("--scores", required=True, type=in_file(), help="Score file '<enroll> <test> <score>'.")
@click.option("--trials", type=in_file(), help="Fit: the labelled development trials of --scores.")
@click.option("--out", type=OutPath("file"), help="Fit: write the calibration (JSON) here.")
@click.option("--p-target", type=FiniteFloat(min=0.0, max=1.0, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Fit: the target prior of the operating point stored with the calibration.")
@click.option("--apply", "apply_path", type=in_file(), help="Apply: a calibration written by a fit.")
@click.option("--output", type=OutPath("file"), help="Apply: write LLRs here, in the score file's format and order.")
@user_errors
def main(scores: str, trials: Optional[str], out: Optional[str], p_target: float, apply_path: Optional[str],
         output: Optional[str]) -> None:
    """Fit (--trials, --out) linear logistic calibration of SCORES on labelled trials, or apply one
    (--apply, --output) to turn scores into log-likelihood ratios."""
    from svmix.calibration import Calibration, calibrate_score_file, fit_score_file
    from svmix.utils.logging import setup_logging

    setup_logging()
    fitting, applying = (trials, out) != (None, None), (apply_path, output) != (None, None)
    if fitting == applying or (fitting and None in (trials, out)) or (applying and None in (apply_path, output)):
        raise SvmixError("give either --trials and --out (fit) or --apply and --output (apply)")
    if fitting:
        cal, before, after = fit_score_file(scores, trials, p_target)
        cal.save(out)
        click.echo(f"{out}: llr = {cal.weights[0]:.4g} * score + {cal.bias:.4g}; on {trials}: "
                   f"Cllr {before['cllr']:.3f} -> {after['cllr']:.3f} (minCllr {after['min_cllr']:.3f}), "
                   f"actDCF({p_target:g}) {before['act_dcf']:.3f} -> {after['act_dcf']:.3f} "
                   f"(minDCF {after['min_dcf']:.3f}); decisions accept llr > {cal.llr_threshold:.3f}")
    else:
        count = calibrate_score_file(Calibration.load(apply_path), scores, output)
        click.echo(f"{output}: {count} calibrated scores (LLRs)")


if __name__ == "__main__":
    main()
