"""Scoring trials end to end: the Python API behind ``svmix-score``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from svmix.data.datadir import read_kv
from svmix.errors import SvmixError
from svmix.metrics import DEFAULT_RESAMPLES, compute_metrics
from svmix.scoring.asnorm import cohort_vectors  # also registers "asnorm"
from svmix.scoring.cosine import DEFAULT_CHUNK, cosine_scores, scoring_vectors
from svmix.scoring.embeddings import Embeddings, as_embeddings, load_embeddings, load_mean
from svmix.scoring.norms import SCORE_NORMS
from svmix.scoring.scorefile import read_scores, write_scores
from svmix.scoring.trials import TrialIndex, read_trial_index, trial_index_from_pairs
from svmix.utils.fileio import write_json
from svmix.utils.logging import get_logger

log = get_logger("scoring")

EmbeddingSource = Union[Embeddings, os.PathLike, str, Mapping[str, np.ndarray]]


def _as_trial_index(trials: Union[TrialIndex, os.PathLike, str, Sequence], embeddings: Embeddings) -> TrialIndex:
    if isinstance(trials, TrialIndex):
        return trials
    if isinstance(trials, (str, os.PathLike)):
        return read_trial_index(trials, embeddings.index, source=embeddings.source)
    return trial_index_from_pairs(trials, embeddings.index, source=embeddings.source)


def score_trials(trials: Union[TrialIndex, os.PathLike, str, Sequence], embeddings: EmbeddingSource,
                 norm: Optional[str] = "none", cohort: Optional[EmbeddingSource] = None,
                 cohort_utt2spk: Optional[Mapping[str, str]] = None, top_n: int = 300,
                 mean: Optional[np.ndarray] = None, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """Cosine scores of ``trials`` (a TrialIndex into ``embeddings``, a trials file, or
    ``(enroll, test)`` pairs / ``Trial`` objects), in trial order.

    ``mean`` is subtracted from every embedding (and cohort embedding) before normalising.
    ``norm`` names a score normalisation (``none``, ``asnorm``); ``asnorm`` uses ``cohort``
    (speaker means when ``cohort_utt2spk`` is given) and its ``top_n`` best scores.
    """
    embeddings = as_embeddings(embeddings)
    trials = _as_trial_index(trials, embeddings)
    vectors = scoring_vectors(embeddings, mean)
    cohort_matrix = None
    if cohort is not None:
        cohort_matrix = cohort_vectors(as_embeddings(cohort), mean, cohort_utt2spk)
    normalise = SCORE_NORMS.build({"name": norm or "none"}, cohort=cohort_matrix, top_n=top_n)
    scores = cosine_scores(vectors, trials.enroll, trials.test, chunk_size)
    return normalise(scores, vectors, trials.enroll, trials.test, chunk_size)


def score_file(trials_path: os.PathLike, scp: os.PathLike, output: os.PathLike, norm: Optional[str] = None,
               cohort_scp: Optional[os.PathLike] = None, cohort_utt2spk: Optional[os.PathLike] = None,
               top_n: int = 300, mean_path: Optional[os.PathLike] = None,
               mean_from: Optional[os.PathLike] = None, chunk_size: int = DEFAULT_CHUNK,
               skip_missing: bool = False, metrics_json: Optional[os.PathLike] = None,
               utt2spk: Optional[os.PathLike] = None, bootstrap: int = DEFAULT_RESAMPLES,
               calibration: Optional[os.PathLike] = None, quality: Optional[os.PathLike] = None) -> Optional[Dict]:
    """Score a trials file into ``output``; returns (and optionally writes) metrics when labelled.

    With ``calibration`` (a file of ``svmix-calibrate``) the written scores are its LLRs; one with
    quality measures reads them from ``quality`` (default: the ``quality.tsv`` beside ``scp``)."""
    from svmix.calibration import Calibration, quality_of_trials, read_quality

    if quality is not None and calibration is None:
        raise SvmixError("--quality is only used with --calibration")
    cal = Calibration.load(calibration) if calibration is not None else None
    if cal is not None and cal.num_systems != 1:
        raise SvmixError(f"{calibration}: a fusion of {cal.num_systems} systems; apply it with svmix-calibrate")
    if mean_path is not None and mean_from is not None:
        raise SvmixError("give either --mean or --mean-from, not both")
    if cohort_utt2spk is not None and cohort_scp is None:
        raise SvmixError("--cohort-utt2spk needs --cohort")
    norm = norm or ("asnorm" if cohort_scp is not None else "none")
    SCORE_NORMS.get(norm)
    if (norm == "none") != (cohort_scp is None):
        raise SvmixError(f"--norm {norm} needs --cohort" if cohort_scp is None
                         else "--cohort is only used with a score normalisation such as --norm asnorm")
    embeddings = load_embeddings(scp)
    log.info("%s: %d embeddings of dimension %d%s", scp, len(embeddings), embeddings.dim,
             " (segment matrices)" if embeddings.segmented else "")
    trials = read_trial_index(trials_path, embeddings.index, skip_missing=skip_missing, source=str(scp))
    log.info("%s: %d trials%s", trials_path, len(trials), "" if trials.labelled else " (unlabelled)")
    mean = None
    if mean_path is not None:
        mean = load_mean(mean_path)
    elif mean_from is not None:
        mean = load_embeddings(mean_from).mean()
    if mean is not None and mean.shape != (embeddings.dim,):
        raise SvmixError(f"mean embedding has dimension {mean.shape[0]}, {scp} has {embeddings.dim}")
    cohort = load_embeddings(cohort_scp) if cohort_scp is not None else None
    if cohort is not None and cohort.dim != embeddings.dim:
        raise SvmixError(f"{cohort_scp}: cohort dimension {cohort.dim} differs from {scp} ({embeddings.dim})")
    spk_of = read_kv(cohort_utt2spk) if cohort_utt2spk is not None else None
    scores = score_trials(trials, embeddings, norm=norm, cohort=cohort, cohort_utt2spk=spk_of, top_n=top_n,
                          mean=mean, chunk_size=chunk_size)
    not_finite = ~np.isfinite(scores)
    if not_finite.any():
        i = int(np.argmax(not_finite))
        raise SvmixError(f"{output}: not written: {int(not_finite.sum())} of {len(scores)} scores are NaN or "
                         f"infinite; first: {trials_path}:{trials.line(i)} '{embeddings.ids[trials.enroll[i]]} "
                         f"{embeddings.ids[trials.test[i]]}'")
    if cal is not None:
        q = None
        if cal.quality_measures:
            source = quality if quality is not None else Path(scp).parent
            q = quality_of_trials(read_quality(source), [embeddings.ids[i] for i in trials.enroll],
                                  [embeddings.ids[i] for i in trials.test], cal.quality_measures, str(source))
        scores = cal.apply(scores, q)
        log.info("%s: scores are LLRs (%s); decisions %s", output, calibration, cal.describe_operating_point())
    write_scores(output, embeddings.ids, trials, scores)
    log.info("%s: %d scores written", output, len(scores))
    if not trials.labelled:
        return None
    speakers = trial_speakers(trials_path, trials, embeddings.ids, utt2spk) if bootstrap > 0 else None
    metrics = compute_metrics(scores, trials.target_labels(str(trials_path)), speakers=speakers, bootstrap=bootstrap)
    if metrics_json is not None:
        write_json(metrics_json, metrics)
    return metrics


def read_scored_trials(trials_path: os.PathLike, score_paths: Sequence[os.PathLike],
                       utt2spk: Optional[os.PathLike] = None, speakers: bool = False, names: bool = False):
    """``(labels, [scores per file], speakers)``: each score file aligned to the labelled trials by
    pair; ``speakers`` (with ``speakers=True``) as :func:`trial_speakers` gives them, else None.
    With ``names=True`` a fourth item follows: the (enrolment, test) utterance names of the trials."""
    vocab: Dict[str, int] = {}
    trials = read_trial_index(trials_path, vocab, grow=True)
    labels = trials.target_labels(str(trials_path))
    scores = [read_scores(path, trials, vocab) for path in score_paths]
    ids = list(vocab)
    out = (labels, scores, trial_speakers(trials_path, trials, ids, utt2spk) if speakers else None)
    if names:
        return (*out, ([ids[i] for i in trials.enroll], [ids[i] for i in trials.test]))
    return out


def trial_speakers(trials_path: os.PathLike, trials: TrialIndex, ids: Sequence[str],
                   utt2spk: Optional[os.PathLike] = None) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The (enrolment, test) speaker of every trial, for confidence intervals that resample speakers.

    Given ``utt2spk``, an utterance of the trials missing from it is an error. Without it, the
    ``utt2spk`` beside the trials file (a Kaldi data dir) is used if it names every trial utterance;
    otherwise there are no speakers (None, and a log line says why).
    """
    explicit = utt2spk is not None
    if not explicit:
        utt2spk = Path(trials_path).parent / "utt2spk"
        if not utt2spk.is_file():
            log.info("%s: no utt2spk beside the trials (give --utt2spk): no confidence intervals", trials_path)
            return None
    spk_of = read_kv(utt2spk)
    names = np.array([spk_of.get(utt, "") for utt in ids], dtype=object)
    used = np.unique(np.r_[trials.enroll, trials.test])
    unknown = used[names[used] == ""]
    if len(unknown):
        first = int(np.flatnonzero(np.isin(trials.enroll, unknown) | np.isin(trials.test, unknown))[0])
        utt = ids[trials.enroll[first]] if np.isin(trials.enroll[first], unknown) else ids[trials.test[first]]
        problem = (f"{utt2spk}: no speaker for utterance '{utt}' ({trials_path}:{trials.line(first)}; "
                   f"{len(unknown)} utterances of the trials have none)")
        if explicit:
            raise SvmixError(problem)
        log.warning("%s: no confidence intervals (give --utt2spk)", problem)
        return None
    return names[trials.enroll].astype(str), names[trials.test].astype(str)
