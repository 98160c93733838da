"""Verification metrics: EER, minDCF and DET curves, vectorised over millions of trials.

Definitions follow docs/method.md §Metrics. The EER is where the ROC polyline (false-accept rate, true-accept rate),
drawn through every distinct threshold, crosses tpr = 1 - fpr; this is exactly the root that
``brentq(lambda x: 1 - x - interp(fpr, tpr)(x), 0, 1)`` finds on sklearn's ``roc_curve``, computed
here from one sort instead of a root search. minDCF uses C_miss = C_fa = 1 and is normalised by
min(p, 1 - p). Tied scores share one threshold.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from svmix.errors import SvmixError

P_TARGETS = (0.01, 0.05)
DEFAULT_RESAMPLES = 1000  # speaker-bootstrap resamples for confidence intervals


@dataclass
class ErrorRates:
    """Miss and false-alarm rates at every distinct threshold, thresholds ascending.

    Entry 0 accepts everything (fnr 0, fpr 1); at entry i > 0 the trials with the i-th smallest
    distinct score and below are rejected. The last entry rejects everything (fnr 1, fpr 0).
    """

    thresholds: np.ndarray
    fnr: np.ndarray
    fpr: np.ndarray


def _check(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise SvmixError(f"{len(scores)} scores but {len(labels)} labels")
    not_finite = ~np.isfinite(scores)
    if not_finite.any():
        raise SvmixError(f"{int(np.count_nonzero(not_finite))} of {len(scores)} scores are NaN or infinite; "
                         f"first: score {int(np.argmax(not_finite)) + 1} ({scores[np.argmax(not_finite)]})")
    if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
        raise SvmixError("labels must be 1 (target) or 0 (non-target)")
    labels = labels.astype(bool)
    n_target = int(np.count_nonzero(labels))
    if n_target == 0 or n_target == len(labels):
        raise SvmixError(f"metrics need both target and non-target trials "
                         f"(got {n_target} target, {len(labels) - n_target} non-target)")
    return scores, labels


def error_rates(scores: np.ndarray, labels: np.ndarray) -> ErrorRates:
    """Miss/false-alarm rates at all distinct thresholds (one sort, no Python loop)."""
    scores, labels = _check(scores, labels)
    order = np.argsort(scores)  # order within tied scores does not matter: ties share one threshold
    return _sorted_error_rates(scores[order], labels[order])


def _sorted_error_rates(sorted_scores: np.ndarray, sorted_labels: np.ndarray,
                        weights: Optional[np.ndarray] = None) -> ErrorRates:
    """:func:`error_rates` of trials already sorted by score; ``weights`` counts each trial that many
    times (the speaker bootstrap)."""
    group_end = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    if weights is None:
        targets_below = np.cumsum(sorted_labels)[group_end]
        nontargets_below = (group_end + 1) - targets_below
    else:
        targets_below = np.cumsum(np.where(sorted_labels, weights, 0.0))[group_end]
        nontargets_below = np.cumsum(np.where(sorted_labels, 0.0, weights))[group_end]
    n_target, n_nontarget = targets_below[-1], nontargets_below[-1]
    fnr = np.r_[0.0, targets_below / n_target]
    fpr = np.r_[1.0, 1.0 - nontargets_below / n_nontarget]
    thresholds = np.r_[-np.inf, sorted_scores[group_end]]
    return ErrorRates(thresholds, fnr, fpr)


def _eer_from_rates(rates: ErrorRates) -> Tuple[float, float]:
    """(EER as a fraction, threshold) at the crossing of the polyline with fnr == fpr."""
    gap = rates.fnr - rates.fpr  # increases from -1 to +1 along the thresholds
    i = int(np.searchsorted(gap, 0.0, side="left"))
    if gap[i] == 0.0:
        return float(rates.fpr[i]), float(rates.thresholds[i])
    g0, g1 = gap[i - 1], gap[i]
    a = -g0 / (g1 - g0)
    eer = rates.fpr[i - 1] + a * (rates.fpr[i] - rates.fpr[i - 1])
    return float(eer), float(rates.thresholds[i])


def compute_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate in percent."""
    return 100.0 * _eer_from_rates(error_rates(scores, labels))[0]


