"""Score calibration and fusion: raw verification scores (of one or several systems, with optional
quality measures) → log-likelihood ratios.

A calibration is linear logistic regression (scikit-learn) fitted on a development trial list with
targets and non-targets weighted equally, so its log-odds output is a log-likelihood ratio: the
scores of a trial become ``llr = w · [score_1 … score_S, quality...] + b``. With several systems
(S > 1) this is linear logistic fusion, one weight per system. With quality measures (QMF) each
measure enters as the minimum and the maximum over the trial's two sides, so a calibration does not
depend on which side is enrolment. The per-utterance measures are :data:`QUALITY_MEASURES`
(log duration, embedding magnitude), read from the ``quality.tsv`` that ``svmix-extract`` writes.

A calibration also states its operating point, a threshold on LLRs chosen on the development
trials: ``bayes`` (``log((1 − p) / p)`` for the target prior ``p``), ``min-dcf`` (the LLR threshold
reaching minDCF at ``p`` on the development trials) or ``far`` (the threshold giving a stated false-
accept rate on the development non-targets). A trial is accepted where ``llr > llr_threshold``.

It is stored as a small JSON file (docs/conventions.md §Metrics)::

    {"format": "svmix-calibration", "version": 1, "features": ["score", ...], "num_systems": 1,
     "quality_measures": [], "weights": [...], "bias": b, "p_target": 0.05,
     "operating_point": "bayes", "llr_threshold": 2.944, "fitted_on": {...}}
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


# Per-utterance quality measures: name → function of (duration in seconds, embedding norm).
QUALITY_MEASURES = {
    "log_duration": lambda seconds, norm: np.log(np.maximum(seconds, 1e-3)),
    "embedding_norm": lambda seconds, norm: norm,
}
QUALITY_FILE = "quality.tsv"
QUALITY_COLUMNS = ("utt", "duration", "embedding_norm")
OPERATING_POINTS = ("bayes", "min-dcf", "far")


def embedding_norm(segments: np.ndarray) -> float:
    """The magnitude of an utterance's embedding before length normalisation: the mean L2 norm of
    its raw segment embeddings (rows of ``segments``)."""
    return float(np.linalg.norm(np.atleast_2d(np.asarray(segments, dtype=np.float64)), axis=-1).mean())


def utterance_quality(seconds: np.ndarray, norms: np.ndarray, measures: Sequence[str]) -> np.ndarray:
    """(utterances, measures) array of the named :data:`QUALITY_MEASURES`."""
    unknown = [m for m in measures if m not in QUALITY_MEASURES]
    if unknown:
        raise SvmixError(f"unknown quality measure '{unknown[0]}'; known: {', '.join(QUALITY_MEASURES)}")
    seconds, norms = np.asarray(seconds, dtype=np.float64), np.asarray(norms, dtype=np.float64)
    if not measures:
        return np.zeros((len(seconds), 0))
    return np.stack([QUALITY_MEASURES[m](seconds, norms) for m in measures], axis=-1).reshape(len(seconds), -1)


def write_quality(path: os.PathLike, utts: Sequence[str], seconds: Sequence[float], norms: Sequence[float]) -> None:
    """Write a quality file: a header line, then ``<utt>\t<duration seconds>\t<embedding norm>``."""
    from svmix.utils.fileio import atomic_open

    with atomic_open(path) as f:
        f.write("\t".join(QUALITY_COLUMNS) + "\n")
        f.writelines(f"{u}\t{s:.3f}\t{n:.6g}\n" for u, s, n in zip(utts, seconds, norms))


def read_quality(path: os.PathLike) -> Dict[str, Tuple[float, float]]:
    """utt → (duration seconds, embedding norm) of a quality file, or of ``DIR/quality.tsv``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, QUALITY_FILE)
        if not os.path.isfile(path):
            raise SvmixError(f"{path}: no quality file (re-extract the embeddings with this svmix-extract)")
    out: Dict[str, Tuple[float, float]] = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().split()
        if tuple(header) != QUALITY_COLUMNS:
            raise SvmixError(f"{path}:1: expected the header '{' '.join(QUALITY_COLUMNS)}'")
        for number, line in enumerate(f, start=2):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 3:
                    raise ValueError
                seconds, norm = float(fields[1]), float(fields[2])
            except ValueError:
                raise SvmixError(f"{path}:{number}: expected '<utt> <duration> <embedding_norm>'") from None
            if not (math.isfinite(seconds) and seconds > 0 and math.isfinite(norm) and norm >= 0):
                raise SvmixError(f"{path}:{number}: duration must be positive and the norm non-negative, finite")
            if fields[0] in out:
                raise SvmixError(f"{path}:{number}: utterance '{fields[0]}' listed twice")
            out[fields[0]] = (seconds, norm)
    if not out:
        raise SvmixError(f"{path}: no utterances")
    return out


