"""Seeded trial lists (enroll/test pairs) from an utt2spk mapping, with a chosen share of targets."""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Dict, List, Set, Tuple

import numpy as np

from svmix.data.datadir import Trial
from svmix.errors import SvmixError

Pair = Tuple[str, str]


def pair_counts(utt2spk: Dict[str, str]) -> Tuple[int, int]:
    """(target, non-target) unordered pairs available among the utterances of ``utt2spk``."""
    sizes = Counter(utt2spk.values()).values()
    total = len(utt2spk) * (len(utt2spk) - 1) // 2
    target = int(sum(n * (n - 1) // 2 for n in sizes))
    return target, total - target


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
                  rng: np.random.Generator) -> List[Trial]:
    """Distinct unordered pairs, ``round(num_trials * target_ratio)`` of them target (fewer if the
    data has fewer), the rest non-target; sorted by (enroll, test)."""
    if not 0.0 <= target_ratio <= 1.0:
        raise SvmixError(f"target ratio must be within [0, 1], got {target_ratio}")
    spk2utts: Dict[str, List[str]] = defaultdict(list)
    for utt in sorted(utt2spk):
        spk2utts[utt2spk[utt]].append(utt)
    speakers = sorted(spk2utts)
    utts = sorted(utt2spk)
    n_target_avail, n_nontarget_avail = pair_counts(utt2spk)
    n_target = min(int(round(num_trials * target_ratio)), n_target_avail)
    n_nontarget = min(num_trials - n_target, n_nontarget_avail)

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
