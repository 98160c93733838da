"""svmix-plot: pictures of a system on a test set: a t-SNE of its embeddings coloured by speaker, and
the target / non-target score histogram with a decision threshold."""
from typing import Optional

import click

from svmix.cli import SEED, FiniteFloat, OutPath, Text, command, in_file, user_errors
from svmix.errors import SvmixError

PROBABILITY = FiniteFloat(min=0.0, max=1.0, min_open=True, max_open=True)
THRESHOLDS = ("min-dcf", "eer", "calibration", "none")


def histogram_threshold(scores, labels, which: str, p_target: float, calibration: Optional[str]):
    """``(threshold, legend label)`` of a histogram's marked operating point (None: no threshold)."""
    from svmix.metrics import eer_threshold, min_dcf_threshold

    if which == "calibration":
        from svmix.calibration import Calibration

        if calibration is None:
            raise SvmixError("--threshold calibration needs --calibration (the file the LLRs were made with)")
        cal = Calibration.load(calibration)
        return cal.llr_threshold, cal.describe_operating_point().split(" (", 1)[-1].rstrip(")")
    if calibration is not None:
        raise SvmixError("--calibration is only read with --threshold calibration")
    if which == "min-dcf":
        return min_dcf_threshold(scores, labels, p_target), f"minDCF({p_target:g}) threshold of these trials"
    if which == "eer":
        return eer_threshold(scores, labels), "EER threshold of these trials"
    return None, ""


@command("svmix-plot")
@click.option("--tsne", type=OutPath("file"), help="Write a t-SNE of --embeddings coloured by speaker (PNG).")
@click.option("--embeddings", "scp", type=in_file(), help="t-SNE: EMB_DIR/xvector.scp (vectors or segment matrices).")
@click.option("--utt2spk", type=in_file(), help="t-SNE: the speaker of each embedded utterance.")
@click.option("--max-speakers", type=click.IntRange(min=2, max=1000), default=40, show_default=True,
              help="t-SNE: draw at most this many speakers (the first in sorted order).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="t-SNE: random state.")
@click.option("--histogram", type=OutPath("file"),
              help="Write the target / non-target histogram of --scores on --trials (PNG).")
@click.option("--scores", type=in_file(), help="Histogram: score file '<enroll> <test> <score>'.")
@click.option("--trials", type=in_file(), help="Histogram: the labelled trials of --scores.")
@click.option("--threshold", type=click.Choice(THRESHOLDS), default="min-dcf", show_default=True,
              help="Histogram: the threshold marked: the minDCF threshold at --p-target or the EER threshold, both "
                   "of the plotted trials themselves; the stored threshold of --calibration (chosen on its "
                   "development trials; --scores are its LLRs); or none.")
@click.option("--p-target", type=PROBABILITY, default=0.05, show_default=True,
              help="Histogram: target prior of --threshold min-dcf.")
@click.option("--calibration", type=in_file(), help="Histogram: the svmix-calibrate file of --threshold calibration.")
@click.option("--title", type=Text(), help="Title of the pictures [default: what they show].")
@user_errors
def main(tsne: Optional[str], scp: Optional[str], utt2spk: Optional[str], max_speakers: int, seed: int,
         histogram: Optional[str], scores: Optional[str], trials: Optional[str], threshold: str, p_target: float,
         calibration: Optional[str], title: Optional[str]) -> None:
    """Draw a t-SNE (--tsne with --embeddings and --utt2spk) and/or a score histogram (--histogram with
    --scores and --trials), each written atomically as PNG."""
    from svmix.utils.logging import setup_logging

    setup_logging()
    if tsne is None and histogram is None:
        raise SvmixError("nothing to draw: give --tsne and/or --histogram")
    for wanted, given, names in ((tsne, (scp, utt2spk), "--embeddings and --utt2spk"),
                                 (histogram, (scores, trials), "--scores and --trials")):
        if wanted is not None and None in given:
            raise SvmixError(f"--{'tsne' if wanted is tsne else 'histogram'} needs {names}")
    if histogram is not None:  # checked first: it is quick, the t-SNE is not
        from svmix.plots import plot_score_histogram
        from svmix.scoring.pipeline import read_scored_trials

        labels, (values,), _ = read_scored_trials(trials, [scores])
        cut, what = histogram_threshold(values, labels, threshold, p_target, calibration)
        plot_score_histogram(values, labels, histogram, threshold=cut, threshold_label=what,
                             title=title or f"{scores} on {trials}")
        click.echo(f"{histogram}: {len(values)} scores" + (f", {what} = {cut:.4f}" if cut is not None else ""))
    if tsne is not None:
        from svmix.data.datadir import read_kv
        from svmix.plots import plot_tsne
        from svmix.scoring.cosine import scoring_vectors
        from svmix.scoring.embeddings import load_embeddings

        embeddings = load_embeddings(scp)
        speaker_of = read_kv(utt2spk)
        missing = [u for u in embeddings.ids if u not in speaker_of]
        if missing:
            raise SvmixError(f"{utt2spk}: no speaker for utterance '{missing[0]}' of {scp} "
                             f"({len(missing)} of {len(embeddings)} have none)")
        drawn = plot_tsne(scoring_vectors(embeddings), [speaker_of[u] for u in embeddings.ids], tsne,
                          max_speakers=max_speakers, seed=seed, title=title or "Test embeddings (t-SNE)")
        click.echo(f"{tsne}: {drawn} of {len(embeddings)} utterances")


if __name__ == "__main__":
    main()