def quality_of_trials(quality: Dict[str, Tuple[float, float]], enroll: Sequence[str], test: Sequence[str],
                      measures: Sequence[str], source: str = "quality file") -> np.ndarray:
    """The QMF features (:func:`trial_quality`) of trials given by utterance names."""
    names = sorted(set(enroll) | set(test))
    missing = [u for u in names if u not in quality]
    if missing:
        raise SvmixError(f"{source}: no quality measures for utterance '{missing[0]}' "
                         f"({len(missing)} trial utterances missing)")
    index = {u: i for i, u in enumerate(names)}
    values = np.array([quality[u] for u in names], dtype=np.float64)
    per_utt = utterance_quality(values[:, 0], values[:, 1], measures)
    return trial_quality(per_utt[[index[u] for u in enroll]], per_utt[[index[u] for u in test]])


def quality_feature_names(measures: Sequence[str]) -> List[str]:
    return [f"min_{m}" for m in measures] + [f"max_{m}" for m in measures]


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
    num_systems: int = 1
    quality_measures: List[str] = field(default_factory=list)
    operating_point: str = "bayes"
    threshold: Optional[float] = None  # the operating point's LLR threshold (None: Bayes threshold)

    @property
    def llr_threshold(self) -> float:
        return bayes_threshold(self.p_target) if self.threshold is None else float(self.threshold)

    def describe_operating_point(self) -> str:
        """One line saying which operating point decisions use."""
        what = {"bayes": f"Bayes threshold at p_target={self.p_target:g}",
                "min-dcf": f"minDCF threshold at p_target={self.p_target:g} on the development trials",
                "far": f"false-accept rate {self.fitted_on.get('far', '?')} on the development trials"}
        return f"accept llr > {self.llr_threshold:.4f} ({what.get(self.operating_point, self.operating_point)})"

    def apply(self, scores: np.ndarray, quality: Optional[np.ndarray] = None) -> np.ndarray:
        """LLRs of ``scores`` ((trials,) or (trials, systems)) with ``quality`` (trials, quality features)
        when the calibration has QMF."""
        scores = np.asarray(scores, dtype=np.float64)
        systems = 1 if scores.ndim == 1 else scores.shape[1]
        if systems != self.num_systems:
            raise SvmixError(f"this calibration fuses {self.num_systems} system(s); got scores of {systems}")
        if quality is None and len(self.weights) > self.num_systems:
            raise SvmixError(f"this calibration also takes quality measures ({', '.join(self.features[systems:])}); "
                             "give them (--quality)")
        x = _design(scores, quality)
        if x.shape[1] != len(self.weights):
            raise SvmixError(f"this calibration takes {len(self.weights)} features ({', '.join(self.features)}); "
                             f"got {x.shape[1]}")
        return x @ np.asarray(self.weights) + self.bias

    def decide(self, llrs: np.ndarray) -> np.ndarray:
        """Accept (True) where the LLR is above the operating point's threshold."""
        return np.asarray(llrs) > self.llr_threshold

    def save(self, path: os.PathLike) -> None:
        raw = {"format": FORMAT, "version": VERSION, **asdict(self), "llr_threshold": self.llr_threshold}
        raw.pop("threshold")
        write_json(path, raw)

    @classmethod
    def load(cls, path: os.PathLike) -> "Calibration":
        raw = read_json(path)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise SvmixError(f"{path}: not an svmix calibration file (no \"format\": \"{FORMAT}\")")
        if raw.get("version") != VERSION:
            raise SvmixError(f"{path}: calibration version {raw.get('version')} is not supported (expected {VERSION})")
        try:
            point = str(raw.get("operating_point", "bayes"))
            cal = cls(features=list(raw["features"]), weights=[float(w) for w in raw["weights"]],
                      bias=float(raw["bias"]), p_target=float(raw["p_target"]), fitted_on=dict(raw.get("fitted_on", {})),
                      num_systems=int(raw.get("num_systems", 1)),
                      quality_measures=[str(m) for m in raw.get("quality_measures", [])], operating_point=point,
                      threshold=None if point == "bayes" else float(raw["llr_threshold"]))
        except (KeyError, TypeError, ValueError) as e:
            raise SvmixError(f"{path}: malformed calibration ({type(e).__name__}: {e})") from None
        if len(cal.features) != len(cal.weights) or not all(map(math.isfinite, cal.weights + [cal.bias])):
            raise SvmixError(f"{path}: calibration weights must be finite, one per feature")
        if point not in OPERATING_POINTS or not math.isfinite(cal.llr_threshold):
            raise SvmixError(f"{path}: operating_point must be one of {', '.join(OPERATING_POINTS)} with a finite "
                             "llr_threshold")
        if cal.num_systems < 1 or len(cal.weights) < cal.num_systems + 2 * len(cal.quality_measures):
            raise SvmixError(f"{path}: {len(cal.weights)} weights do not fit {cal.num_systems} system(s) and "
                             f"quality measures {cal.quality_measures}")
        utterance_quality(np.ones(1), np.ones(1), cal.quality_measures)  # names known
        bayes_threshold(cal.p_target)
        return cal


