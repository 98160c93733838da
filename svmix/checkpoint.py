"""Self-describing model checkpoints: the resolved (closed) model config travels with the weights."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from svmix import __version__
from svmix.errors import SvmixError
from svmix.utils.fileio import torch_load, torch_save_atomic

FORMAT = "svmix-model"
FINAL_NAME = "model.pt"  # an experiment dir's model for extraction/export


def save_model(path: os.PathLike, model: torch.nn.Module, extra: Optional[Dict[str, Any]] = None) -> None:
    """Save ``model`` (a SpeakerModel) with its resolved config, atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "svmix_version": __version__, "config": model.config, "state_dict": state}
    obj.update(extra or {})
    torch_save_atomic(obj, path)


def resolve_checkpoint_path(path: os.PathLike) -> Path:
    """An experiment dir resolves to its ``model.pt``; a file is taken as is."""
    path = Path(path)
    if path.is_dir():
        if (path / FINAL_NAME).is_file():
            return path / FINAL_NAME
        raise SvmixError(f"{path}: experiment directory has no {FINAL_NAME} (has training finished?)")
    if not path.is_file():
        raise SvmixError(f"{path}: checkpoint not found")
    return path


def read_checkpoint(path: os.PathLike) -> Dict[str, Any]:
    """The checkpoint dict; its ``config`` is resolved (closed), so checkpoints written before every
    default was recorded compare equal to new ones of the same model, and ``train_config`` (when
    present) uses today's key names."""
    from svmix.models import resolve_model_config
    from svmix.train.config import upgrade_legacy_train

    path = resolve_checkpoint_path(path)
    obj = torch_load(path, "checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("config"), dict):
        raise SvmixError(f"{path}: not an svmix model checkpoint")
    try:
        obj["config"] = resolve_model_config(obj["config"])
    except SvmixError as e:
        raise SvmixError(f"{path}: {e}") from None
    if isinstance(obj.get("train_config"), dict):
        obj["train_config"] = upgrade_legacy_train(obj["train_config"])
    return obj


def load_model_checkpoint(path: os.PathLike, device: str = "cpu",
                          expect: Optional[Dict[str, Any]] = None) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Build the model from the checkpoint's own config and load its weights (eval mode).

    ``expect`` optionally names model-config keys that must match (e.g. ``{"encoder": {...}}``)."""
    from svmix.models import build_model

    ckpt = read_checkpoint(path)
    config = ckpt["config"]
    for key, value in (expect or {}).items():
        if config.get(key) != value:
            raise SvmixError(f"{path}: checkpoint has model.{key}={config.get(key)!r}, "
                             f"but {value!r} was requested")
    model = build_model(config, pretrained=False)  # every weight comes from the checkpoint
    try:
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise SvmixError(f"{path}: weights do not match the checkpoint's config ({first})") from None
    if missing or unexpected:
        raise SvmixError(f"{path}: weights do not match the checkpoint's config "
                         f"(missing {len(missing)}, unexpected {len(unexpected)}, e.g. {(missing or unexpected)[0]})")
    return model.to(device).eval(), ckpt
