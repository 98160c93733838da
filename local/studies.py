#!/usr/bin/env python3
"""The paper's studies in miniature (recipes/mini_studies/run.sh, docs/studies.md): what each study
compares, which systems the recipe trains for it, the teachers' own measurement, and RESULTS.md.

    python local/studies.py systems --studies "students depth" --depths "2 4" --teacher main
    python local/studies.py teacher-eval --teacher teachers/mini_world --data data/mini_world/test --out FILE
    python local/studies.py report --studies ... --main-exp exp/studies/main_teacher --out exp/studies/RESULTS.md

A system is a model config, ``<model-conf-dir>/<system>.yaml``, trained by the mini recipe's shared
stages with one of two teachers: ``main`` (the recipe's --teacher) or ``small`` (Table IV's second
teacher, trained by the studies recipe). A system that several studies need is trained once and
appears in each of their tables.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from svmix.cli import IntList, OutPath, Text, command, fail, in_dir, user_errors
from svmix.errors import SvmixError
from svmix.utils.progress import format_duration

TEACHERS = ("main", "small")


@dataclass(frozen=True)
class Row:
    labels: Tuple[str, ...]   # the row's label cells, in the order of its study's header
    system: str               # <model-conf-dir>/<system>.yaml
    teacher: str = "main"


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    header: Tuple[str, ...]
    compares: str


STUDIES: Dict[str, Study] = {s.name: s for s in (
    Study("students", "Table I: students at matched cost", ("student",),
          "Five encoders between the same frontend and ECAPA backend, distilled from the main teacher; the "
          "encoders' parameters are within 10% of the Transformer's (the configs' header comments)."),
    Study("ablations", "Table II: SV-Mixer modules", ("modules",),
          "The SV-Mixer student with each of its modules switched back to the vanilla MLP-Mixer one "
          "(encoder.lgm, .msm, .gcm); 'none' is the MLP-Mixer block at the SV-Mixer's sizes. Sizes differ: "
          "an ablation changes one thing."),
    Study("backends", "Table III: backends", ("student", "backend"),
          "The Transformer and SV-Mixer students with the linear, ECAPA-TDNN and ReDimNet backends."),
    Study("teachers", "Table IV: teachers", ("teacher", "student"),
          "The Transformer and SV-Mixer students distilled from each of two teachers of different quality; the "
          "teachers are measured first, without any training."),
    Study("depth", "Fig. 5: EER against size", ("student", "layers"),
          "SV-Mixer and MLP-Mixer students at several depths, everything else as in Table I."),
)}
STUDENTS = (("Transformer", "transformer_mini"), ("MLP-Mixer", "mlpmixer_mini"), ("CycleMLP", "cyclemlp_mini"),
            ("ConvMixer", "convmixer_mini"), ("SV-Mixer", "svmixer_mini"))
ABLATIONS = (("none", "svmixer_mini_none"), ("GCM", "svmixer_mini_gcm"), ("LGM", "svmixer_mini_lgm"),
             ("MSM", "svmixer_mini_msm"), ("LGM + MSM + GCM", "svmixer_mini"))
BACKENDS = (("linear", "_linear"), ("ECAPA-TDNN", ""), ("ReDimNet", "_redimnet"))
PAIR = (("Transformer", "transformer_mini"), ("SV-Mixer", "svmixer_mini"))  # Tables III and IV
DEPTH_FAMILIES = (("SV-Mixer", "svmixer_mini"), ("MLP-Mixer", "mlpmixer_mini"))


def parse_studies(text: str) -> List[str]:
    names = text.split()
    if not names:
        raise SvmixError(f"--studies must not be empty (known: {' '.join(STUDIES)})")
    for name in names:
        if name not in STUDIES:
            raise SvmixError(f"--studies: unknown study '{name}' (known: {' '.join(STUDIES)})")
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SvmixError(f"--studies lists '{duplicate}' twice")
    return [n for n in STUDIES if n in names]  # the paper's order, however they were listed


def parse_depths(text: str) -> List[int]:
    words = text.split()
    if not words:
        raise SvmixError("--depths must not be empty when the depth study is selected")
    for w in words:
        if not re.fullmatch(r"[1-9][0-9]{0,2}", w):
            raise SvmixError(f"--depths: '{w}' is not a layer count (1-999, no leading zeros)")
    depths = [int(w) for w in words]
    duplicate = next((d for d in depths if depths.count(d) > 1), None)
    if duplicate:
        raise SvmixError(f"--depths lists {duplicate} twice")
    return depths


def base_layers(model_conf_dir: Path, system: str) -> int:
    """The encoder depth of a base model config (the depth its ``_<L>l`` variants replace)."""
    from svmix.yaml_config import read_model_config

    path = model_conf_dir / f"{system}.yaml"
    layers = (read_model_config(path).get("encoder") or {}).get("num_layers")
    if not isinstance(layers, int):
        raise SvmixError(f"{path}: no encoder.num_layers (the depth study's base configs state their depth)")
    return layers


def depth_system(base: str, depth: int, base_depth: int) -> str:
    return base if depth == base_depth else f"{base}_{depth}l"


def study_rows(name: str, depths: Sequence[int] = (), model_conf_dir: Optional[Path] = None) -> List[Row]:
    """The rows of one study, in table order."""
    if name == "students":
        return [Row((label,), system) for label, system in STUDENTS]
    if name == "ablations":
        return [Row((label,), system) for label, system in ABLATIONS]
    if name == "backends":
        return [Row((student, backend), system + suffix) for student, system in PAIR for backend, suffix in BACKENDS]
    if name == "teachers":
        return [Row((t, student), system, t) for t in TEACHERS for student, system in PAIR]
    if name == "depth":
        rows = []
        for family, base in DEPTH_FAMILIES:
            base_depth = base_layers(model_conf_dir, base) if model_conf_dir is not None else 4
            rows += [Row((family, str(d)), depth_system(base, d, base_depth)) for d in sorted(depths)]
        return rows
    raise SvmixError(f"unknown study '{name}'")


def selected_rows(studies: Sequence[str], depths: Sequence[int], model_conf_dir: Path) -> Dict[str, List[Row]]:
    """The rows of every selected study; every row's model config must exist."""
    rows = {name: study_rows(name, depths, model_conf_dir) for name in studies}
    for name, study in rows.items():
        for row in study:
            path = model_conf_dir / f"{row.system}.yaml"
            if not path.is_file():
                hint = f" (--depths {row.labels[1]}: one model config per depth)" if name == "depth" else ""
                raise SvmixError(f"study '{name}': {path} not found{hint}")
    return rows


