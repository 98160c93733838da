"""Reading svmix's YAML configs: the one reader, the one merge, and model-config includes.

Light on purpose (PyYAML only, no torch): the recipes read model configs with it at every step.

A model YAML (``conf/model/*.yaml``) holds a ``model:`` section, or is a bare model mapping. It
may instead name a base model YAML in ``model_config:`` and change only what differs in its
``model:`` section, the way a training config includes its student:

    model_config: svmixer_mini.yaml     # looked up from the working directory, then beside this file
    model:
      encoder: {num_layers: 6}

Includes nest (a base may include its own base); a cycle is an error.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml

from svmix.errors import SvmixError

MAX_INCLUDE_DEPTH = 16


def read_yaml(path: os.PathLike, what: str) -> Dict[str, Any]:
    """The YAML reader of every svmix config: a mapping, or a one-line error naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise SvmixError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise SvmixError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    except UnicodeDecodeError:
        raise SvmixError(f"{path}: {what} is not UTF-8 text") from None
    if not isinstance(data, dict):
        raise SvmixError(f"{path}: {what} must be a YAML mapping")
    return data


def merge(base: Mapping[str, Any], update: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``update`` replaces. A mapping that
    names another registry entry (its ``name`` differs from the base mapping's) replaces the base
    mapping instead: the other keys of a named mapping are that entry's arguments, and another
    entry's arguments do not apply. Unknown keys are not rejected here; validation (or a registry's
    ``resolve``) rejects them."""
    out = copy.deepcopy(dict(base))
    for key, value in (update or {}).items():
        old = out.get(key)
        renamed = isinstance(value, Mapping) and isinstance(old, Mapping) and "name" in value \
            and value["name"] != old.get("name")
        if isinstance(value, Mapping) and isinstance(old, Mapping) and not renamed:
            out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def find_include(path: str, config_dir: Optional[Path]) -> Path:
    """An included model config: ``path`` as given (from the working directory), else beside the
    including file in ``config_dir``."""
    candidate = Path(path)
    if candidate.is_file() or candidate.is_absolute() or config_dir is None:
        return candidate
    beside = config_dir / candidate
    if not beside.is_file():
        raise SvmixError(f"model config '{path}' not found (looked in the working directory and in {config_dir})")
    return beside


def read_model_config(path: os.PathLike, _chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """The model mapping of a model YAML, its includes resolved (see the module docstring); not yet
    resolved against the defaults (``svmix.models.resolve_model_config`` does that)."""
    path = Path(path)
    data = read_yaml(path, "model config")
    if "model_config" not in data:
        model = data.get("model", data)
        if not isinstance(model, Mapping):
            raise SvmixError(f"{path}: 'model:' must be a mapping")
        return dict(model)
    unknown = sorted(set(data) - {"model_config", "model"})
    if unknown:
        raise SvmixError(f"{path}: unknown top-level key '{unknown[0]}' in a model config that includes "
                         "another (known: model_config, model)")
    if not isinstance(data.get("model") or {}, Mapping):
        raise SvmixError(f"{path}: 'model:' must be a mapping")
    here = path.resolve()
    if here in _chain:
        raise SvmixError(f"{path}: model configs include each other: "
                         + " -> ".join(p.name for p in (*_chain, here)))
    if len(_chain) >= MAX_INCLUDE_DEPTH:
        raise SvmixError(f"{path}: model config includes nested deeper than {MAX_INCLUDE_DEPTH}")
    base = read_model_config(find_include(str(data["model_config"]), path.parent), (*_chain, here))
    return merge(base, data.get("model"))
