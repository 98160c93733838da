"""Speaker-bootstrap confidence intervals of EER and minDCF, on scores of a known distribution."""
import numpy as np
import pytest

from svmix.errors import SvmixError
from svmix.metrics import compute_eer, compute_metrics, error_rates, speaker_bootstrap_ci


def simulate(rng, num_speakers, targets_per_speaker=10, nontargets_per_speaker=60, effect=0.6):
    """Scores whose trials are correlated through speakers: each speaker shifts all its scores."""
    shift = effect * rng.standard_normal(num_speakers)
    scores, labels, enroll, test = [], [], [], []
    for a in range(num_speakers):
        scores.append(2.0 + shift[a] + rng.standard_normal(targets_per_speaker))
        labels += [1] * targets_per_speaker
        enroll += [a] * targets_per_speaker
        test += [a] * targets_per_speaker
        others = rng.choice(np.delete(np.arange(num_speakers), a), nontargets_per_speaker)
        scores.append(0.5 * (shift[a] + shift[others]) + rng.standard_normal(nontargets_per_speaker))
        labels += [0] * nontargets_per_speaker
        enroll += [a] * nontargets_per_speaker
        test += list(others)
    names = [f"spk{i}" for i in range(num_speakers)]
    return (np.concatenate(scores), np.array(labels), [names[i] for i in enroll], [names[i] for i in test])


@pytest.fixture(scope="module")
def true_eer():
    scores, labels, _, _ = simulate(np.random.default_rng(123), 4000, 20, 120)
    return compute_eer(scores, labels)


def test_interval_covers_the_true_eer_in_most_experiments(true_eer):
    rng = np.random.default_rng(0)
    covered, experiments = 0, 30
    for i in range(experiments):
        ci = speaker_bootstrap_ci(*simulate(rng, 40), num_resamples=200, seed=i)["eer_ci"]
        covered += ci[0] <= true_eer <= ci[1]
    assert covered >= 0.8 * experiments  # nominal 95 %; a percentile bootstrap under-covers a little


def test_fewer_speakers_give_wider_intervals():
    rng = np.random.default_rng(1)

    def mean_width(num_speakers):
        widths = []
        for i in range(8):
            ci = speaker_bootstrap_ci(*simulate(rng, num_speakers), num_resamples=200, seed=i)
            widths.append(ci["eer_ci"][1] - ci["eer_ci"][0])
        return np.mean(widths)

    assert mean_width(10) > 1.5 * mean_width(80)


def test_interval_contains_the_point_estimate_and_dcf_intervals_are_ordered():
    scores, labels, enroll, test = simulate(np.random.default_rng(2), 30)
    out = speaker_bootstrap_ci(scores, labels, enroll, test, num_resamples=200)
    point = compute_metrics(scores, labels)
    assert out["eer_ci"][0] <= point["eer"] <= out["eer_ci"][1]
    for p, (lo, hi) in out["min_dcf_ci"].items():
        assert 0.0 <= lo <= hi and p in point["min_dcf"]
    assert out["bootstrap"]["speakers"] == 30 and out["bootstrap"]["resamples"] + out["bootstrap"]["skipped"] == 200
    # Same seed, same interval.
    assert speaker_bootstrap_ci(scores, labels, enroll, test, num_resamples=200) == out


def test_unit_weights_reproduce_the_unweighted_rates():
    from svmix.metrics import _sorted_error_rates

    scores, labels, _, _ = simulate(np.random.default_rng(3), 12)
    order = np.argsort(scores)
    a = error_rates(scores, labels)
    b = _sorted_error_rates(scores[order], labels[order].astype(bool), np.ones(len(scores)))
    assert np.allclose(a.fnr, b.fnr) and np.allclose(a.fpr, b.fpr) and np.array_equal(a.thresholds, b.thresholds)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_resamples": 0}, "at least 1 resample"),
    ({"confidence": 1.0}, "confidence"),
    ({"confidence": 0.0}, "confidence"),
])
def test_bad_arguments_are_errors(kwargs, message):
    scores, labels, enroll, test = simulate(np.random.default_rng(4), 5)
    with pytest.raises(SvmixError, match=message):
        speaker_bootstrap_ci(scores, labels, enroll, test, **kwargs)


def test_speaker_lists_must_match_the_trials():
    scores, labels, enroll, test = simulate(np.random.default_rng(5), 5)
    with pytest.raises(SvmixError, match="enrolment"):
        speaker_bootstrap_ci(scores, labels, enroll[:-1], test)