def systems_of(rows: Mapping[str, Sequence[Row]], teacher: str) -> List[str]:
    """The systems to train with ``teacher``, each once, in order of first appearance."""
    return list(dict.fromkeys(r.system for study in rows.values() for r in study if r.teacher == teacher))


# ---------------------------------------------------------------- the teachers' own measurement
def measure_teacher(teacher: str, data_dirs: Sequence[os.PathLike], what: str = "") -> Dict[str, object]:
    """Size of a teacher and its own EER on each test set: cosine of mean-pooled, centred hidden
    states, no training (``svmix.teachers.mini.evaluate_teacher``)."""
    from svmix.teachers import load_teacher
    from svmix.teachers.mini import evaluate_teacher
    from svmix.utils.fileio import read_json

    model = load_teacher(teacher)
    info: Dict[str, object] = {"teacher": str(teacher), "layers": int(model.num_layers),
                               "params": int(sum(p.numel() for p in model.parameters())), "what": what}
    training = Path(teacher) / "training.json"
    if training.is_file():
        t = read_json(training)
        info["what"] = what or t.get("objective", "")
        info["steps"] = t.get("steps_done", t.get("steps"))
        info["speakers"] = t.get("num_speakers")
    info["sets"] = {Path(d).name: evaluate_teacher(model, d, progress=False) for d in data_dirs}
    return info


# ---------------------------------------------------------------- RESULTS.md
def read_times(path: Optional[Path]) -> Dict[str, List[float]]:
    """``KEY<TAB>SECONDS`` lines (the recipe appends one per step and run): seconds per key, per run."""
    times: Dict[str, List[float]] = {}
    if path is None or not path.is_file():
        return times
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.partition("\t")
        try:
            times.setdefault(key, []).append(float(value))
        except ValueError:
            raise SvmixError(f"{path}:{n}: expected KEY<TAB>SECONDS, got {line!r}") from None
    return times


