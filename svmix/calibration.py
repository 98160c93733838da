"""Score calibration: raw verification scores (and optional quality measures) → log-likelihood ratios.

A calibration is linear logistic regression (scikit-learn) fitted on a development trial list with
targets and non-targets weighted equally, so its log-odds output is a log-likelihood ratio: the
score of a trial becomes ``llr = w · [score, quality...] + b``. With quality measures (QMF) each
measure enters as the minimum and the maximum over the trial's two sides, so a calibration does
not depend on which side is enrolment. A calibration also states its operating point: the Bayes
decision threshold ``log((1 − p) / p)`` on LLRs for the target prior ``p`` it was chosen for.

It is stored as a small JSON file::

    {"format": "svmix-calibration", "version": 1, "features": ["score", ...],
     "weights": [...], "bias": b, "p_target": 0.05, "llr_threshold": 2.944, "fitted_on": {...}}
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from svmix.errors import SvmixError
from svmix.utils.fileio import read_json, write_json

FORMAT = "svmix-calibration"
VERSION = 1


def bayes_threshold(p_target: float) -> float:
    """LLR above which accepting costs less than rejecting (C_miss = C_fa = 1)."""
    if not 0.0 < p_target < 1.0:
        raise SvmixError(f"p_target must be in (0, 1), got {p_target}")
    return math.log((1.0 - p_target) / p_target)


def trial_quality(enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Symmetric QMF features of (trials, measures) arrays: per measure, min and max of the two sides."""
    enroll, test = np.asarray(enroll, dtype=np.float64), np.asarray(test, dtype=np.float64)
    if enroll.shape != test.shape or enroll.ndim != 2:
        raise SvmixError(f"quality measures must be two (trials, measures) arrays of one shape, "
                         f"got {enroll.shape} and {test.shape}")
    return np.concatenate([np.minimum(enroll, test), np.maximum(enroll, test)], axis=1)


