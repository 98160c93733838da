"""EER / minDCF / minCllr against independent scikit-learn references, and the svmix-metrics CLI."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_curve

from svmix.bin.metrics import main as metrics_cli
from svmix.data.datadir import Trial, write_trials
from svmix.errors import SvmixError
from svmix.metrics import compute_cllr, compute_eer, compute_metrics, compute_min_cllr, compute_min_dcf, det_curve
from conftest import one_error_line


def reference_eer(scores, labels):
    """docs/method.md §Metrics: sklearn roc_curve, brentq on 1 - x - interp(fpr, tpr)(x), in percent."""
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    return 100 * brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


def reference_min_dcf(scores, labels, p):
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    cost = p * (1 - tpr) + (1 - p) * fpr
    return cost.min() / min(p, 1 - p)


def random_trials(n=200_000, seed=0, separation=2.0, p_target=0.1, decimals=None):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < p_target).astype(int)
    scores = rng.standard_normal(n) + separation * labels
    if decimals is not None:
        scores = np.round(scores, decimals)  # many tied scores
    return scores, labels


@pytest.mark.parametrize("decimals", [None, 1])
def test_eer_and_min_dcf_match_sklearn_reference(decimals):
    scores, labels = random_trials(decimals=decimals)
    assert abs(compute_eer(scores, labels) - reference_eer(scores, labels)) < 0.01
    for p in (0.01, 0.05):
        assert abs(compute_min_dcf(scores, labels, p) - reference_min_dcf(scores, labels, p)) < 0.001


def reference_min_cllr(scores, labels):
    """Cllr of the scikit-learn isotonic fit of the labels, as an LLR at the empirical prior."""
    posterior = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit_transform(scores, labels.astype(float))
    with np.errstate(divide="ignore"):
        llr = np.log(posterior) - np.log1p(-posterior) - np.log(labels.mean() / (1 - labels.mean()))
    return compute_cllr(np.clip(llr, -1e6, 1e6), labels)


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("n, p_target", [(5000, 0.1), (37, 0.5), (12, 0.25)])
def test_min_cllr_matches_sklearn_isotonic_reference(decimals, n, p_target):
    scores, labels = random_trials(n=n, seed=n, separation=1.0, p_target=p_target, decimals=decimals)
    labels[:2] = [0, 1]  # both classes, whatever the draw
    got = compute_min_cllr(scores, labels)
    assert 0.0 <= got <= compute_cllr(scores - np.median(scores), labels) + 1e-12  # calibration cannot cost more
    assert got == pytest.approx(reference_min_cllr(scores, labels), abs=1e-12)


def test_metrics_on_known_cases():
    assert compute_eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert compute_eer([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 100.0
    # one error on each side out of two -> EER 50 %
    assert compute_eer([0.1, 0.6, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(50.0)
    m = compute_metrics([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert {k: m[k] for k in ("eer", "min_dcf", "n_target", "n_nontarget")} == {
        "eer": 0.0, "min_dcf": {"0.01": 0.0, "0.05": 0.0}, "n_target": 2, "n_nontarget": 2}
    # Read as LLRs, scores below log((1-p)/p) are rejections: every target is missed.
    assert m["act_dcf"] == {"0.01": 1.0, "0.05": 1.0}
    assert m["min_cllr"] == pytest.approx(0.0, abs=1e-9) and m["cllr"] > 0.5
    assert "eer_ci" not in m  # no speakers given
    fpr, fnr, thr = det_curve([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert fpr[0] == 1 and fnr[0] == 0 and fpr[-1] == 0 and fnr[-1] == 1
    assert np.all(np.diff(thr) > 0)
    with pytest.raises(SvmixError, match="both target and non-target"):
        compute_metrics([0.1, 0.2], [1, 1])


@pytest.fixture
def two_systems(tmp_path):
    rng = np.random.default_rng(1)
    trials = [Trial(f"e{i % 50}", f"t{i}", int(i % 4 == 0)) for i in range(2000)]
    write_trials(tmp_path / "trials", trials)
    paths = []
    for name, sep in (("good", 3.0), ("bad", 1.0)):
        scores = rng.standard_normal(len(trials)) + sep * np.array([t.label for t in trials])
        rows = [f"{t.enroll} {t.test} {s:.6f}\n" for t, s in zip(trials, scores)]
        if name == "bad":
            rows = rows[::-1]  # another order: matched by (enroll, test)
        path = tmp_path / f"{name}.scores"
        path.write_text("".join(rows))
        paths.append((path, np.array([float(f"{x:.6f}") for x in scores])))
    return tmp_path, trials, paths


def test_cli_json_table_and_det_plot(two_systems):
    tmp_path, trials, paths = two_systems
    labels = [t.label for t in trials]
    js = tmp_path / "m.json"
    result = CliRunner().invoke(metrics_cli, ["--scores", str(paths[0][0]), "--trials", str(tmp_path / "trials"),
                                              "--json", str(js)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(js.read_text())
    assert metrics == compute_metrics(paths[0][1], labels)
    assert list(metrics["min_dcf"]) == ["0.01", "0.05"] and metrics["n_target"] == 500

    png = tmp_path / "det.png"
    result = CliRunner().invoke(metrics_cli, ["--scores", str(paths[0][0]), "--scores", str(paths[1][0]),
                                              "--label", "good", "--label", "bad", "--trials",
                                              str(tmp_path / "trials"), "--det-plot", str(png), "--json", str(js)])
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[1].startswith("good") and table[2].startswith("bad")
    both = json.loads(js.read_text())
    assert both["bad"]["eer"] == pytest.approx(compute_eer(paths[1][1], labels))
    assert both["good"]["eer"] < both["bad"]["eer"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_score_file_not_covering_trials_is_an_error(two_systems):
    tmp_path, trials, paths = two_systems
    short = tmp_path / "short.scores"
    short.write_text("".join(paths[0][0].read_text().splitlines(keepends=True)[:-3]))
    result = CliRunner().invoke(metrics_cli, ["--scores", str(short), "--trials", str(tmp_path / "trials")])
    assert result.exit_code == 1
    assert "no score for 3 of 2000 trials" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def run_metrics(tmp_path, scores_path, trials_path, *extra):
    out = tmp_path / "m.json"
    out.write_text('{"previous": true}\n')
    result = CliRunner().invoke(metrics_cli, ["--scores", str(scores_path), "--trials", str(trials_path),
                                              "--json", str(out), *extra])
    return result, out



def reordered(two_systems):
    """The good system's score lines, reversed (so pairs are looked up, not taken in trial order)."""
    tmp_path, trials, paths = two_systems
    return tmp_path, paths[0][0].read_text().splitlines()[::-1]