def _train_hash(seed_dir: Path) -> Optional[str]:
    """The training settings of a run without its seed and KD target layers (which follow the teacher)."""
    from svmix.report import config_hash

    return config_hash(seed_dir / "config.yaml", section="train", ignore=("train.seed", "train.kd.layers"))


def _teachers_table(evals: Mapping[str, Optional[dict]], conditions) -> List[str]:
    from svmix.report import _table

    header = ["teacher", "what", "layers", "params (M)", "training steps", "voices"] + [
        f"{c.test_set}: own EER (%)" for c in conditions]
    rows = []
    for key, info in evals.items():
        if info is None:
            rows.append([key, "not measured"] + ["n/a"] * (len(header) - 2))
            continue
        sets = info.get("sets") or {}
        rows.append([key, f"`{info['teacher']}`" + (f": {info['what']}" if info.get("what") else ""),
                     str(info["layers"]), f"{info['params'] / 1e6:.2f}",
                     "n/a" if info.get("steps") is None else str(info["steps"]),
                     "n/a" if info.get("speakers") is None else str(info["speakers"])]
                    + [f"{sets[c.test_set]['eer']:.2f}" if c.test_set in sets else "n/a" for c in conditions])
    return _table(header, ["---", "---", "---:", "---:", "---:", "---:"] + ["---:"] * len(conditions), rows)


def render_studies(rows: Mapping[str, Sequence[Row]], exps: Mapping[str, Path], conditions, seeds: Sequence[int],
                   notes: Mapping[str, str], plot_path: Path, out: Path, times: Mapping[str, List[float]],
                   elapsed: float) -> str:
    from svmix.plots import plot_eer_against_size
    from svmix.report import conditions_table, floor_summary, mean_eer, study_table, system_summary

    summaries: Dict[Tuple[str, str], dict] = {}
    for study in rows.values():
        for r in study:
            if (r.teacher, r.system) not in summaries:
                summaries[(r.teacher, r.system)] = system_summary(exps[r.teacher] / r.system, seeds, conditions)
    floor_dir = exps["main"] / "floor"
    floor = floor_summary(floor_dir, conditions) if floor_dir.is_dir() else None
    evals = {}
    for key in TEACHERS:
        path = exps[key] / "teacher_eval.json" if key in exps else None
        evals[key] = json.loads(path.read_text()) if path is not None and path.is_file() else None

    def relative(path: Path) -> str:
        return os.path.relpath(path, out.parent)

    seeds_text = ", ".join(str(k) for k in seeds)
    lines = ["# RESULTS: the paper's studies in miniature", "",
             f"Studies: {', '.join(rows)}. What each compares, how it is run and what the paper reports: "
             "docs/studies.md. Every system is trained with the same training config, once per training seed "
             f"({seeds_text}), and distilled from the main teacher unless its table says otherwise; a system that "
             "several studies share is trained once. EER in %, mean ± sample std over the seeds (one seed: its "
             "value); 95% CI: the mean of the per-seed speaker-bootstrap intervals; val EER: the kept checkpoint's "
             "validation EER; sizes for one 3 s input. The last row of every table is the MFCC-mean cosine floor "
             "(no model).", "",
             "Every system with its per-seed values, CPU RTF and commands: "
             + ", ".join(f"[{relative(exps[k] / 'RESULTS.md')}]({relative(exps[k] / 'RESULTS.md')}) ({k} teacher)"
                         for k in TEACHERS if k in exps) + ".", "",
             "## Test conditions", ""] + conditions_table(conditions, notes)
    for name, study_rows_ in rows.items():
        study = STUDIES[name]
        lines += ["", f"## {study.title}", "", study.compares]
        if name == "teachers":
            lines += ["", "The teachers, measured without training: EER of the cosine of their mean-pooled, "
                      "centred last layer (the layer the students match) on each test set.", ""]
            lines += _teachers_table(evals, conditions)
            lines += ["", "The students:"]
        runs = [run for r in study_rows_ for run in summaries[(r.teacher, r.system)]["runs"].values()]
        hashes = {_train_hash(run["dir"]) for run in runs}
        frontends = sorted({str((run["config"].get("frontend") or {}).get("name")) for run in runs})
        lines += ["", "Training settings: " + (f"identical in every row (`{hashes.pop()}`: hash of `train:`, seed and "
                                              "KD layers aside)." if len(hashes) == 1 and None not in hashes
                                              else "NOT identical in every row (hashes "
                                              + ", ".join(sorted(str(h) for h in hashes)) + ")."), "",
                  "Frontend: " + (f"`{frontends[0]}` in every row." if len(frontends) == 1
                                  else "NOT the same in every row (" + ", ".join(f"`{f}`" for f in frontends) + ")."),
                  ""]
        table_rows = [((*r.labels, f"`{r.system}`"), summaries[(r.teacher, r.system)]) for r in study_rows_]
        if floor is not None:
            table_rows.append((("MFCC-mean cosine (floor)",) + ("-",) * len(study.header), floor))
        lines += study_table((*study.header, "config"), table_rows, conditions)
        if name == "depth":
            panels = {}
            for c in conditions:
                curves: Dict[str, list] = {}
                for r in study_rows_:
                    s = summaries[(r.teacher, r.system)]
                    eer, ci = mean_eer(s, c)
                    if eer is not None:
                        curves.setdefault(r.labels[0], []).append((s["parts"]["total"]["params_m"], eer, ci,
                                                                   f"L={r.labels[1]}"))
                if curves:
                    panels[c.label(len({x.trials for x in conditions}) == 1)] = curves
            if panels:
                plot_eer_against_size(panels, plot_path, title="EER against total parameters, by depth")
                lines += ["", f"![EER against total parameters]({relative(plot_path)})", "",
                          f"[{relative(plot_path)}]({relative(plot_path)}): EER (mean over the seeds, with the mean "
                          "95% interval) against total parameters, one panel per test set."]
    lines += _run_time_section(rows, times, elapsed)
    return "\n".join(lines) + "\n"