@dataclass
class Calibration:
    features: List[str]
    weights: List[float]
    bias: float
    p_target: float = 0.05
    fitted_on: Dict[str, Any] = field(default_factory=dict)

    @property
    def llr_threshold(self) -> float:
        return bayes_threshold(self.p_target)

    def apply(self, scores: np.ndarray, quality: Optional[np.ndarray] = None) -> np.ndarray:
        """LLRs of ``scores`` (trials,) with ``quality`` (trials, features − 1) when the calibration has QMF."""
        x = _design(scores, quality)
        if x.shape[1] != len(self.weights):
            raise SvmixError(f"this calibration takes {len(self.weights)} features ({', '.join(self.features)}); "
                             f"got {x.shape[1]}")
        return x @ np.asarray(self.weights) + self.bias

    def decide(self, llrs: np.ndarray) -> np.ndarray:
        """Accept (True) where the LLR is above the operating point's Bayes threshold."""
        return np.asarray(llrs) > self.llr_threshold

    def save(self, path: os.PathLike) -> None:
        write_json(path, {"format": FORMAT, "version": VERSION, **asdict(self), "llr_threshold": self.llr_threshold})

    @classmethod
    def load(cls, path: os.PathLike) -> "Calibration":
        raw = read_json(path)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise SvmixError(f"{path}: not an svmix calibration file (no \"format\": \"{FORMAT}\")")
        if raw.get("version") != VERSION:
            raise SvmixError(f"{path}: calibration version {raw.get('version')} is not supported (expected {VERSION})")
        try:
            cal = cls(features=list(raw["features"]), weights=[float(w) for w in raw["weights"]],
                      bias=float(raw["bias"]), p_target=float(raw["p_target"]), fitted_on=dict(raw.get("fitted_on", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise SvmixError(f"{path}: malformed calibration ({type(e).__name__}: {e})") from None
        if len(cal.features) != len(cal.weights) or not all(map(math.isfinite, cal.weights + [cal.bias])):
            raise SvmixError(f"{path}: calibration weights must be finite, one per feature")
        bayes_threshold(cal.p_target)
        return cal


def _design(scores: np.ndarray, quality: Optional[np.ndarray]) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    if quality is None:
        x = scores
    else:
        quality = np.asarray(quality, dtype=np.float64)
        if quality.ndim != 2 or len(quality) != len(scores):
            raise SvmixError(f"quality must be a (trials, features) array for {len(scores)} trials, "
                             f"got shape {quality.shape}")
        x = np.concatenate([scores, quality], axis=1)
    if not np.isfinite(x).all():
        raise SvmixError("calibration inputs must be finite (a score or quality measure is NaN or infinite)")
    return x


def fit_calibration(scores: np.ndarray, labels: np.ndarray, quality: Optional[np.ndarray] = None,
                    quality_names: Sequence[str] = (), p_target: float = 0.05,
                    fitted_on: Optional[Dict[str, Any]] = None) -> Calibration:
    """Fit linear logistic calibration on labelled development trials (targets and non-targets
    weighted equally, practically unregularised)."""
    from sklearn.linear_model import LogisticRegression

    bayes_threshold(p_target)
    x = _design(scores, quality)
    labels = np.asarray(labels).astype(bool).ravel()
    if len(labels) != len(x):
        raise SvmixError(f"{len(x)} scores but {len(labels)} labels")
    n_target = int(labels.sum())
    if n_target == 0 or n_target == len(labels):
        raise SvmixError(f"calibration needs target and non-target trials (got {n_target} target, "
                         f"{len(labels) - n_target} non-target)")
    names = ["score"] + list(quality_names or [f"quality{i}" for i in range(x.shape[1] - 1)])
    if len(names) != x.shape[1]:
        raise SvmixError(f"{x.shape[1] - 1} quality features but {len(names) - 1} names")
    model = LogisticRegression(C=1e6, class_weight="balanced", max_iter=1000).fit(x, labels)
    info = {"n_target": n_target, "n_nontarget": int(len(labels) - n_target), **(fitted_on or {})}
    return Calibration(features=names, weights=[float(w) for w in model.coef_[0]],
                       bias=float(model.intercept_[0]), p_target=float(p_target), fitted_on=info)


def fit_score_file(scores_path: os.PathLike, trials_path: os.PathLike, p_target: float = 0.05):
    """Fit a calibration of a score file on its labelled trials; returns ``(calibration, before,
    after)``, where before/after hold Cllr, actual DCF at ``p_target``, minCllr and minDCF of the
    raw scores and of the LLRs on those trials."""
    from svmix.metrics import compute_act_dcf, compute_cllr, compute_min_cllr, compute_min_dcf
    from svmix.scoring.pipeline import read_scored_trials

    labels, (scores,), _ = read_scored_trials(trials_path, [scores_path])
    cal = fit_calibration(scores, labels, p_target=p_target,
                          fitted_on={"scores": str(scores_path), "trials": str(trials_path)})
    llr = cal.apply(scores)

    def figures(x: np.ndarray) -> Dict[str, float]:
        return {"cllr": compute_cllr(x, labels), "act_dcf": compute_act_dcf(x, labels, p_target),
                "min_cllr": compute_min_cllr(x, labels), "min_dcf": compute_min_dcf(x, labels, p_target)}

    return cal, figures(scores), figures(llr)


def calibrate_score_file(cal: Calibration, scores_path: os.PathLike, output: os.PathLike) -> int:
    """Write the LLRs of every line of a score file to ``output`` (same format and order); returns
    the number of lines."""
    from svmix.scoring.scorefile import read_score_lines, write_scores
    from svmix.scoring.trials import TrialIndex

    if len(cal.features) != 1:
        raise SvmixError(f"this calibration also takes quality measures ({', '.join(cal.features[1:])}); "
                         "apply it with svmix.calibration.Calibration.apply")
    vocab: Dict[str, int] = {}
    enroll, test, scores, _ = read_score_lines(scores_path, vocab)
    trials = TrialIndex(enroll=enroll, test=test, labels=np.full(len(scores), -1, dtype=np.int8))
    write_scores(output, list(vocab), trials, cal.apply(scores))
    return len(scores)