def _min_dcf_from_rates(rates: ErrorRates, p_target: float) -> Tuple[float, int]:
    cost = rates.fnr * p_target + rates.fpr * (1.0 - p_target)
    best = int(np.argmin(cost))
    return float(cost[best] / min(p_target, 1.0 - p_target)), best


def compute_min_dcf(scores: np.ndarray, labels: np.ndarray, p_target: float = 0.05) -> float:
    """Normalised minimum detection cost (C_miss = C_fa = 1)."""
    return _min_dcf_from_rates(error_rates(scores, labels), p_target)[0]


def compute_metrics(scores: np.ndarray, labels: np.ndarray, p_targets: Sequence[float] = P_TARGETS,
                    speakers: Optional[Tuple[Sequence[str], Sequence[str]]] = None,
                    bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0) -> Dict[str, object]:
    """The metrics JSON of docs/conventions.md §Metrics: EER (percent), minDCF per p_target, trial
    counts; actual DCF per p_target, Cllr and minCllr with the scores read as natural-log LLRs; and,
    given the (enrolment, test) speaker of every trial and ``bootstrap`` > 0 resamples, 95%
    speaker-bootstrap intervals ``eer_ci`` and ``min_dcf_ci`` (:func:`speaker_bootstrap_ci`)."""
    rates = error_rates(scores, labels)
    labels = np.asarray(labels).astype(bool)
    n_target = int(np.count_nonzero(labels))
    metrics: Dict[str, object] = {
        "eer": 100.0 * _eer_from_rates(rates)[0],
        "min_dcf": {f"{p:g}": _min_dcf_from_rates(rates, p)[0] for p in p_targets},
        "n_target": n_target,
        "n_nontarget": int(len(labels) - n_target),
        "act_dcf": {f"{p:g}": compute_act_dcf(scores, labels, p) for p in p_targets},
        "cllr": compute_cllr(scores, labels),
        "min_cllr": compute_min_cllr(scores, labels),
    }
    if speakers is not None and bootstrap > 0:
        metrics.update(speaker_bootstrap_ci(scores, labels, speakers[0], speakers[1], p_targets,
                                            num_resamples=bootstrap, seed=seed))
    return metrics


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def compute_cllr(llrs: np.ndarray, labels: np.ndarray) -> float:
    """Log-likelihood-ratio cost in bits: 0 for perfect LLRs, 1 for an uninformative system
    (scores read as natural-log likelihood ratios)."""
    llrs, labels = _check(llrs, labels)
    return float((_softplus(-llrs[labels]).mean() + _softplus(llrs[~labels]).mean()) / (2.0 * np.log(2.0)))


