"""RESULTS.md: every system of a recipe run on every test condition, mean ± std over training seeds.

A system is an experiment dir ``EXP/<system>`` holding one run per seed, ``seed<k>/`` (its
``model.pt``, ``emb_<set>/`` and ``metrics_<set>_<trials>.json``). A test condition is a test set (a
data dir) and one of its trials lists. The report has

- the test conditions (voices, utterances, trials, what the audio is);
- accuracy: EER with its 95% speaker-bootstrap interval, minDCF at p = 0.01 and 0.05 per condition,
  and the validation EER, each as mean ± sample std over the seeds;
- size: parameters and GMACs of frontend, encoder and backend, and the hash of the training config;
- timing: CPU real-time factor of extraction, with the machine and the date.

Only the timing section depends on the machine or the clock: the other tables of two runs with the
same seeds are equal. A per-seed version of the accuracy and timing tables is written beside
RESULTS.md (``RESULTS_per_seed.md``) and linked from it.

The studies recipe (``recipes/mini_studies/``) builds its tables from the same pieces:
:func:`conditions_table`, :func:`study_table` (one row per system, labelled by the study) and
:func:`mean_eer`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from svmix.errors import SvmixError
from svmix.utils.fileio import atomic_open

FLOOR_NAME = "MFCC-mean cosine (floor)"
PARTS = ("frontend", "encoder", "backend")


def _read_json(path: Path) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise SvmixError(f"{path}: not valid JSON ({e})") from None


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


@dataclass(frozen=True)
class Condition:
    """One trials list of one test set."""
    data_dir: Path
    trials: str

    @property
    def test_set(self) -> str:
        return self.data_dir.name

    @property
    def key(self) -> str:  # file names: metrics_<key>.json, scores_<key>
        return f"{self.test_set}_{self.trials}"

    def label(self, single_trials: bool) -> str:
        return self.test_set if single_trials else f"{self.test_set}/{self.trials}"


def conditions_of(test_dirs: Sequence[os.PathLike], trials_names: Sequence[str],
                  set_trials: Optional[Mapping[str, Sequence[str]]] = None) -> List[Condition]:
    """Every trials list of every test set: ``trials_names``, or for a set named in ``set_trials``
    its own lists."""
    dirs = [Path(d) for d in test_dirs]
    names = [d.name for d in dirs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SvmixError(f"two test sets are named '{duplicate}'")
    set_trials = dict(set_trials or {})
    unknown = sorted(set(set_trials) - set(names))
    if unknown:
        raise SvmixError(f"--trials-of names '{unknown[0]}', which is not a test set of the report")
    return [Condition(d, t) for d in dirs for t in set_trials.get(d.name, trials_names)]


def describe_condition(condition: Condition) -> Dict[str, object]:
    """Voices, utterances and trials of a condition, from its data dir."""
    from svmix.data.datadir import read_kv, read_trials

    trials_file = condition.data_dir / condition.trials
    if not trials_file.is_file():
        raise SvmixError(f"{trials_file}: trials not found")
    trials = read_trials(trials_file)
    utt2spk_file = condition.data_dir / "utt2spk"
    utt2spk = read_kv(utt2spk_file) if utt2spk_file.is_file() else {}
    utts = {u for t in trials for u in (t.enroll, t.test)}
    return {"utterances": len(utts), "voices": len({utt2spk[u] for u in utts if u in utt2spk}) if utt2spk else None,
            "trials": len(trials), "target": sum(1 for t in trials if t.label == 1)}


def config_hash(config_file: Path, section: Optional[str] = None,
                ignore: Sequence[str] = ("train.seed",)) -> Optional[str]:
    """Hash of a run's ``config.yaml`` (or of its top-level ``section``) without the dotted keys in
    ``ignore``; the default, the config without its seed, is equal for the seeds of one system."""
    if not config_file.is_file():
        return None
    config = yaml.safe_load(config_file.read_text()) or {}
    for key in ignore:
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    if section is not None:
        config = config.get(section) or {}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _metrics(path: Path) -> Dict[str, object]:
    m = _read_json(path) or {}
    dcf = m.get("min_dcf") or {}
    return {"eer": m.get("eer"), "eer_ci": m.get("eer_ci"), "min_dcf_01": dcf.get("0.01"),
            "min_dcf_05": dcf.get("0.05")}


def seed_run(seed_dir: Path, conditions: Sequence[Condition], trained: bool = True) -> Dict[str, object]:
    """What one seed of a system measured (None where a stage has not written its file yet)."""
    run: Dict[str, object] = {"dir": seed_dir, "metrics": {c.key: _metrics(seed_dir / f"metrics_{c.key}.json")
                                                            for c in conditions}}
    rtfs = [(_read_json(seed_dir / f"emb_{s}" / "extract_stats.json") or {}).get("rtf")
            for s in dict.fromkeys(c.test_set for c in conditions)]
    rtfs = [r for r in rtfs if r is not None]
    run["rtf"] = statistics.fmean(rtfs) if rtfs else None
    run["val_eer"] = run["config_hash"] = run["config"] = run["init_from"] = run["train_config"] = None
    if trained:
        from svmix.checkpoint import read_checkpoint

        if not (seed_dir / "model.pt").is_file():
            raise SvmixError(f"{seed_dir}: no model.pt (train this seed first, stage 3)")
        ckpt = read_checkpoint(seed_dir)
        run.update(val_eer=ckpt.get("val_eer"), config=ckpt["config"], init_from=ckpt.get("init_from"),
                   train_config=ckpt.get("train_config"), config_hash=config_hash(seed_dir / "config.yaml"))
    return run


def system_summary(system_dir: os.PathLike, seeds: Sequence[int], conditions: Sequence[Condition]) -> Dict[str, object]:
    """One trained system over its seeds: per-seed runs and the model's size by part."""
    from svmix.profiling import profile_model

    system_dir = Path(system_dir)
    runs = {k: seed_run(system_dir / f"seed{k}", conditions) for k in seeds}
    first = runs[seeds[0]]
    profile = profile_model(first["config"])
    for k, run in runs.items():
        if run["config"] != first["config"]:
            raise SvmixError(f"{run['dir']}: a different model than {first['dir']} (one system, one model)")
    parts = {p: {"params_m": profile["parts"][p]["params"] / 1e6, "gmacs": profile["parts"][p]["gmacs"]}
             for p in PARTS}
    parts["total"] = {"params_m": profile["params"] / 1e6, "gmacs": profile["gmacs"]}
    hashes = list(dict.fromkeys(r["config_hash"] or "n/a" for r in runs.values()))
    return {"system": system_dir.name, "runs": runs, "parts": parts, "config_hash": ", ".join(hashes)}