def _design(scores: np.ndarray, quality: Optional[np.ndarray]) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores.reshape(-1, 1) if scores.ndim == 1 else scores
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


def operating_threshold(llrs: np.ndarray, labels: np.ndarray, point: str, p_target: float,
                        far: Optional[float] = None) -> Optional[float]:
    """The LLR threshold of an operating point chosen on development trials (None for ``bayes``,
    whose threshold follows from ``p_target`` alone)."""
    from svmix.metrics import far_threshold, min_dcf_threshold

    if point == "bayes":
        return None
    if point == "min-dcf":
        return min_dcf_threshold(llrs, labels, p_target)
    if point == "far":
        if far is None or not 0.0 < far < 1.0:
            raise SvmixError(f"the far operating point needs a false-accept rate in (0, 1), got {far}")
        return far_threshold(llrs, labels, far)
    raise SvmixError(f"unknown operating point '{point}'; known: {', '.join(OPERATING_POINTS)}")


def fit_calibration(scores: np.ndarray, labels: np.ndarray, quality: Optional[np.ndarray] = None,
                    quality_names: Sequence[str] = (), p_target: float = 0.05,
                    fitted_on: Optional[Dict[str, Any]] = None, quality_measures: Sequence[str] = (),
                    operating_point: str = "bayes", far: Optional[float] = None) -> Calibration:
    """Fit linear logistic calibration (or, for (trials, systems) ``scores``, fusion) on labelled
    development trials (targets and non-targets weighted equally, practically unregularised), and
    choose the operating point's threshold on them. ``quality_measures`` names the per-utterance
    measures behind ``quality`` (then the feature names follow from them)."""
    from sklearn.linear_model import LogisticRegression

    bayes_threshold(p_target)
    if operating_point not in OPERATING_POINTS:
        raise SvmixError(f"unknown operating point '{operating_point}'; known: {', '.join(OPERATING_POINTS)}")
    scores = np.asarray(scores, dtype=np.float64)
    systems = 1 if scores.ndim == 1 else scores.shape[1]
    x = _design(scores, quality)
    labels = np.asarray(labels).astype(bool).ravel()
    if len(labels) != len(x):
        raise SvmixError(f"{len(x)} scores but {len(labels)} labels")
    n_target = int(labels.sum())
    if n_target == 0 or n_target == len(labels):
        raise SvmixError(f"calibration needs target and non-target trials (got {n_target} target, "
                         f"{len(labels) - n_target} non-target)")
    if quality_measures:
        quality_names = quality_feature_names(quality_measures)
    score_names = ["score"] if systems == 1 else [f"score{i + 1}" for i in range(systems)]
    names = score_names + list(quality_names or [f"quality{i}" for i in range(x.shape[1] - systems)])
    if len(names) != x.shape[1]:
        raise SvmixError(f"{x.shape[1] - systems} quality features but {len(names) - systems} names")
    model = LogisticRegression(C=1e6, class_weight="balanced", max_iter=1000).fit(x, labels)
    info = {"n_target": n_target, "n_nontarget": int(len(labels) - n_target), **(fitted_on or {})}
    if operating_point == "far":
        info["far"] = far
    cal = Calibration(features=names, weights=[float(w) for w in model.coef_[0]],
                      bias=float(model.intercept_[0]), p_target=float(p_target), fitted_on=info,
                      num_systems=systems, quality_measures=list(quality_measures), operating_point=operating_point)
    cal.threshold = operating_threshold(cal.apply(scores, quality), labels, operating_point, p_target, far)
    return cal


