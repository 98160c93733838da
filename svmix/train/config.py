"""Training configuration: YAML with a ``model:`` and a ``train:`` section, defaults, overrides.

The model may be embedded (``model: {...}``) or included with ``model_config: PATH`` (a YAML file
whose content is a model config, or has a top-level ``model:`` key); keys under an embedded
``model:`` then override the included ones. A relative ``model_config`` path is looked up as given
(from the working directory) and then next to the training config. ``--override key.sub=value``
(YAML-parsed value) is applied before the include is resolved, so
``--override model_config=conf/model/transformer_mini.yaml`` swaps the student.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from svmix.errors import SvmixError
from svmix.models import resolve_model_config

DEFAULT_TRAIN_CONFIG: Dict[str, Any] = {
    "seed": 4221,
    "batch_size": 128,            # global batch, split evenly over DDP ranks
    "max_steps": None,            # stop after this many optimiser steps ...
    "epochs": None,               # ... or after this many passes (one of the two is required)
    "optimizer": {"name": "adamw", "lr": 2.0e-4, "weight_decay": 2.0e-5},
    "optimizer_switch": None,     # {"at_step": N, "optimizer": {...}}: the released AdamW → SGD switch
    "scheduler": {"name": "plateau", "factor": 0.5, "patience": 5},
    "early_stopping": {"patience": 10},  # in validations without improvement; null disables
    "grad_clip": 10.0,            # max gradient norm; null disables
    "amp": False,                 # mixed precision (CUDA only)
    "init_frontend_from_teacher": False,  # copy the teacher's conv frontend where shapes match (DistilHuBERT)
    "kd": {"type": "last_mse", "layers": None, "lambda": 1.0},  # layers null: the last teacher layer
    "aam": {"name": "aam_topk", "margin": 0.2, "scale": 30.0, "top_k": 5, "negative_margin": 0.1,
            "impostor_weight": 1.0, "class_weighted": True},
    "augment": {"p": 0.8},        # see svmix.train.augment.DEFAULT_AUGMENT_CONFIG
    "speaker_balanced": False,    # sample a speaker uniformly, then one of its utterances
    "preload_audio": False,       # keep all training audio in RAM (small corpora)
    "val_every": 2000,            # steps between validations (and checkpoints); "epoch": once per epoch
    "val_segments": 10,           # 3 s segments per validation utterance (docs/method.md §Evaluation: 10)
    "val_batch_size": 32,
    "checkpoint_every": None,     # default: val_every
    "keep_best": 5,               # best-by-validation-EER model checkpoints kept
    "average": 1,                 # EXP/model.pt = average of this many best (1: the best checkpoint)
    "log_every": 50,
    "num_workers": 2,
    "find_unused_parameters": False,
}


def _merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: os.PathLike, what: str) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SvmixError(f"{path}: {what} not found")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise SvmixError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise SvmixError(f"{path}: {what} must be a YAML mapping")
    return data


def apply_overrides(config: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``0.5``, ``true``, ``[1,2]``)."""
    config = copy.deepcopy(config)
    for item in overrides or ():
        if "=" not in item:
            raise SvmixError(f"override '{item}' is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = config
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise SvmixError(f"override '{item}': '{part}' is not a section")
            node = node[part]
        node[parts[-1]] = value
    return config


def _find_include(path: str, config_dir: Optional[Path]) -> Path:
    candidate = Path(path)
    if candidate.is_file() or candidate.is_absolute() or config_dir is None:
        return candidate
    beside = config_dir / candidate
    if not beside.is_file():
        raise SvmixError(f"model config '{path}' not found (looked in the working directory and in {config_dir})")
    return beside


def resolve_config(raw: Dict[str, Any], config_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Resolve includes and fill defaults: returns ``{"model": {...}, "train": {...}}``."""
    unknown = set(raw) - {"model", "model_config", "train"}
    if unknown:
        raise SvmixError(f"unknown top-level config key(s): {', '.join(sorted(unknown))} "
                         "(known: model, model_config, train)")
    model: Dict[str, Any] = {}
    if raw.get("model_config"):
        included = _read_yaml(_find_include(str(raw["model_config"]), config_dir), "model config")
        model = included.get("model", included)
    model = _merge(model, raw.get("model") or {})
    train = _merge(DEFAULT_TRAIN_CONFIG, raw.get("train") or {})
    unknown = set(train) - set(DEFAULT_TRAIN_CONFIG)
    if unknown:
        raise SvmixError(f"unknown train config key(s): {', '.join(sorted(unknown))}")
    if train["max_steps"] is None and train["epochs"] is None:
        raise SvmixError("train config needs max_steps or epochs")
    if train["checkpoint_every"] is None:
        train["checkpoint_every"] = train["val_every"]
    return {"model": resolve_model_config(model), "train": train}


def load_train_config(path: Optional[os.PathLike] = None, overrides: Sequence[str] = (),
                      model_config: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """Read a training YAML (or start empty), apply overrides and resolve it."""
    raw = _read_yaml(path, "training config") if path is not None else {}
    if model_config is not None:
        raw["model_config"] = str(model_config)
    raw = apply_overrides(raw, overrides)
    return resolve_config(raw, Path(path).parent if path is not None else None)