def floor_summary(floor_dir: os.PathLike, conditions: Sequence[Condition]) -> Dict[str, object]:
    """The untrained floor: one deterministic run, no model."""
    return {"system": FLOOR_NAME, "runs": {None: seed_run(Path(floor_dir), conditions, trained=False)},
            "parts": None, "config_hash": None}


def teacher_line(teacher_dir: os.PathLike) -> Optional[str]:
    """The teacher's own evaluation (its eval.json), when it has one."""
    teacher_dir = Path(teacher_dir)
    evaluation = _read_json(teacher_dir / "eval.json")
    if evaluation is None:
        return None
    weights = teacher_dir / "model.safetensors"
    params = ""
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            params = f", {sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()) / 1e6:.2f} M parameters"
    return (f"- teacher `{teacher_dir.name}`{params}: EER {_fmt(evaluation.get('eer'), '.2f')} % on "
            f"`{Path(evaluation.get('trials', '')).name}` (its own speaker head, see its eval.json)")


def mean_std(values: Sequence[Optional[float]], spec: str) -> str:
    """``mean ± std`` (sample std) over the seeds that have a value; one value alone; ``n/a`` for
    none. A count is added when some seeds have no value yet."""
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    text = format(statistics.fmean(present), spec)
    if len(present) > 1:
        text += f" ± {format(statistics.stdev(present), spec)}"
    if len(present) < len(values):
        text += f" ({len(present)}/{len(values)} seeds)"
    return text