def _run_time_section(rows: Mapping[str, Sequence[Row]], times: Mapping[str, List[float]], elapsed: float) -> List[str]:
    import torch

    def total(key: str) -> float:
        return sum(times.get(key, []))

    runs = times.get("run", [])
    lines = ["", "## Run time (machine-dependent)", "",
             f"- {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; {platform.machine()}, {os.cpu_count()} CPU "
             f"cores, torch {torch.__version__}",
             f"- total wall time: {format_duration(sum(runs) + elapsed)} over {len(runs) + 1} run(s) of the recipe "
             f"(this one: {format_duration(elapsed)} so far)",
             "- per study: the wall time of its systems' training and extraction jobs, summed over the runs (a "
             "system shared by several studies counts in each; jobs ran --nj at a time), plus, for Table IV, "
             "training, measuring and caching the small teacher", ""]
    table = []
    for name, study in rows.items():
        systems = list(dict.fromkeys((r.teacher, r.system) for r in study))
        seconds = sum(total(f"job/{t}/{s}") for t, s in systems)
        if name == "teachers":
            seconds += total("small_teacher") + total("teacher_eval/small") + total("teacher_eval/main") \
                + total("cache/small")
        table.append([STUDIES[name].title, str(len(systems)), format_duration(seconds)])
    shared = [("the mini world and augmentation lists", "world"), ("main teacher cache", "cache/main"),
              ("scoring and per-teacher reports", "score")]
    from svmix.report import _table

    lines += _table(["study", "systems", "wall time"], ["---", "---:", "---:"], table)
    lines += ["", "Shared steps: " + "; ".join(
        f"{what} {format_duration(sum(v for k, vs in times.items() if k == key or k.startswith(key + '/') for v in vs))}"
        for what, key in shared) + "."]
    return lines


def write_studies_report(studies: Sequence[str], depths: Sequence[int], seeds: Sequence[int], model_conf_dir: Path,
                         test_dirs: Sequence[os.PathLike], notes: Sequence[str], main_exp: Path,
                         small_exp: Optional[Path], out: Path, times_file: Optional[Path] = None,
                         elapsed: float = 0.0) -> str:
    from svmix.report import conditions_of, parse_notes
    from svmix.utils.fileio import atomic_open

    rows = selected_rows(studies, depths, model_conf_dir)
    exps = {"main": Path(main_exp)}
    if small_exp is not None:
        exps["small"] = Path(small_exp)
    elif "teachers" in rows:
        raise SvmixError("the teachers study needs --small-exp (the small teacher's experiment dir)")
    conditions = conditions_of(test_dirs, ["trials"])
    text = render_studies(rows, exps, conditions, list(dict.fromkeys(seeds)), parse_notes(notes),
                          out.parent / "depth.png", out, read_times(times_file), elapsed)
    with atomic_open(out) as f:
        f.write(text)
    return text


