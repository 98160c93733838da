"""svmix-score: cosine-score a trials file from Kaldi embeddings (optionally AS-norm, optionally calibrated to
LLRs), write scores and metrics."""
from typing import Optional

import click

from svmix.cli import InPath, OutPath, command, in_file, user_errors
from svmix.metrics import DEFAULT_RESAMPLES
from svmix.scoring.cosine import DEFAULT_CHUNK
from svmix.scoring.norms import SCORE_NORMS
from svmix.scoring.pipeline import score_file
from svmix.utils.logging import setup_logging

PATH = in_file()
OUT = OutPath("file")


@command("svmix-score")
@click.option("--trials", required=True, type=PATH, help="Trials (Kaldi, VoxCeleb or unlabelled format).")
@click.option("--embeddings", "scp", required=True, type=PATH,
              help="EMB_DIR/xvector.scp (vectors or segment matrices).")
@click.option("--output", required=True, type=OUT, help="Score file: '<enroll> <test> <score>' per trial.")
@click.option("--norm", type=click.Choice(SCORE_NORMS.names()), default=None,
              help="Score normalisation [default: asnorm with --cohort, else none].")
@click.option("--cohort", "cohort_scp", type=PATH, help="Cohort embeddings scp for AS-norm.")
@click.option("--cohort-utt2spk", type=PATH, help="Average the cohort per speaker with this utt2spk.")
@click.option("--top-n", type=click.IntRange(min=1), default=300, show_default=True, help="AS-norm top-N cohort size.")
@click.option("--mean", "mean_path", type=PATH, help="Mean embedding to subtract (.npy, or scp/ark with one vector).")
@click.option("--mean-from", type=PATH, help="Subtract the mean of these (training) embeddings (scp).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=DEFAULT_CHUNK, show_default=True,
              help="Trials scored per block (bounds memory).")
@click.option("--skip-missing", is_flag=True, help="Drop (and count) trials naming unknown utterances.")
@click.option("--metrics-json", type=OUT, help="Also write the metrics as JSON (labelled trials only).")
@click.option("--utt2spk", type=PATH,
              help="Speakers of the trial utterances, for the confidence intervals [default: utt2spk beside --trials].")
@click.option("--bootstrap", type=click.IntRange(min=0, max=100000), default=DEFAULT_RESAMPLES, show_default=True,
              help="Speaker-bootstrap resamples for 95% intervals of EER and minDCF (0: none).")
@click.option("--calibration", type=PATH,
              help="Write calibrated LLRs instead of cosines, with this svmix-calibrate file (its operating point "
                   "is printed).")
@click.option("--quality", type=InPath("any"),
              help="With a quality-aware --calibration: quality.tsv, or the dir holding it [default: the "
                   "--embeddings dir].")
@user_errors
def main(trials: str, scp: str, output: str, norm: Optional[str], cohort_scp: Optional[str],
         cohort_utt2spk: Optional[str], top_n: int, mean_path: Optional[str], mean_from: Optional[str],
         chunk_size: int, skip_missing: bool, metrics_json: Optional[str], utt2spk: Optional[str],
         bootstrap: int, calibration: Optional[str], quality: Optional[str]) -> None:
    """Score TRIALS with the embeddings of an scp and write one score per trial, in trial order."""
    setup_logging()
    metrics = score_file(trials, scp, output, norm=norm, cohort_scp=cohort_scp, cohort_utt2spk=cohort_utt2spk,
                         top_n=top_n, mean_path=mean_path, mean_from=mean_from, chunk_size=chunk_size,
                         skip_missing=skip_missing, metrics_json=metrics_json, utt2spk=utt2spk,
                         bootstrap=bootstrap, calibration=calibration, quality=quality)
    if calibration is not None:
        from svmix.calibration import Calibration

        click.echo(f"{output}: LLRs of {calibration}; decisions {Calibration.load(calibration).describe_operating_point()}")
    if metrics is not None:
        dcf = metrics["min_dcf"]
        ci = " (95% CI {:.2f}-{:.2f})".format(*metrics["eer_ci"]) if "eer_ci" in metrics else ""
        click.echo(f"EER {metrics['eer']:.3f}%{ci}  minDCF(0.01) {dcf['0.01']:.4f}  minDCF(0.05) {dcf['0.05']:.4f}  "
                   f"({metrics['n_target']} target, {metrics['n_nontarget']} non-target trials)")


if __name__ == "__main__":
    main()