def _figures(x: np.ndarray, labels: np.ndarray, p_target: float, threshold: Optional[float] = None) -> Dict[str, float]:
    from svmix.metrics import compute_act_dcf, compute_cllr, compute_min_cllr, compute_min_dcf, dcf_at

    out = {"cllr": compute_cllr(x, labels), "act_dcf": compute_act_dcf(x, labels, p_target),
           "min_cllr": compute_min_cllr(x, labels), "min_dcf": compute_min_dcf(x, labels, p_target)}
    if threshold is not None:
        out["dcf_at_threshold"] = dcf_at(x, labels, p_target, threshold)
    return out


def fit_score_files(scores_paths: Sequence[os.PathLike], trials_path: os.PathLike, p_target: float = 0.05,
                    quality_path: Optional[os.PathLike] = None, operating_point: str = "bayes",
                    far: Optional[float] = None):
    """Fit a calibration (one score file) or a fusion (several) on labelled trials, with QMF when
    ``quality_path`` (a quality file or an embedding dir holding one) is given; returns
    ``(calibration, before, after)``, where before/after hold Cllr, actual DCF at ``p_target``,
    minCllr and minDCF of the (first) raw scores and of the LLRs on those trials."""
    from svmix.scoring.pipeline import read_scored_trials

    labels, scores, _, (enroll, test) = read_scored_trials(trials_path, scores_paths, names=True)
    quality, measures = None, ()
    if quality_path is not None:
        measures = tuple(QUALITY_MEASURES)
        quality = quality_of_trials(read_quality(quality_path), enroll, test, measures, str(quality_path))
    matrix = scores[0] if len(scores) == 1 else np.stack(scores, axis=1)
    fitted_on = {"scores": [str(p) for p in scores_paths] if len(scores) > 1 else str(scores_paths[0]),
                 "trials": str(trials_path)}
    if quality_path is not None:
        fitted_on["quality"] = str(quality_path)
    cal = fit_calibration(matrix, labels, quality, p_target=p_target, fitted_on=fitted_on, quality_measures=measures,
                          operating_point=operating_point, far=far)
    llr = cal.apply(matrix, quality)
    return cal, _figures(scores[0], labels, p_target), _figures(llr, labels, p_target, cal.llr_threshold)


def calibrate_score_files(cal: Calibration, scores_paths: Sequence[os.PathLike], output: os.PathLike,
                          quality_path: Optional[os.PathLike] = None) -> int:
    """Write the LLRs of every line of the (first) score file to ``output`` (same format and order);
    the other files (fusion) are aligned to it by pair. Returns the number of lines."""
    from svmix.scoring.scorefile import read_score_lines, read_scores, write_scores
    from svmix.scoring.trials import TrialIndex

    if len(scores_paths) != cal.num_systems:
        raise SvmixError(f"this calibration fuses {cal.num_systems} system(s): give --scores {cal.num_systems} "
                         f"time(s), not {len(scores_paths)}")
    if bool(cal.quality_measures) != (quality_path is not None):
        raise SvmixError(f"this calibration takes quality measures ({', '.join(cal.quality_measures)}): give --quality"
                         if cal.quality_measures else "this calibration takes no quality measures: drop --quality")
    vocab: Dict[str, int] = {}
    enroll, test, first, _ = read_score_lines(scores_paths[0], vocab)
    trials = TrialIndex(enroll=enroll, test=test, labels=np.full(len(first), -1, dtype=np.int8))
    columns = [first] + [read_scores(path, trials, vocab) for path in scores_paths[1:]]
    matrix = first if len(columns) == 1 else np.stack(columns, axis=1)
    quality = None
    if quality_path is not None:
        ids = list(vocab)
        quality = quality_of_trials(read_quality(quality_path), [ids[i] for i in enroll], [ids[i] for i in test],
                                    cal.quality_measures, str(quality_path))
    write_scores(output, list(vocab), trials, cal.apply(matrix, quality))
    return len(first)
