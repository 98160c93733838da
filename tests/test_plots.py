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
