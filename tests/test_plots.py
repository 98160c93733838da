"""t-SNE, score-histogram and EER-against-size pictures: files written, inputs checked."""
import numpy as np
import pytest

from svmix.errors import SvmixError
from svmix.plots import plot_eer_against_size, plot_score_histogram, plot_tsne


def test_tsne_draws_each_speaker_and_caps_their_number(tmp_path):
    rng = np.random.default_rng(0)
    speakers = [f"s{i:02d}" for i in range(12) for _ in range(6)]
    centers = rng.standard_normal((12, 16))
    emb = centers[[int(s[1:]) for s in speakers]] + 0.1 * rng.standard_normal((72, 16))
    drawn = plot_tsne(emb, speakers, tmp_path / "tsne.png", max_speakers=10)
    assert drawn == 60
    png = (tmp_path / "tsne.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_score_histogram_with_threshold(tmp_path):
    rng = np.random.default_rng(1)
    scores = np.r_[rng.normal(0.6, 0.1, 100), rng.normal(0.1, 0.1, 900)]
    labels = np.r_[np.ones(100), np.zeros(900)]
    plot_score_histogram(scores, labels, tmp_path / "hist.png", threshold=0.35, threshold_label="minDCF(0.05)")
    assert (tmp_path / "hist.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("emb, speakers, message", [
    (np.zeros((4, 3)), ["a", "b", "c"], "one speaker per embedding"),
    (np.full((6, 3), np.nan), list("aabbcc"), "NaN"),
    (np.ones((3, 3)), list("abc"), "at least 5"),
])
def test_tsne_bad_input(tmp_path, emb, speakers, message):
    with pytest.raises(SvmixError, match=message):
        plot_tsne(emb, speakers, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("scores, labels, message", [
    ([0.1, 0.2], [1, 1], "target and non-target"),
    ([0.1, np.inf], [1, 0], "NaN or infinite"),
    ([0.1, 0.2, 0.3], [1, 0], "one label per score"),
])
def test_histogram_bad_input(tmp_path, scores, labels, message):
    with pytest.raises(SvmixError, match=message):
        plot_score_histogram(np.array(scores), np.array(labels), tmp_path / "x.png")


def test_eer_against_size_one_panel_per_condition(tmp_path):
    curves = {"SV-Mixer": [(1.2, 30.0, (25.0, 35.0), "L=4"), (0.9, 33.0, None, "L=2")],
              "MLP-Mixer": [(1.23, 31.0, (28.0, 34.5), "L=4")]}
    plot_eer_against_size({"test": curves, "test_noisy": curves}, tmp_path / "depth.png")
    png = (tmp_path / "depth.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.parametrize("panels, message", [
    ({}, "no points"),
    ({"test": {}}, "no points"),
    ({"test": {"a": []}}, "curve 'a' of 'test' has no points"),
    ({"test": {"a": [(1.0, float("nan"), None, "")]}}, "NaN or infinite"),
    ({"test": {"a": [(1.0, 20.0, (10.0, float("inf")), "")]}}, "NaN or infinite"),
])
def test_eer_against_size_bad_input(tmp_path, panels, message):
    with pytest.raises(SvmixError, match=message):
        plot_eer_against_size(panels, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def _scored_world(tmp_path, speakers=8, utts=5, dim=12):
    """An xvector.scp of clustered speakers, its utt2spk, Kaldi trials of every pair and their cosines."""
    import kaldiio

    rng = np.random.default_rng(3)
    centers = rng.standard_normal((speakers, dim))
    names = [(f"s{s}", f"s{s}-u{u}") for s in range(speakers) for u in range(utts)]
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/xvector.ark,{tmp_path}/xvector.scp") as writer:
        for s, utt in names:
            writer(utt, (centers[int(s[1:])] + 0.3 * rng.standard_normal(dim)).astype(np.float32))
    (tmp_path / "utt2spk").write_text("".join(f"{u} {s}\n" for s, u in names))
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    (tmp_path / "trials").write_text("".join(f"{a[1]} {b[1]} {'target' if a[0] == b[0] else 'nontarget'}\n"
                                             for a, b in pairs))
    from svmix.scoring.pipeline import score_file

    score_file(tmp_path / "trials", tmp_path / "xvector.scp", tmp_path / "scores")
    return tmp_path


@pytest.mark.parametrize("threshold, said", [("min-dcf", "minDCF(0.05) threshold of these trials"),
                                             ("eer", "EER threshold of these trials")])
def test_plot_cli_draws_the_pictures_and_names_the_threshold(tmp_path, threshold, said):
    from click.testing import CliRunner

    from svmix.bin.plot import main
    from svmix.metrics import eer_threshold, min_dcf_threshold
    from svmix.scoring.pipeline import read_scored_trials

    w = _scored_world(tmp_path)
    tsne = ["--tsne", str(w / "tsne.png"), "--embeddings", str(w / "xvector.scp"), "--utt2spk", str(w / "utt2spk")]
    result = CliRunner().invoke(main, (tsne if threshold == "min-dcf" else []) + [  # one t-SNE: it is the slow one
        "--histogram", str(w / "hist.png"), "--scores", str(w / "scores"), "--trials", str(w / "trials"),
        "--threshold", threshold])
    assert result.exit_code == 0, result.output
    assert (w / "hist.png").read_bytes()[:4] == b"\x89PNG"
    if threshold == "min-dcf":
        assert (w / "tsne.png").read_bytes()[:4] == b"\x89PNG" and "tsne.png: 40 of 40 utterances" in result.output
    labels, (scores,), _ = read_scored_trials(w / "trials", [w / "scores"])
    value = min_dcf_threshold(scores, labels, 0.05) if threshold == "min-dcf" else eer_threshold(scores, labels)
    assert f"{said} = {value:.4f}" in result.output
    if threshold == "eer":  # equal miss and false-alarm rates there, within one trial
        miss, fa = np.mean(scores[labels == 1] <= value), np.mean(scores[labels == 0] > value)
        assert abs(miss - fa) <= 1.0 / min((labels == 1).sum(), (labels == 0).sum()) + 1e-9


def test_plot_cli_calibration_threshold_is_the_stored_one(tmp_path):
    from click.testing import CliRunner

    from svmix.bin.plot import main
    from svmix.calibration import Calibration, calibrate_score_files, fit_score_files

    w = _scored_world(tmp_path)
    cal, _, _ = fit_score_files([w / "scores"], w / "trials", 0.05, operating_point="min-dcf")
    cal.save(w / "cal.json")
    calibrate_score_files(cal, [w / "scores"], w / "llr")
    args = ["--histogram", str(w / "hist.png"), "--scores", str(w / "llr"), "--trials", str(w / "trials")]
    result = CliRunner().invoke(main, args + ["--threshold", "calibration", "--calibration", str(w / "cal.json")])
    assert result.exit_code == 0, result.output
    assert f"on the development trials = {Calibration.load(w / 'cal.json').llr_threshold:.4f}" in result.output
    for extra, message in ((["--threshold", "calibration"], "needs --calibration"),
                           (["--calibration", str(w / "cal.json")], "only read with --threshold calibration")):
        bad = CliRunner().invoke(main, args + extra)
        assert bad.exit_code == 1 and message in bad.output


@pytest.mark.parametrize("args, message", [
    ([], "nothing to draw"),
    (["--tsne", "{w}/t.png", "--embeddings", "{w}/xvector.scp"], "--tsne needs --embeddings and --utt2spk"),
    (["--histogram", "{w}/h.png", "--scores", "{w}/scores"], "--histogram needs --scores and --trials"),
])
def test_plot_cli_incomplete_requests_are_one_line_errors(tmp_path, args, message):
    from click.testing import CliRunner

    from conftest import one_error_line
    from svmix.bin.plot import main

    w = _scored_world(tmp_path)
    result = CliRunner().invoke(main, [a.format(w=w) for a in args])
    one_error_line(result, "svmix-plot", message)
    assert not list(w.glob("*.png"))


def test_plot_cli_tsne_names_an_utterance_without_speaker(tmp_path):
    from click.testing import CliRunner

    from conftest import one_error_line
    from svmix.bin.plot import main

    w = _scored_world(tmp_path)
    (w / "utt2spk").write_text("".join(line for line in (w / "utt2spk").read_text().splitlines(True)
                                       if not line.startswith("s3-u2 ")))
    result = CliRunner().invoke(main, ["--tsne", str(w / "t.png"), "--embeddings", str(w / "xvector.scp"),
                                       "--utt2spk", str(w / "utt2spk")])
    one_error_line(result, "svmix-plot", "no speaker for utterance 's3-u2'")
    assert not (w / "t.png").exists()
