"""Seeded trial lists (enroll/test pairs) from an utt2spk mapping, with a chosen share of targets."""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Dict, List, Set, Tuple

import numpy as np

from svmix.data.datadir import Trial
from svmix.errors import SvmixError
from svmix.utils.logging import get_logger

log = get_logger("trials")

Pair = Tuple[str, str]


def pair_counts(utt2spk: Dict[str, str]) -> Tuple[int, int]:
    """(target, non-target) unordered pairs available among the utterances of ``utt2spk``."""
    sizes = Counter(utt2spk.values()).values()
    total = len(utt2spk) * (len(utt2spk) - 1) // 2
    target = int(sum(n * (n - 1) // 2 for n in sizes))
    return target, total - target


def split_count(num_trials: int, target_ratio: float) -> Tuple[int, int]:
    """(target, non-target) trials that ``num_trials`` at ``target_ratio`` asks for."""
    n_target = int(round(num_trials * target_ratio))
    return n_target, num_trials - n_target


def max_trials(utt2spk: Dict[str, str], target_ratio: float) -> int:
    """The most trials :func:`sample_trials` can draw from ``utt2spk`` at exactly ``target_ratio``.
    Both parts of :func:`split_count` grow with the count, so the largest one that fits is bisected."""
    n_target_avail, n_nontarget_avail = pair_counts(utt2spk)
    lo, hi = 0, n_target_avail + n_nontarget_avail
    while lo < hi:
        mid = (lo + hi + 1) // 2
        t, n = split_count(mid, target_ratio)
        if t <= n_target_avail and n <= n_nontarget_avail:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_trials_possible(utt2spk: Dict[str, str], num_trials: int, target_ratio: float, where: str,
                          hint: str = "") -> None:
    """Raise a one-line :class:`SvmixError` (naming ``where``, the pairs available and the maximum,
    then ``hint``) unless ``num_trials`` trials at ``target_ratio`` can be drawn from ``utt2spk``."""
    if not 0.0 <= target_ratio <= 1.0:
        raise SvmixError(f"target ratio must be within [0, 1], got {target_ratio}")
    if num_trials < 0:
        raise SvmixError(f"the number of trials must be >= 0, got {num_trials}")
    most = max_trials(utt2spk, target_ratio)
    if num_trials > most:
        want_t, want_n = split_count(num_trials, target_ratio)
        have_t, have_n = pair_counts(utt2spk)
        raise SvmixError(
            f"{where}: {num_trials} trials at target ratio {target_ratio} need {want_t} target and {want_n} "
            f"non-target pairs, but {len(set(utt2spk.values()))} speakers with {len(utt2spk)} utterances give "
            f"{have_t} target and {have_n} non-target pairs: at most {most} trials at this ratio{hint}")


def _sample_pairs(candidates_fn, draw_fn, count: int, available: int, rng: np.random.Generator) -> Set[Pair]:
    """``count`` distinct pairs: enumerate when they are few, else draw at random until enough."""
    if count <= 0:
        return set()
    if available <= 4 * count:
        pairs = sorted(candidates_fn())
        chosen = rng.choice(len(pairs), size=count, replace=False)
        return {pairs[i] for i in chosen}
    out: Set[Pair] = set()
    while len(out) < count:
        out.add(draw_fn())
    return out


def sample_trials(utt2spk: Dict[str, str], num_trials: int, target_ratio: float,
                  rng: np.random.Generator, strict: bool = False, where: str = "trials",
                  hint: str = "") -> List[Trial]:
    """Distinct unordered pairs, ``round(num_trials * target_ratio)`` of them target, the rest
    non-target; sorted by (enroll, test). When the data has fewer pairs of a kind, ``strict`` raises
    (see :func:`check_trials_possible`); otherwise every available pair of that kind is used and a
    warning says what was produced instead of what was asked. ``where`` and ``hint`` go into either."""
    if strict:
        check_trials_possible(utt2spk, num_trials, target_ratio, where, hint)
    if not 0.0 <= target_ratio <= 1.0:
        raise SvmixError(f"target ratio must be within [0, 1], got {target_ratio}")
    spk2utts: Dict[str, List[str]] = defaultdict(list)
    for utt in sorted(utt2spk):
        spk2utts[utt2spk[utt]].append(utt)
    speakers = sorted(spk2utts)
    utts = sorted(utt2spk)
    n_target_avail, n_nontarget_avail = pair_counts(utt2spk)
    want_target, want_nontarget = split_count(num_trials, target_ratio)
    n_target = min(want_target, n_target_avail)
    n_nontarget = min(num_trials - n_target, n_nontarget_avail)
    if (n_target, n_nontarget) != (want_target, want_nontarget):
        log.warning("%s: asked for %d trials (%d target), produced %d (%d target): the data has only %d target "
                    "and %d non-target pairs (at most %d trials at target ratio %g)", where, num_trials,
                    want_target, n_target + n_nontarget, n_target, n_target_avail, n_nontarget_avail,
                    max_trials(utt2spk, target_ratio), target_ratio)

    pair_weights = np.array([len(spk2utts[s]) * (len(spk2utts[s]) - 1) for s in speakers], dtype=np.float64)

    def all_targets():
        return (p for s in speakers for p in itertools.combinations(spk2utts[s], 2))

    def draw_target() -> Pair:
        members = spk2utts[speakers[rng.choice(len(speakers), p=pair_weights / pair_weights.sum())]]
        a, b = rng.choice(len(members), size=2, replace=False)
        return tuple(sorted((members[a], members[b])))

    def all_nontargets():
        return ((a, b) for a, b in itertools.combinations(utts, 2) if utt2spk[a] != utt2spk[b])

    def draw_nontarget() -> Pair:
        while True:
            a, b = rng.choice(len(utts), size=2, replace=False)
            if utt2spk[utts[a]] != utt2spk[utts[b]]:
                return tuple(sorted((utts[a], utts[b])))

    targets = _sample_pairs(all_targets, draw_target, n_target, n_target_avail, rng)
    nontargets = _sample_pairs(all_nontargets, draw_nontarget, n_nontarget, n_nontarget_avail, rng)
    trials = [Trial(a, b, 1) for a, b in targets] + [Trial(a, b, 0) for a, b in nontargets]
    return sorted(trials, key=lambda t: (t.enroll, t.test))
