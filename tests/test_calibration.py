"""Calibration to LLRs (Cllr → minCllr, actDCF → minDCF on held-out trials), QMF, calibration files."""
import json

import numpy as np
import pytest

from svmix.calibration import Calibration, bayes_threshold, fit_calibration, trial_quality
from svmix.errors import SvmixError
from svmix.metrics import compute_act_dcf, compute_cllr, compute_min_cllr, compute_min_dcf


def cosine_like(rng, n_target=2000, n_nontarget=20000):
    """Uncalibrated scores in a cosine-like range: far from LLRs until calibrated."""
    scores = np.r_[0.55 + 0.12 * rng.standard_normal(n_target), 0.15 + 0.12 * rng.standard_normal(n_nontarget)]
    labels = np.r_[np.ones(n_target, bool), np.zeros(n_nontarget, bool)]
    return scores, labels


def test_cllr_metrics_on_known_cases():
    labels = np.array([1, 1, 0, 0], bool)
    assert compute_cllr(np.zeros(4), labels) == pytest.approx(1.0)  # uninformative
    assert compute_cllr(np.array([50.0, 50, -50, -50]), labels) == pytest.approx(0.0, abs=1e-12)
    assert compute_min_cllr(np.array([0.9, 0.8, 0.2, 0.1]), labels) == pytest.approx(0.0, abs=1e-9)
    # Wrong-way scores: the best monotonic calibration is uninformative.
    assert compute_min_cllr(np.array([0.1, 0.2, 0.8, 0.9]), labels) == pytest.approx(1.0)
    # Bayes decisions: accept all targets, reject all non-targets -> cost 0.
    assert compute_act_dcf(np.array([5.0, 5, -5, -5]), labels, 0.05) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_reaches_min_cllr_and_min_dcf_on_held_out_trials(seed):
    rng = np.random.default_rng(seed)
    dev, dev_labels = cosine_like(rng)
    test, test_labels = cosine_like(rng)
    raw_cllr = compute_cllr(test, test_labels)
    cal = fit_calibration(dev, dev_labels)
    llr = cal.apply(test)
    cllr, min_cllr = compute_cllr(llr, test_labels), compute_min_cllr(test, test_labels)
    assert raw_cllr > 0.5 and cllr < raw_cllr
    assert cllr - min_cllr < 0.05
    for p in (0.01, 0.05):
        cal_p = fit_calibration(dev, dev_labels, p_target=p)
        assert compute_act_dcf(cal_p.apply(test), test_labels, p) - compute_min_dcf(test, test_labels, p) < 0.05


def test_qmf_helps_when_quality_really_matters():
    """Scores drift with the shorter side's duration (as cosine scores of short utterances do): a
    duration-aware calibration removes the drift and lowers minDCF; plain calibration cannot."""
    rng = np.random.default_rng(5)

    def sample(n):
        labels = rng.random(n) < 0.1
        log_dur = rng.uniform(np.log(1.0), np.log(20.0), (n, 2))
        drift = 1.5 * (np.log(20.0) - log_dur.min(axis=1))
        scores = 3.0 * labels + rng.standard_normal(n) + drift
        return scores, labels, log_dur

    s_dev, l_dev, q_dev = sample(20000)
    s_test, l_test, q_test = sample(20000)
    plain = fit_calibration(s_dev, l_dev)
    qmf = fit_calibration(s_dev, l_dev, trial_quality(q_dev[:, :1], q_dev[:, 1:]), ["min_log_dur", "max_log_dur"])
    llr_plain = plain.apply(s_test)
    llr_qmf = qmf.apply(s_test, trial_quality(q_test[:, :1], q_test[:, 1:]))
    assert compute_min_dcf(llr_qmf, l_test, 0.05) < compute_min_dcf(llr_plain, l_test, 0.05)
    assert compute_cllr(llr_qmf, l_test) < compute_cllr(llr_plain, l_test)
    assert qmf.features == ["score", "min_log_dur", "max_log_dur"]


def test_quality_is_symmetric_in_the_two_sides():
    a, b = np.array([[1.0, 5.0]]), np.array([[3.0, 2.0]])
    assert np.array_equal(trial_quality(a, b), trial_quality(b, a))
    assert trial_quality(a, b).tolist() == [[1.0, 2.0, 3.0, 5.0]]


def test_calibration_file_round_trip_and_decisions(tmp_path):
    rng = np.random.default_rng(3)
    scores, labels = cosine_like(rng, 200, 2000)
    cal = fit_calibration(scores, labels, p_target=0.01, fitted_on={"trials": "dev/trials"})
    cal.save(tmp_path / "cal.json")
    raw = json.loads((tmp_path / "cal.json").read_text())
    assert raw["format"] == "svmix-calibration" and raw["llr_threshold"] == pytest.approx(bayes_threshold(0.01))
    back = Calibration.load(tmp_path / "cal.json")
    assert np.array_equal(back.apply(scores), cal.apply(scores))
    assert np.array_equal(back.decide(back.apply(scores)), back.apply(scores) > np.log(99.0))