# ---------------------------------------------------------------- commands

@command("studies.py systems")
@click.option("--studies", required=True, help="Studies, space-separated.")
@click.option("--depths", default="", help="Encoder depths of the depth study, space-separated.")
@click.option("--teacher", required=True, type=click.Choice(TEACHERS), help="Print the systems of this teacher.")
@click.option("--model-conf-dir", required=True, type=in_dir(), help="Where the model configs are.")
@user_errors
def systems(studies: str, depths: str, teacher: str, model_conf_dir: str) -> None:
    """Check the studies and depths and print the systems to train with TEACHER (space-separated)."""
    names = parse_studies(studies)
    rows = selected_rows(names, parse_depths(depths) if "depth" in names else [], Path(model_conf_dir))
    print(" ".join(systems_of(rows, teacher)))


@command("studies.py teacher-eval")
@click.option("--teacher", required=True, help="Teacher spec (an HF directory, a bundle name, ...).")
@click.option("--data", "data_dirs", required=True, multiple=True, type=in_dir(), help="Test set with trials (repeatable).")
@click.option("--what", default="", help="What the teacher is (default: the objective in its training.json).")
@click.option("--out", required=True, type=OutPath("file"), help="JSON to write.")
@user_errors
def teacher_eval(teacher: str, data_dirs: Tuple[str, ...], what: str, out: str) -> None:
    """Measure a teacher without training: size, and EER of its mean-pooled states on each test set."""
    from svmix.utils.fileio import write_json

    info = measure_teacher(teacher, data_dirs, what)
    write_json(out, info)
    print(f"{out}: " + ", ".join(f"{name} EER {e['eer']:.2f}%" for name, e in info["sets"].items()))


@command("studies.py report")
@click.option("--studies", required=True, help="Studies, space-separated.")
@click.option("--depths", default="", help="Encoder depths of the depth study, space-separated.")
@click.option("--seeds", type=IntList(min=0), default="0", show_default=True, help="Training seeds.")
@click.option("--model-conf-dir", required=True, type=in_dir(), help="Where the model configs are.")
@click.option("--test-data", "test_dirs", multiple=True, required=True, type=in_dir(), help="Test set (repeatable).")
@click.option("--note", "notes", multiple=True, type=Text(r"[^=]+=.+", "SET=DESCRIPTION"),
              help="What a test set is (repeatable).")
@click.option("--main-exp", required=True, type=in_dir(), help="The main teacher's experiment dir.")
@click.option("--small-exp", type=in_dir(), help="The small teacher's experiment dir (the teachers study).")
@click.option("--times", "times_file", type=click.Path(dir_okay=False), help="KEY<TAB>SECONDS lines of the runs so far.")
@click.option("--elapsed", type=click.FloatRange(min=0), default=0.0, help="Seconds this run has taken so far.")
@click.option("--out", required=True, type=OutPath("file"), help="RESULTS.md to write (depth.png beside it).")
@user_errors
def report(studies: str, depths: str, seeds: List[int], model_conf_dir: str, test_dirs: Tuple[str, ...],
           notes: Tuple[str, ...], main_exp: str, small_exp: Optional[str], times_file: Optional[str], elapsed: float,
           out: str) -> None:
    """Write RESULTS.md with one table per study (and the depth study's PNG)."""
    names = parse_studies(studies)
    write_studies_report(names, parse_depths(depths) if "depth" in names else [], seeds, Path(model_conf_dir),
                         test_dirs, notes, Path(main_exp), Path(small_exp) if small_exp else None, Path(out),
                         Path(times_file) if times_file else None, elapsed)
    print(f"wrote {out}")


COMMANDS = {"systems": systems, "teacher-eval": teacher_eval, "report": report}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail("studies.py", f"give a command first: {', '.join(COMMANDS)}")
    COMMANDS[sys.argv[1]].main(sys.argv[2:], prog_name=f"studies.py {sys.argv[1]}")