def _mean_interval(intervals: Sequence[Optional[Sequence[float]]]) -> Optional[Tuple[float, float]]:
    """The 95% interval of one run, or the mean of the per-seed bounds of several (None: no interval)."""
    present = [i for i in intervals if i is not None]
    if not present:
        return None
    return statistics.fmean(i[0] for i in present), statistics.fmean(i[1] for i in present)


def _ci(intervals: Sequence[Optional[Sequence[float]]]) -> str:
    interval = _mean_interval(intervals)
    return "n/a" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def _table(header: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _accuracy_header(conditions: Sequence[Condition], single: bool) -> List[str]:
    header = []
    for c in conditions:
        name = c.label(single)
        header += [f"{name}: EER (%)", f"{name}: EER 95% CI", f"{name}: minDCF@0.01", f"{name}: minDCF@0.05"]
    return header


def _accuracy_cells(runs: Sequence[Dict[str, object]], conditions: Sequence[Condition]) -> List[str]:
    cells = []
    for c in conditions:
        ms = [r["metrics"][c.key] for r in runs]
        cells += [mean_std([m["eer"] for m in ms], ".2f"), _ci([m["eer_ci"] for m in ms]),
                  mean_std([m["min_dcf_01"] for m in ms], ".3f"), mean_std([m["min_dcf_05"] for m in ms], ".3f")]
    return cells


def mean_eer(summary: Dict[str, object], condition: Condition):
    """``(EER mean over the seeds, mean 95% interval)`` of one system on one condition (None where no
    seed has a value yet): the numbers a study plots."""
    ms = [r["metrics"][condition.key] for r in summary["runs"].values()]
    eers = [m["eer"] for m in ms if m["eer"] is not None]
    return (statistics.fmean(eers) if eers else None), _mean_interval([m["eer_ci"] for m in ms])


def conditions_table(conditions: Sequence[Condition], notes: Mapping[str, str]) -> List[str]:
    """The test conditions: voices, utterances, trials, target trials and what the audio is."""
    single = len({c.trials for c in conditions}) == 1
    rows = []
    for c in conditions:
        d = describe_condition(c)
        rows.append([c.label(single), f"`{c.trials}`", _fmt(d["voices"], "d"), str(d["utterances"]),
                     f"{d['trials']:,}", f"{d['target']:,}", notes.get(c.test_set, "")])
    return _table(["test set", "trials list", "voices", "utterances", "trials", "target trials", "condition"],
                  ["---", "---", "---:", "---:", "---:", "---:", "---"], rows)


def study_table(label_header: Sequence[str], rows: Sequence[Sequence[object]],
                conditions: Sequence[Condition]) -> List[str]:
    """One study's table: per row (``(label cells, summary)``, a :func:`system_summary` or
    :func:`floor_summary`) the label cells, the accuracy cells of RESULTS.md per condition (EER mean ±
    std over the seeds, its 95% CI, minDCF at 0.01 and 0.05), the validation EER, and parameters (M)
    and GMACs as frontend / encoder / backend / total."""
    single = len({c.trials for c in conditions}) == 1
    header = [*label_header] + _accuracy_header(conditions, single) + [
        "val EER (%)", "params (M): frontend / encoder / backend / total", "GMACs: frontend / encoder / backend / total"]
    out = []
    for labels, s in rows:
        if len(labels) != len(label_header):
            raise SvmixError(f"study row {list(labels)}: {len(label_header)} label cells expected")
        runs = list(s["runs"].values())
        cells = [*labels] + _accuracy_cells(runs, conditions)
        if s["parts"] is None:  # the floor: no model
            cells += ["-", "-", "-"]
        else:
            parts = [s["parts"][p] for p in (*PARTS, "total")]
            cells += [mean_std([r["val_eer"] for r in runs], ".2f"),
                      " / ".join(f"{p['params_m']:.3f}" for p in parts), " / ".join(f"{p['gmacs']:.3f}" for p in parts)]
        out.append(cells)
    align = ["---"] * len(label_header) + ["---:"] * (len(header) - len(label_header) - 2) + ["---:", "---:"]
    return _table(header, align, out)


def render(summaries: Sequence[Dict[str, object]], conditions: Sequence[Condition], seeds: Sequence[int],
           notes: Mapping[str, str], commands: Sequence[str], teacher: Optional[str] = None,
           per_seed_link: Optional[str] = None, pictures: Optional[Sequence[str]] = None,
           missing: Optional[Mapping[str, str]] = None) -> str:
    """RESULTS.md. Everything above the timing section is free of machine- and time-dependent values;
    ``pictures``, further sections (:func:`backends_section`, :func:`pictures_section`), follow the size table; ``missing`` (set → why)
    lists the test sets a recipe could not test."""
    import torch

    single = len({c.trials for c in conditions}) == 1
    lines = ["# RESULTS", "", "## Test conditions", ""] + conditions_table(conditions, notes)
    if missing:
        lines += ["", "Not tested (a warning of stage 0; the other sets were):", ""]
        lines += [f"- {name}: {why}" for name, why in missing.items()]
    seeds_text = ", ".join(str(k) for k in seeds)
    lines += ["", "## Accuracy", "",
              f"Training seeds: {seeds_text} (train.seed). Each value is the mean ± sample standard deviation over "
              "the seeds (a single seed: its value). EER 95% CI: speaker-bootstrap percentile interval of each "
              "seed's EER (docs/method.md §Evaluation), here the mean of the per-seed bounds. Scores: mean of "
              "the 10×10 cross-segment cosines, no normalisation."
              + (f" Per seed: [{per_seed_link}]({per_seed_link})." if per_seed_link else ""), ""]
    header = ["system", "seeds"] + _accuracy_header(conditions, single) + ["val EER (%)"]
    rows = []
    for s in summaries:
        runs = list(s["runs"].values())
        trained = s["parts"] is not None
        rows.append([s["system"], str(len(runs)) if trained else "-"] + _accuracy_cells(runs, conditions)
                    + [mean_std([r["val_eer"] for r in runs], ".2f") if trained else "-"])
    lines += _table(header, ["---", "---:"] + ["---:"] * (len(header) - 2), rows)
    if teacher:
        lines += ["", teacher]
    lines += ["", "## Size", "",
              "Parameters (M) and GMACs for one 3 s input (149 frames), by part; config: hash of the training "
              "config without its seed.", ""]
    header = ["system"] + [f"{p} {q}" for p in (*PARTS, "total") for q in ("params (M)", "GMACs")] + ["config"]
    rows = []
    for s in summaries:
        if s["parts"] is None:
            continue
        cells = [s["system"]]
        for p in (*PARTS, "total"):
            cells += [f"{s['parts'][p]['params_m']:.3f}", f"{s['parts'][p]['gmacs']:.3f}"]
        rows.append(cells + [f"`{s['config_hash']}`"])
    lines += _table(header, ["---"] + ["---:"] * 8 + ["---"], rows)
    if pictures:
        lines += [""] + list(pictures)
    lines += ["", "## Timing (machine-dependent)", "",
              f"- {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; {platform.machine()}, {os.cpu_count()} CPU "
              f"cores, torch {torch.__version__}",
              "- CPU RTF: extraction wall time ÷ audio duration, averaged over the test sets; mean ± std over the "
              "seeds", ""]
    rows = [[s["system"], mean_std([r["rtf"] for r in s["runs"].values()], ".4f")] for s in summaries]
    lines += _table(["system", "CPU RTF"], ["---", "---:"], rows)
    if commands:
        lines += ["", "## Commands", "", "```"] + list(commands) + ["```"]
    return "\n".join(lines) + "\n"


def render_per_seed(summaries: Sequence[Dict[str, object]], conditions: Sequence[Condition]) -> str:
    """One row per system and seed: the values RESULTS.md averages."""
    single = len({c.trials for c in conditions}) == 1
    lines = ["# RESULTS per seed", "", "## Accuracy", ""]
    header = ["system", "seed"] + _accuracy_header(conditions, single) + ["val EER (%)", "config"]
    rows = []
    for s in summaries:
        for k, run in s["runs"].items():
            rows.append([s["system"], "-" if k is None else str(k)] + _accuracy_cells([run], conditions)
                        + [_fmt(run["val_eer"], ".2f"), f"`{run['config_hash']}`" if run["config_hash"] else "-"])
    lines += _table(header, ["---", "---:"] + ["---:"] * (len(header) - 3) + ["---"], rows)
    lines += ["", "## Timing (machine-dependent)", ""]
    rows = [[s["system"], "-" if k is None else str(k), _fmt(run["rtf"], ".4f")]
            for s in summaries for k, run in s["runs"].items()]
    lines += _table(["system", "seed", "CPU RTF"], ["---", "---:", "---:"], rows)
    return "\n".join(lines) + "\n"


def parse_notes(notes: Sequence[str], option: str = "--note", what: str = "DESCRIPTION") -> Dict[str, str]:
    """``SET=TEXT`` entries: what each test set's audio is (or, for ``--missing``, why it is not tested)."""
    out = {}
    for note in notes:
        name, sep, text = note.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise SvmixError(f"{option} '{note}': expected TEST_SET={what}")
        out[name.strip()] = text.strip()
    return out


def per_seed_path(out: os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}_per_seed{out.suffix}")


# The pictures of stage 5 (tools/recipe_stages.sh writes them under these names in the plots dir).
def det_plot_name(condition: Condition) -> str:
    return f"det_{condition.key}.png"


def tsne_plot_name(system: str, seed: int, test_set: str) -> str:
    return f"tsne_{system}_seed{seed}_{test_set}.png"


def histogram_plot_name(system: str, seed: int, condition: Condition) -> str:
    return f"hist_{system}_seed{seed}_{condition.key}.png"


def pictures_section(summaries: Sequence[Dict[str, object]], conditions: Sequence[Condition], seed: int,
                     plots_dir: os.PathLike, out: os.PathLike) -> List[str]:
    """Links to the DET plot of every condition and, for every trained system, the t-SNE of its test
    embeddings and its score histogram (seed ``seed``), relative to RESULTS.md at ``out``; a picture
    not drawn (its file is missing) is said to be so, not linked."""
    plots_dir, base = Path(plots_dir), Path(out).resolve().parent
    single = len({c.trials for c in conditions}) == 1

    def link(name: str, text: str) -> str:
        path = plots_dir / name
        if not path.is_file():
            return f"{text}: not drawn"
        return f"[{text}]({Path(os.path.relpath(path.resolve(), base)).as_posix()})"

    lines = ["## Pictures", "",
             f"DET curves of every system per test condition; per trained system (seed {seed}), a t-SNE of the "
             "test embeddings (the utterances' scoring vectors, at most 40 speakers) coloured by speaker, and the "
             "target / non-target histogram of its cosine scores with the minDCF(0.05) threshold of those same "
             "trials marked (an oracle operating point: a deployed system takes its threshold from development "
             "trials, svmix-calibrate).", ""]
    lines += [f"- {c.label(single)}: {link(det_plot_name(c), 'DET')}" for c in conditions]
    test_sets = list(dict.fromkeys(c.test_set for c in conditions))
    rows = []
    for s in summaries:
        if s["parts"] is not None:  # trained systems: the floor has no picture of its own
            rows.append([s["system"]] + [link(tsne_plot_name(s["system"], seed, t), "t-SNE") for t in test_sets]
                        + [link(histogram_plot_name(s["system"], seed, c), "histogram") for c in conditions])
    if rows:
        header = ["system"] + [f"{t}: embeddings" for t in test_sets] + [f"{c.label(single)}: scores" for c in conditions]
        lines += [""] + _table(header, ["---"] * len(header), rows)
    return lines


# Score back-ends of one system's embeddings (tools/recipe_stages.sh, --backends): metrics file suffix → label.
BACKENDS = {"": "cosine", "asnorm": "AS-norm", "cal": "calibration", "qmf": "QMF"}


def _backend_metrics(path: Path) -> Dict[str, object]:
    m = _read_json(path) or {}
    return {"eer": m.get("eer"), "min_dcf": (m.get("min_dcf") or {}).get("0.05"),
            "act_dcf": (m.get("act_dcf") or {}).get("0.05"), "cllr": m.get("cllr"), "min_cllr": m.get("min_cllr")}


def _fitted_on(seed_dirs: Sequence[Path], pattern: str) -> List[str]:
    """The development trials the calibration files matching ``pattern`` (one per development set,
    e.g. ``calibration_*.json``) of these runs were fitted on."""
    lists = []
    for d in seed_dirs:
        for path in sorted(d.glob(pattern)):
            raw = _read_json(path)
            if raw is not None:
                lists.append(str((raw.get("fitted_on") or {}).get("trials", "?")))
    return list(dict.fromkeys(lists))


def backends_section(summaries: Sequence[Dict[str, object]], conditions: Sequence[Condition],
                     fusion_dir: Optional[os.PathLike] = None, seeds: Sequence[int] = (0,)) -> List[str]:
    """Before → after rows of the score back-ends: per trained system its cosine scores and each
    back-end a run wrote (``metrics_<condition>_<suffix>.json``, :data:`BACKENDS`), and the fusion
    (``fusion_dir/seed<k>/metrics_<condition>.json``); EER, minDCF, actDCF at p = 0.05 and Cllr, mean
    ± std over the seeds. Empty when no back-end was run. A calibration fitted on a test list of the
    report is an error."""
    single = len({c.trials for c in conditions}) == 1
    rows, dirs = [], []
    for s in summaries:
        if s["parts"] is None:
            continue
        runs = [Path(r["dir"]) for r in s["runs"].values()]
        for suffix, label in BACKENDS.items():
            ms = {c.key: [_backend_metrics(d / f"metrics_{c.key}{'_' + suffix if suffix else ''}.json")
                          for d in runs] for c in conditions}
            if suffix and not any(m["eer"] is not None for v in ms.values() for m in v):
                continue
            rows.append((s["system"], label, ms))
        dirs += runs
    fused = []
    if fusion_dir is not None:
        fused = [Path(fusion_dir) / f"seed{k}" for k in seeds]
        names = []
        for path in (p for d in fused for p in sorted(d.glob("fusion_*.json"))):
            raw = _read_json(path) or {}
            names += [Path(p).parent.parent.name for p in (raw.get("fitted_on") or {}).get("scores", [])]
        ms = {c.key: [_backend_metrics(d / f"metrics_{c.key}.json") for d in fused] for c in conditions}
        if any(m["eer"] is not None for v in ms.values() for m in v):
            rows.append((" + ".join(dict.fromkeys(names)) or "fusion", "fusion", ms))
    if not any(label != "cosine" for _, label, _ in rows):
        return []
    dev = (_fitted_on(dirs, "calibration_*.json") + _fitted_on(dirs, "qmf_*.json")
           + _fitted_on(fused, "fusion_*.json"))
    dev = list(dict.fromkeys(dev))
    tests = {str(c.data_dir / c.trials) for c in conditions}
    for t in dev:
        if t in tests or any(os.path.exists(t) and os.path.samefile(t, x) for x in tests if os.path.exists(x)):
            raise SvmixError(f"a calibration was fitted on {t}, a test list of this report: fit it on development trials")
    lines = ["## Score back-ends (before → after)", "",
             "The same embeddings scored differently: cosine (as in Accuracy), AS-norm (the development set's "
             "embeddings as cohort), calibration (linear logistic on the cosine), QMF (calibration with log "
             "duration and embedding norm of both sides) and the linear logistic fusion of the systems named. "
             "Calibration, QMF and fusion are fitted on "
             + (", ".join(f"`{t}`" for t in dev) if dev else "development trials")
             + " (development trials, never a test list; where there are several, each test condition uses "
             "the recipe's development set of its own condition), with the minDCF(0.05) threshold of those trials "
             "as their operating point. A calibration with a positive weight leaves EER and minDCF unchanged (on "
             "tiny development sets the fitted weight can be negative); actDCF (Bayes decisions at p = 0.05) and "
             "Cllr measure it, and for cosine scores read the cosine as a log-likelihood ratio. min Cllr is the "
             "Cllr after the best monotone calibration of the test scores themselves (an oracle bound): "
             "actDCF − minDCF and Cllr − min Cllr are what the calibration loses. Mean ± std over the seeds.", ""]
    header = ["system", "scores"]
    for c in conditions:
        name = c.label(single)
        header += [f"{name}: EER (%)", f"{name}: minDCF@0.05", f"{name}: actDCF@0.05", f"{name}: Cllr",
                   f"{name}: min Cllr"]
    table = []
    for system, label, ms in rows:
        cells = [system, label]
        for c in conditions:
            m = ms[c.key]
            cells += [mean_std([x["eer"] for x in m], ".2f"), mean_std([x["min_dcf"] for x in m], ".3f"),
                      mean_std([x["act_dcf"] for x in m], ".3f"), mean_std([x["cllr"] for x in m], ".3f"),
                      mean_std([x["min_cllr"] for x in m], ".3f")]
        table.append(cells)
    return lines + _table(header, ["---", "---"] + ["---:"] * (len(header) - 2), table)


def _run_dir(path: os.PathLike) -> Path:
    """The experiment dir of a checkpoint path or experiment dir, resolved (for comparisons)."""
    path = Path(path).resolve()
    return path if path.is_dir() else path.parent


def _lmft_settings(train: Optional[Mapping[str, object]]) -> str:
    if not isinstance(train, Mapping):
        return "?"
    ramp = train.get("margin_ramp") or {}
    aam = train.get("aam") or {}
    margin = (f"margin {ramp['start']:g} → {aam.get('margin', 0):g} over {ramp['steps']} steps" if ramp
              else f"margin {aam.get('margin', 0):g}")
    crop = train.get("crop_seconds")
    lr = (train.get("optimizer") or {}).get("lr")
    return (f"{margin}, {train.get('max_steps')} steps at lr {lr:g}, "
            f"{'augmented' if train.get('augment') else 'no augmentation'}, "
            f"{'KD' if (train.get('kd') or {}).get('name') else 'no KD'}, "
            f"{f'{crop:g} s crops' if crop else 'crops of the model segment'}")


def lmft_section(summaries: Sequence[Dict[str, object]], conditions: Sequence[Condition]) -> List[str]:
    """Before → after rows of large-margin fine-tuning: every trained system whose runs all continued
    (``svmix-train --init-from``) from the same seeds of another system of the report, next to that
    system; EER and minDCF@0.01, mean ± std over the seeds, and the per-seed change of the EER. Empty
    when no system of the report was fine-tuned from another."""
    owner = {}
    for s in summaries:
        if s["parts"] is not None:
            for k, r in s["runs"].items():
                owner[_run_dir(r["dir"])] = (s, k)
    single = len({c.trials for c in conditions}) == 1
    header = ["system", "fine-tuned from", "settings"]
    for c in conditions:
        name = c.label(single)
        header += [f"{name}: EER (%) before → after", f"{name}: ΔEER (points)", f"{name}: minDCF@0.01 before → after"]
    rows = []
    for s in summaries:
        if s["parts"] is None:
            continue
        bases = [owner.get(_run_dir(r["init_from"])) if r.get("init_from") else None for r in s["runs"].values()]
        if any(b is None or b[1] != k or b[0] is s for b, k in zip(bases, s["runs"])) \
                or len({id(b[0]) for b in bases}) != 1:
            continue
        base = bases[0][0]
        pairs = [(base["runs"][k], r) for k, r in s["runs"].items()]
        cells = [s["system"], base["system"], _lmft_settings(pairs[0][1]["train_config"])]
        for c in conditions:
            metrics = [(b["metrics"][c.key], a["metrics"][c.key]) for b, a in pairs]

            def before_after(key: str, spec: str) -> str:
                return " → ".join(mean_std([m[side][key] for m in metrics], spec) for side in (0, 1))

            deltas = [None if x["eer"] is None or y["eer"] is None else y["eer"] - x["eer"] for x, y in metrics]
            cells += [before_after("eer", ".2f"), mean_std(deltas, ".2f"), before_after("min_dcf_01", ".3f")]
        rows.append(cells)
    if not rows:
        return []
    lines = ["## Large-margin fine-tuning (before → after)", "",
             "Each fine-tuned system continues from the same seed of the system it names (`svmix-train "
             "--init-from`: its weights and AAM head) with the settings its training config states: a larger AAM "
             "margin, a lower learning rate, few steps (docs/method.md §Large-margin fine-tuning). Cosine scores as in Accuracy; ΔEER: after − "
             "before per seed, mean ± std (negative: fine-tuning helped).", ""]
    return lines + _table(header, ["---", "---", "---"] + ["---:"] * (len(header) - 3), rows)


def write_report(systems: Sequence[os.PathLike], out: os.PathLike, test_dirs: Sequence[os.PathLike],
                 trials_names: Sequence[str] = ("trials",), seeds: Sequence[int] = (0,),
                 floor_dir: Optional[os.PathLike] = None, teacher_dir: Optional[os.PathLike] = None,
                 notes: Sequence[str] = (), commands_file: Optional[os.PathLike] = None,
                 plots_dir: Optional[os.PathLike] = None, set_trials: Sequence[str] = (),
                 missing: Sequence[str] = (), fusion_dir: Optional[os.PathLike] = None) -> str:
    """Write RESULTS.md at ``out`` and RESULTS_per_seed.md beside it; returns RESULTS.md's text. With
    ``plots_dir``, RESULTS.md links the pictures of stage 5 found there (:func:`pictures_section`).
    ``set_trials`` (``SET=NAME[,NAME...]``) gives a test set its own trials lists instead of
    ``trials_names``; ``missing`` (``SET=WHY``) names the sets not tested, and why. Large-margin
    fine-tuning (:func:`lmft_section`), score back-ends and ``fusion_dir`` (:func:`backends_section`)
    get before → after sections."""
    if not systems:
        raise SvmixError("no systems given for the report")
    if not test_dirs:
        raise SvmixError("no test sets given for the report")
    seeds = list(dict.fromkeys(seeds))
    own_lists = {name: [t.strip() for t in lists.split(",") if t.strip()]
                 for name, lists in parse_notes(set_trials, "--trials-of", "NAME[,NAME...]").items()}
    conditions = conditions_of(test_dirs, trials_names, own_lists)
    note_map = parse_notes(notes)
    missing_map = parse_notes(missing, "--missing", "REASON")
    tested = sorted(set(missing_map) & {c.test_set for c in conditions})
    if tested:
        raise SvmixError(f"--missing names '{tested[0]}', which is a test set of the report")
    unknown = sorted(set(note_map) - {c.test_set for c in conditions})
    if unknown:
        raise SvmixError(f"--note names '{unknown[0]}', which is not a test set of the report")
    summaries = [system_summary(s, seeds, conditions) for s in systems]
    if floor_dir is not None:
        summaries.append(floor_summary(floor_dir, conditions))
    teacher = teacher_line(teacher_dir) if teacher_dir else None
    commands: List[str] = []
    if commands_file and Path(commands_file).is_file():
        commands = list(dict.fromkeys(line for line in Path(commands_file).read_text().splitlines() if line))
    per_seed = per_seed_path(out)
    pictures = pictures_section(summaries, conditions, seeds[0], plots_dir, out) if plots_dir is not None else None
    sections = [part for part in (lmft_section(summaries, conditions),
                                  backends_section(summaries, conditions, fusion_dir, seeds), pictures) if part]
    text = render(summaries, conditions, seeds, note_map, commands, teacher, per_seed.name,
                  [line for i, part in enumerate(sections) for line in ([""] if i else []) + list(part)], missing_map)
    with atomic_open(per_seed) as f:
        f.write(render_per_seed(summaries, conditions))
    with atomic_open(out) as f:
        f.write(text)
    return text