@pytest.mark.parametrize("same_score", [False, True], ids=["different-score", "same-score"])
@pytest.mark.parametrize("first, again", [(0, 1), (5, 1999), (1998, 1999)])
@pytest.mark.parametrize("in_trial_order", [False, True])
def test_a_pair_scored_twice_is_an_error_naming_both_lines(two_systems, first, again, same_score, in_trial_order):
    tmp_path, _, paths = two_systems
    lines = paths[0][0].read_text().splitlines()
    if not in_trial_order:
        lines = lines[::-1]
    enroll, test, score = lines[first].split()
    duplicate = f"{enroll} {test} {score if same_score else '0.123456'}"
    lines = lines[:again] + [duplicate] + lines[again:]  # the repeat becomes line again + 1
    scores = tmp_path / "dup.scores"
    scores.write_text("\n".join(lines) + "\n")
    result, out = run_metrics(tmp_path, scores, tmp_path / "trials")
    error = one_error_line(result)
    assert f"{scores}:{again + 1}: pair '{enroll} {test}' is scored twice (also on line {first + 1}" in error
    assert out.read_text() == '{"previous": true}\n'


def test_lines_for_pairs_not_in_the_trials_are_reported_and_ignored(two_systems, caplog):
    import logging

    tmp_path, lines = reordered(two_systems)
    scores = tmp_path / "extra.scores"
    extra = ["ghost-e ghost-t 0.5", "e1 ghost-t 0.25", "ghost-e t3 0.75"]
    scores.write_text("\n".join(lines[:10] + extra + lines[10:]) + "\n")
    logger = logging.getLogger("svmix")
    logger.addHandler(caplog.handler)
    try:
        result, out = run_metrics(tmp_path, scores, tmp_path / "trials")
    finally:
        logger.removeHandler(caplog.handler)
    assert result.exit_code == 0, result.output
    assert f"{scores}: ignoring 3 line(s) scoring pairs that are not in the trials; first: line 11 " \
           f"'ghost-e ghost-t'" in caplog.text
    labels = [t.label for t in two_systems[1]]
    assert json.loads(out.read_text()) == compute_metrics(two_systems[2][0][1], labels)


@pytest.mark.parametrize("token", ["nan", "NaN", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize("line", [1, 700, 2000])
@pytest.mark.parametrize("in_trial_order", [False, True])
def test_non_finite_scores_name_the_file_and_first_line(two_systems, token, line, in_trial_order):
    tmp_path, _, paths = two_systems
    lines = paths[0][0].read_text().splitlines()
    if not in_trial_order:
        lines = lines[::-1]
    lines[line - 1] = lines[line - 1].rsplit(" ", 1)[0] + f" {token}"
    lines[-1] = lines[-1].rsplit(" ", 1)[0] + " nan"  # a second one later: the first is named
    scores = tmp_path / "nan.scores"
    scores.write_text("\n".join(lines) + "\n")
    result, out = run_metrics(tmp_path, scores, tmp_path / "trials")
    error = one_error_line(result)
    assert f"{scores}:{line}: score" in error and "not finite" in error
    assert f"{1 if line == 2000 else 2} of 2000 scores are NaN or infinite" in error
    assert out.read_text() == '{"previous": true}\n'


@pytest.mark.parametrize("bad", [[3], [0, 7], [9]])
def test_compute_metrics_names_the_first_non_finite_score(bad):
    scores = np.linspace(0, 1, 10)
    scores[bad] = np.nan
    with pytest.raises(SvmixError, match=rf"^{len(bad)} of 10 scores are NaN or infinite; first: score {bad[0] + 1} "):
        compute_metrics(scores, np.arange(10) % 2)


@pytest.mark.parametrize("fmt", ["kaldi", "voxceleb"])
@pytest.mark.parametrize("unlabelled_line", [1, 2, 1000, 2000])
def test_half_labelled_trials_are_an_error_for_metrics(two_systems, fmt, unlabelled_line):
    tmp_path, trials, paths = two_systems
    write_trials(tmp_path / "mixed", trials, fmt)
    lines = (tmp_path / "mixed").read_text().splitlines()
    t = trials[unlabelled_line - 1]
    lines[unlabelled_line - 1] = f"{t.enroll} {t.test}"
    (tmp_path / "mixed").write_text("\n".join(lines) + "\n")
    result, out = run_metrics(tmp_path, paths[0][0], tmp_path / "mixed")
    error = one_error_line(result)
    offending = 2 if unlabelled_line == 1 else unlabelled_line  # the first line that differs from line 1
    assert f"{tmp_path / 'mixed'}:{offending}: " in error and "label every trial" in error
    assert out.read_text() == '{"previous": true}\n'