def _pav_target_posterior(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The isotonic (non-decreasing in score) least-squares fit of the 0/1 labels, per trial: the
    pool-adjacent-violators algorithm on the trials sorted by score, equal scores pooled first.

    Blocks are kept as exact integer (targets, trials) counts, so merging compares means without
    rounding and each block's mean is rounded once. NumPy and a loop over the distinct scores only:
    scoring does not pay scikit-learn's import (about 1.7 s of CPU) for this one fit."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    tie_targets = np.add.reduceat(labels[order].astype(np.int64), starts).tolist()
    tie_trials = np.diff(np.r_[starts, len(scores)]).tolist()
    targets: List[int] = []
    trials: List[int] = []
    for k, n in zip(tie_targets, tie_trials):
        # Pool while the previous block's mean is not below this one's: k' / n' >= k / n.
        while targets and targets[-1] * n >= k * trials[-1]:
            k += targets.pop()
            n += trials.pop()
        targets.append(k)
        trials.append(n)
    posterior = np.empty(len(scores))
    posterior[order] = np.repeat(np.asarray(targets, dtype=np.float64) / np.asarray(trials, dtype=np.float64), trials)
    return posterior


def compute_min_cllr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Cllr after the best monotonic calibration of ``scores`` (pool-adjacent-violators, as in BOSARIS).

    PAV gives the target posterior of each score at the empirical prior; subtracting the prior
    log-odds turns it into the optimal LLR. Posteriors of exactly 0 or 1 give infinite LLRs, whose
    cost terms are exactly 0 on the side they favour (computed without overflow).
    """
    scores, labels = _check(scores, labels)
    posterior = _pav_target_posterior(scores, labels)
    prior_log_odds = np.log(labels.mean() / (1.0 - labels.mean()))
    with np.errstate(divide="ignore"):
        llr = np.log(posterior) - np.log1p(-posterior) - prior_log_odds
    return compute_cllr(np.clip(llr, -1e6, 1e6), labels)


def dcf_at(scores: np.ndarray, labels: np.ndarray, p_target: float, threshold: float) -> float:
    """Normalised detection cost (C_miss = C_fa = 1) of accepting where score > ``threshold``."""
    scores, labels = _check(scores, labels)
    accept = scores > threshold
    fnr = np.count_nonzero(~accept[labels]) / np.count_nonzero(labels)
    fpr = np.count_nonzero(accept[~labels]) / np.count_nonzero(~labels)
    return float((p_target * fnr + (1.0 - p_target) * fpr) / min(p_target, 1.0 - p_target))


def compute_act_dcf(llrs: np.ndarray, labels: np.ndarray, p_target: float = 0.05) -> float:
    """Normalised detection cost of Bayes decisions on LLRs: accept where llr > log((1 − p) / p)."""
    return dcf_at(llrs, labels, p_target, float(np.log((1.0 - p_target) / p_target)))


def _between(rates: ErrorRates, i: int) -> float:
    """A finite threshold taking the decisions of entry ``i``: midway to the next distinct score."""
    t = rates.thresholds
    if i == 0:
        return float(t[1] - 1.0)
    if i == len(t) - 1:
        return float(t[-1] + 1.0)
    return float(0.5 * (t[i] + t[i + 1]))


def eer_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (accept where score > it) at which the miss and false-alarm rates cross (the EER)."""
    return _eer_from_rates(error_rates(scores, labels))[1]


def min_dcf_threshold(scores: np.ndarray, labels: np.ndarray, p_target: float = 0.05) -> float:
    """A threshold (accept where score > it) whose cost on these trials is their minDCF."""
    rates = error_rates(scores, labels)
    return _between(rates, _min_dcf_from_rates(rates, p_target)[1])


def far_threshold(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """The lowest threshold (accept where score > it) whose false-accept rate is at most ``far``."""
    if not 0.0 <= far <= 1.0:
        raise SvmixError(f"false-accept rate must be in [0, 1], got {far}")
    rates = error_rates(scores, labels)
    return _between(rates, int(np.argmax(rates.fpr <= far + 1e-12)))


def speaker_bootstrap_ci(scores: np.ndarray, labels: np.ndarray, enroll_speakers: Sequence[str],
                         test_speakers: Sequence[str], p_targets: Sequence[float] = P_TARGETS,
                         num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Dict[str, object]:
    """Percentile confidence intervals of EER (percent) and minDCF from a speaker bootstrap.

    Trials sharing a speaker are not independent, so the resampled unit is the speaker: each
    resample draws the speakers with replacement, counts ``c_s`` copies of each, and weights a
    target trial of speaker ``a`` by ``c_a`` and a non-target trial of ``a`` against ``b`` by
    ``c_a · c_b`` (copies act as distinct speakers; pairs of copies of one speaker are dropped).
    Resamples left without targets or non-targets are skipped and counted.
    Returns ``{"eer_ci": [lo, hi], "min_dcf_ci": {p: [lo, hi]}, "bootstrap": {...}}``.
    """
    if num_resamples < 1:
        raise SvmixError(f"bootstrap needs at least 1 resample, got {num_resamples}")
    if not 0.0 < confidence < 1.0:
        raise SvmixError(f"confidence must be in (0, 1), got {confidence}")
    scores, labels = _check(scores, labels)
    if not len(enroll_speakers) == len(test_speakers) == len(scores):
        raise SvmixError(f"{len(scores)} trials but {len(enroll_speakers)} enrolment and "
                         f"{len(test_speakers)} test speakers")
    names, codes = np.unique(np.r_[np.asarray(enroll_speakers, dtype=str), np.asarray(test_speakers, dtype=str)],
                             return_inverse=True)
    order = np.argsort(scores)
    sorted_scores, sorted_labels = scores[order], labels[order]
    enroll, test = codes[: len(scores)][order], codes[len(scores):][order]
    rng = np.random.default_rng(seed)
    eers, dcfs, skipped = [], {p: [] for p in p_targets}, 0
    for _ in range(num_resamples):
        counts = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names)).astype(np.float64)
        weights = np.where(sorted_labels, counts[enroll], counts[enroll] * counts[test])
        if not weights[sorted_labels].any() or not weights[~sorted_labels].any():
            skipped += 1
            continue
        rates = _sorted_error_rates(sorted_scores, sorted_labels, weights)
        eers.append(100.0 * _eer_from_rates(rates)[0])
        for p in p_targets:
            dcfs[p].append(_min_dcf_from_rates(rates, p)[0])
    if not eers:
        raise SvmixError(f"no bootstrap resample had both target and non-target trials ({len(names)} speakers)")
    tail = 100.0 * (1.0 - confidence) / 2.0

    def interval(values):
        lo, hi = np.percentile(values, [tail, 100.0 - tail])
        return [float(lo), float(hi)]

    return {"eer_ci": interval(eers), "min_dcf_ci": {f"{p:g}": interval(v) for p, v in dcfs.items()},
            "bootstrap": {"resamples": len(eers), "skipped": skipped, "speakers": int(len(names)),
                          "confidence": confidence, "seed": seed, "unit": "speaker"}}


def det_curve(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, fnr, thresholds) at every distinct threshold, thresholds ascending."""
    rates = error_rates(scores, labels)
    return rates.fpr, rates.fnr, rates.thresholds


DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 90, 95, 98, 99)


def _deviate(p):
    """Normal deviate of a rate (the DET axis scale), clipped away from +-infinity."""
    from scipy.special import ndtri  # what scipy.stats.norm.ppf computes, without loading scipy.stats (~1.2 s CPU)

    return ndtri(np.clip(p, 1e-6, 1 - 1e-6))


def _thin(rates: ErrorRates, max_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """About ``max_points`` curve points, evenly spaced in deviate along both axes, ends included."""
    grid = np.linspace(-5.0, 5.0, max_points // 2)
    along_fnr = np.searchsorted(_deviate(rates.fnr), grid)  # fnr ascends along the thresholds
    along_fpr = np.searchsorted(-_deviate(rates.fpr), -grid)  # fpr descends
    keep = np.unique(np.clip(np.r_[0, along_fnr, along_fpr, len(rates.fpr) - 1], 0, len(rates.fpr) - 1))
    return rates.fpr[keep], rates.fnr[keep]


def plot_det(curves: Iterable[Tuple[str, np.ndarray, np.ndarray]], path: os.PathLike,
             p_targets: Sequence[float] = P_TARGETS, max_points: int = 5000) -> None:
    """Draw the DET curves of ``(label, scores, labels)`` on normal-deviate axes into a PNG.

    Each curve marks its EER point (circle) and its minDCF operating points (one marker per p_target).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from svmix.utils.fileio import atomic_path

    dcf_markers = ("s", "^", "D", "v")
    fig, ax = plt.subplots(figsize=(6, 6))
    marked = [0.0005, 0.6]  # the axes span every marked rate
    for label, scores, labels in curves:
        rates = error_rates(scores, labels)
        fpr, fnr = _thin(rates, max_points)
        (line,) = ax.plot(_deviate(fpr), _deviate(fnr), label=label)
        eer, _ = _eer_from_rates(rates)
        ax.plot(_deviate(eer), _deviate(eer), "o", color=line.get_color(), label=f"{label}: EER {100 * eer:.2f}%")
        for p, marker in zip(p_targets, dcf_markers):
            dcf, best = _min_dcf_from_rates(rates, p)
            marked += [r for r in (rates.fpr[best], rates.fnr[best]) if 0 < r < 1]
            ax.plot(_deviate(rates.fpr[best]), _deviate(rates.fnr[best]), marker, color=line.get_color(),
                    markerfacecolor="none", label=f"{label}: minDCF({p:g}) {dcf:.3f}")
    ticks = _deviate(np.array(DET_TICKS) / 100)
    ax.set_xticks(ticks, [f"{t:g}" for t in DET_TICKS], rotation=90)
    ax.set_yticks(ticks, [f"{t:g}" for t in DET_TICKS])
    lo, hi = _deviate(max(0.5 * min(marked), 1e-5)), _deviate(min(1.02 * max(marked), 0.999))
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.plot([lo, hi], [lo, hi], ":", color="grey", linewidth=0.8)
    ax.set_xlabel("False acceptance rate (%)")
    ax.set_ylabel("False rejection rate (%)")
    ax.set_title("DET curve")
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
