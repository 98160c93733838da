"""svmix-calibrate: fit a score calibration or a fusion of several systems on development trials, or
apply one (scores → LLRs)."""
from typing import Optional, Tuple

import click

from svmix.cli import FiniteFloat, InPath, OutPath, command, in_file, user_errors
from svmix.errors import SvmixError

PROBABILITY = FiniteFloat(min=0.0, max=1.0, min_open=True, max_open=True)


@command("svmix-calibrate")
@click.option("--scores", "scores", required=True, multiple=True, type=in_file(),
              help="Score file '<enroll> <test> <score>'; repeat for a fusion of several systems (one weight each).")
@click.option("--trials", type=in_file(), help="Fit: the labelled development trials of --scores.")
@click.option("--out", type=OutPath("file"), help="Fit: write the calibration (JSON) here.")
@click.option("--quality", type=InPath("any"),
              help="Quality measures (QMF): an embedding dir holding quality.tsv (svmix-extract), or such a file; "
                   "give it on fit and on apply.")
@click.option("--p-target", type=PROBABILITY, default=0.05,
              show_default=True, help="Fit: the target prior of the operating point stored with the calibration.")
@click.option("--operating-point", type=click.Choice(["bayes", "min-dcf", "far"]), default="bayes", show_default=True,
              help="Fit: the accept threshold stored with the calibration: the Bayes threshold at --p-target, the "
                   "minDCF threshold at --p-target on the development trials, or the threshold giving --far there.")
@click.option("--far", type=PROBABILITY, default=0.01, show_default=True,
              help="Fit: the false-accept rate of --operating-point far.")
@click.option("--apply", "apply_path", type=in_file(), help="Apply: a calibration written by a fit.")
@click.option("--output", type=OutPath("file"), help="Apply: write LLRs here, in the (first) score file's format and order.")
@user_errors
def main(scores: Tuple[str, ...], trials: Optional[str], out: Optional[str], quality: Optional[str], p_target: float,
         operating_point: str, far: float, apply_path: Optional[str], output: Optional[str]) -> None:
    """Fit (--trials, --out) linear logistic calibration of SCORES on labelled trials (fusion with
    several --scores, QMF with --quality), or apply one (--apply, --output) to turn scores into
    log-likelihood ratios."""
    from svmix.calibration import Calibration, calibrate_score_files, fit_score_files
    from svmix.utils.logging import setup_logging

    setup_logging()
    fitting, applying = (trials, out) != (None, None), (apply_path, output) != (None, None)
    if fitting == applying or (fitting and None in (trials, out)) or (applying and None in (apply_path, output)):
        raise SvmixError("give either --trials and --out (fit) or --apply and --output (apply)")
    if len(set(scores)) < len(scores):
        raise SvmixError("--scores: the same file is given twice")
    if fitting:
        cal, before, after = fit_score_files(scores, trials, p_target, quality, operating_point, far)
        cal.save(out)
        formula = " + ".join(f"{w:.4g} * {name}" for w, name in zip(cal.weights, cal.features))
        click.echo(f"{out}: llr = {formula} + {cal.bias:.4g}; on {trials}: "
                   f"Cllr {before['cllr']:.3f} -> {after['cllr']:.3f} (minCllr {after['min_cllr']:.3f}), "
                   f"actDCF({p_target:g}) {before['act_dcf']:.3f} -> {after['act_dcf']:.3f} "
                   f"(minDCF {after['min_dcf']:.3f}, DCF at the threshold {after['dcf_at_threshold']:.3f}); "
                   f"decisions {cal.describe_operating_point()}")
    else:
        cal = Calibration.load(apply_path)
        count = calibrate_score_files(cal, scores, output, quality)
        click.echo(f"{output}: {count} calibrated scores (LLRs); decisions {cal.describe_operating_point()}")


if __name__ == "__main__":
    main()