@pytest.mark.parametrize("content, message", [
    ("{}", "not an svmix calibration"),
    ('{"format": "svmix-calibration", "version": 9}', "version 9"),
    ('{"format": "svmix-calibration", "version": 1, "features": ["score"]}', "malformed"),
    ('{"format": "svmix-calibration", "version": 1, "features": ["score"], "weights": [1, 2], "bias": 0, "p_target": 0.05}',
     "one per feature"),
    ('{"format": "svmix-calibration", "version": 1, "features": ["score"], "weights": [NaN], "bias": 0, "p_target": 0.05}',
     "finite"),
    ('{"format": "svmix-calibration", "version": 1, "features": ["score"], "weights": [1], "bias": 0, "p_target": 1.5}',
     "p_target"),
    ("[1, 2", "not valid JSON"),
])
def test_bad_calibration_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(SvmixError, match=message):
        Calibration.load(path)


@pytest.mark.parametrize("scores, labels, kwargs, message", [
    ([0.1, 0.2], [1, 1], {}, "target and non-target"),
    ([0.1, np.nan], [1, 0], {}, "finite"),
    ([0.1, 0.2], [1, 0], {"p_target": 0.0}, "p_target"),
    ([0.1, 0.2], [1, 0, 1], {}, "labels"),
    ([0.1, 0.2], [1, 0], {"quality": np.ones((3, 1))}, "quality"),
])
def test_bad_fit_inputs_are_errors(scores, labels, kwargs, message):
    with pytest.raises(SvmixError, match=message):
        fit_calibration(np.array(scores), np.array(labels), **kwargs)


def _write_scored_trials(tmp_path, scores, labels):
    utts = [f"u{i}" for i in range(len(scores))]
    trials = tmp_path / "trials"
    trials.write_text("".join(f"enr{i % 7} {u} {'target' if l else 'nontarget'}\n" for i, (u, l) in enumerate(zip(utts, labels))))
    score_path = tmp_path / "scores"
    score_path.write_text("".join(f"enr{i % 7} {u} {s:.6f}\n" for i, (u, s) in enumerate(zip(utts, scores))))
    return trials, score_path


def test_cli_fit_and_apply_agree_with_the_api(tmp_path):
    from click.testing import CliRunner

    from svmix.bin.calibrate import main

    rng = np.random.default_rng(7)
    scores, labels = cosine_like(rng, 300, 3000)
    scores = np.round(scores, 6)
    trials, score_path = _write_scored_trials(tmp_path, scores, labels)
    result = CliRunner().invoke(main, ["--scores", str(score_path), "--trials", str(trials),
                                       "--out", str(tmp_path / "cal.json"), "--p-target", "0.01"])
    assert result.exit_code == 0, result.output
    assert "Cllr" in result.output and "accept llr >" in result.output
    result = CliRunner().invoke(main, ["--scores", str(score_path), "--apply", str(tmp_path / "cal.json"),
                                       "--output", str(tmp_path / "llr")])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in (tmp_path / "llr").read_text().splitlines()]
    assert [(a, b) for a, b, _ in lines] == [tuple(line.split()[:2]) for line in score_path.read_text().splitlines()]
    api = fit_calibration(scores, labels, p_target=0.01)
    assert np.abs(np.array([float(x) for *_, x in lines]) - api.apply(scores)).max() <= 1e-6
    cal = Calibration.load(tmp_path / "cal.json")
    assert cal.p_target == 0.01 and cal.fitted_on["trials"] == str(trials)


@pytest.mark.parametrize("args", [
    [],                                    # neither mode
    ["--trials", "T"],                     # fit without --out
    ["--apply", "C", "--output", "O", "--trials", "T", "--out", "X"],   # both modes
    ["--output", "O"],                     # apply without --apply
])
def test_cli_needs_exactly_one_mode(tmp_path, args):
    from click.testing import CliRunner

    from svmix.bin.calibrate import main

    rng = np.random.default_rng(8)
    trials, score_path = _write_scored_trials(tmp_path, *cosine_like(rng, 20, 200))
    Calibration(["score"], [1.0], 0.0).save(tmp_path / "C")
    paths = {"T": str(trials), "C": str(tmp_path / "C"), "O": str(tmp_path / "O"), "X": str(tmp_path / "X")}
    result = CliRunner().invoke(main, ["--scores", str(score_path)] + [paths.get(a, a) for a in args])
    assert result.exit_code == 1 and "give either --trials and --out (fit) or --apply and --output" in result.output
    assert not (tmp_path / "O").exists() and not (tmp_path / "X").exists()
