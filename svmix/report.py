"""RESULTS.md: one table per recipe run (system, params, GMACs, EER, minDCF, CPU RTF), ESPnet style."""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from svmix.errors import SvmixError
from svmix.utils.fileio import atomic_open


def _read_json(path: Path) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def system_rows(exp_dir: os.PathLike, trials_names: Sequence[str], emb_name: str) -> List[Dict[str, object]]:
    """One row per trials list for a trained system, from its experiment directory."""
    from svmix.checkpoint import read_checkpoint
    from svmix.profiling import profile_model

    exp_dir = Path(exp_dir)
    ckpt = read_checkpoint(exp_dir)
    profile = profile_model(ckpt["config"])
    stats = _read_json(exp_dir / f"emb_{emb_name}" / "extract_stats.json") or {}
    config_file = exp_dir / "config.yaml"
    config_hash = hashlib.sha256(config_file.read_bytes()).hexdigest()[:10] if config_file.is_file() else None
    rows = []
    for trials in trials_names:
        metrics = _read_json(exp_dir / f"metrics_{trials}.json") or {}
        rows.append({
            "system": exp_dir.name,
            "trials": trials,
            "params_m": profile["params"] / 1e6,
            "gmacs": profile["gmacs"],
            "eer": metrics.get("eer"),
            "min_dcf_01": (metrics.get("min_dcf") or {}).get("0.01"),
            "min_dcf_05": (metrics.get("min_dcf") or {}).get("0.05"),
            "rtf": stats.get("rtf"),
            "val_eer": ckpt.get("val_eer"),
            "config_hash": config_hash,
        })
    return rows


def teacher_row(teacher_dir: os.PathLike) -> Optional[Dict[str, object]]:
    teacher_dir = Path(teacher_dir)
    evaluation = _read_json(teacher_dir / "eval.json")
    if evaluation is None:
        return None
    weights = teacher_dir / "model.safetensors"
    params = None
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return {"system": f"teacher ({teacher_dir.name})", "trials": Path(evaluation.get("trials", "")).name,
            "eer": evaluation.get("eer"), "params_m": params / 1e6 if params else None}


def render(rows: Sequence[Dict[str, object]], teacher: Optional[Dict[str, object]], emb_name: str,
           commands: List[str]) -> str:
    import torch

    lines = [
        "# RESULTS",
        "",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- evaluation data: `{emb_name}`; score: mean of the 10×10 cross-segment cosines (docs/method.md §Evaluation), no normalisation",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "- params: frontend + encoder + backend; GMACs: one 3 s input (149 frames);"
        " CPU RTF: extraction wall time ÷ audio duration",
        "",
        "| system | trials | params (M) | GMACs | EER (%) | minDCF@0.01 | minDCF@0.05 | CPU RTF | val EER (%) | config |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['trials']} | {_fmt(r['params_m'], '.2f')} | {_fmt(r['gmacs'], '.3f')} | {_fmt(r['eer'], '.2f')} "
            f"| {_fmt(r['min_dcf_01'], '.3f')} | {_fmt(r['min_dcf_05'], '.3f')} | {_fmt(r['rtf'], '.4f')} "
            f"| {_fmt(r['val_eer'], '.2f')} | `{r['config_hash'] or 'n/a'}` |")
    if teacher is not None:
        lines.append(f"| {teacher['system']} | {teacher['trials']} | {_fmt(teacher['params_m'], '.2f')} | "
                     f"| {_fmt(teacher['eer'], '.2f')} | | | | | |")
    if commands:
        lines += ["", "## Commands", "", "```"] + commands + ["```"]
    return "\n".join(lines) + "\n"


def write_report(systems: Sequence[os.PathLike], out: os.PathLike, trials_names: Sequence[str] = ("trials",),
                 emb_name: str = "test", teacher_dir: Optional[os.PathLike] = None,
                 commands_file: Optional[os.PathLike] = None) -> str:
    if not systems:
        raise SvmixError("no systems given for the report")
    rows = [row for s in systems for row in system_rows(s, trials_names, emb_name)]
    teacher = teacher_row(teacher_dir) if teacher_dir else None
    commands: List[str] = []
    if commands_file and Path(commands_file).is_file():
        for line in Path(commands_file).read_text().splitlines():
            if line and line not in commands:
                commands.append(line)
    text = render(rows, teacher, emb_name, commands)
    with atomic_open(out) as f:
        f.write(text)
    return text
