"""Training-state checkpoints (exact resume), the N best models, and checkpoint averaging.

Layout of ``EXP/checkpoints/``:
- ``last.pt``: the full training state (weights of student + loss heads, optimiser, schedule,
  early stopping, AMP scaler, sampler position, every rank's RNG states, step, best list).
- ``best/step<NNNNNNNN>.pt``: model checkpoints (``svmix.checkpoint.save_model`` format) of the
  ``keep_best`` best validations; ``best.json`` lists them ``[{"step", "eer", "path"}]``, best first.
All files are written atomically; ``last.pt`` is written after the best files it refers to, and a
best file that is no longer listed is deleted only after that.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from svmix.checkpoint import read_checkpoint, save_model
from svmix.errors import SvmixError
from svmix.utils.fileio import read_json, torch_load, torch_save_atomic, write_json
from svmix.utils.logging import get_logger

STATE_FORMAT = "svmix-train-state"
_log = get_logger("train.checkpointing")


def checkpoint_dir(exp_dir: os.PathLike) -> Path:
    return Path(exp_dir) / "checkpoints"


def last_state_path(exp_dir: os.PathLike) -> Path:
    return checkpoint_dir(exp_dir) / "last.pt"


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(exp_dir: os.PathLike, state: Dict[str, Any]) -> None:
    torch_save_atomic({"format": STATE_FORMAT, **state}, last_state_path(exp_dir))


def load_training_state(exp_dir: os.PathLike) -> Optional[Dict[str, Any]]:
    """The saved training state, or None when the experiment has not checkpointed yet."""
    path = last_state_path(exp_dir)
    if not path.is_file():
        return None
    state = torch_load(path, "training state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise SvmixError(f"{path}: not an svmix training state")
    return state


class BestCheckpoints:
    """Keeps the ``keep`` best model checkpoints by validation EER (lower is better)."""

    def __init__(self, exp_dir: os.PathLike, keep: int, entries: Sequence[Dict[str, Any]] = ()):
        self.dir = checkpoint_dir(exp_dir) / "best"
        self.keep = keep
        self.entries: List[Dict[str, Any]] = list(entries)
        self._dropped: List[str] = []

    def offer(self, step: int, eer: float, model: torch.nn.Module, extra: Dict[str, Any]) -> bool:
        """Save the model if it ranks among the best; returns whether it was kept."""
        path = self.dir / f"step{step:08d}.pt"
        new = {"step": step, "eer": eer, "path": str(path.relative_to(self.dir.parent.parent))}
        ranked = sorted(self.entries + [new], key=lambda e: (e["eer"], e["step"]))
        if new not in ranked[: self.keep]:
            return False
        save_model(path, model, {**extra, "step": step, "val_eer": eer})
        self._dropped += [e["path"] for e in ranked[self.keep:]]
        self.entries = ranked[: self.keep]
        return True

    def commit(self, exp_dir: os.PathLike) -> None:
        """Publish ``best.json`` and delete dropped files; call after the training state is saved."""
        write_json(self.dir.parent / "best.json", self.entries)
        for rel in self._dropped:
            (Path(exp_dir) / rel).unlink(missing_ok=True)
        self._dropped = []

    def remove_strays(self, exp_dir: os.PathLike) -> None:
        """After a resume: delete best files written after the state we resumed from."""
        listed = {Path(exp_dir) / e["path"] for e in self.entries}
        for path in self.dir.glob("step*.pt"):
            if path not in listed:
                path.unlink()
        write_json(self.dir.parent / "best.json", self.entries)


def best_entries(exp_dir: os.PathLike) -> List[Dict[str, Any]]:
    path = checkpoint_dir(exp_dir) / "best.json"
    if not path.is_file():
        raise SvmixError(f"{exp_dir}: no checkpoints/best.json (no validation has run yet)")
    entries = read_json(path)
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and {"step", "eer", "path"} <= set(e) for e in entries):
        raise SvmixError(f"{path}: expected a list of {{step, eer, path}} entries")
    return entries


def average_state_dicts(state_dicts: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; other tensors (e.g. BatchNorm counters) are
    taken from the first state dict."""
    out = {}
    for key, first in state_dicts[0].items():
        if torch.is_floating_point(first):
            out[key] = sum(sd[key].double() for sd in state_dicts).div(len(state_dicts)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def average_checkpoints(exp_dir: os.PathLike, num: Optional[int] = None, out: Optional[os.PathLike] = None) -> Path:
    """Average the ``num`` best model checkpoints of ``exp_dir`` (all kept when None) into ``out``
    (default ``EXP/model.pt``); a single checkpoint is copied as is. Returns the output path."""
    from svmix.models import build_model

    entries = best_entries(exp_dir)
    if not entries:
        raise SvmixError(f"{exp_dir}: checkpoints/best.json lists no checkpoints")
    entries = entries[: num or len(entries)]
    ckpts = [read_checkpoint(Path(exp_dir) / e["path"]) for e in entries]
    for entry, ckpt in zip(entries[1:], ckpts[1:]):
        if ckpt["config"] != ckpts[0]["config"]:
            raise SvmixError(f"{Path(exp_dir) / entry['path']}: model config differs from "
                             f"{entries[0]['path']}; cannot average them")
    model = build_model(ckpts[0]["config"], pretrained=False)
    model.load_state_dict(average_state_dicts([c["state_dict"] for c in ckpts]))
    extra = {k: v for k, v in ckpts[0].items() if k not in ("format", "svmix_version", "config", "state_dict")}
    extra["averaged"] = [{"step": e["step"], "eer": e["eer"]} for e in entries]
    out = Path(out) if out is not None else Path(exp_dir) / "model.pt"
    save_model(out, model, extra)
    _log.info("wrote %s (average of %d checkpoint(s): steps %s)", out, len(entries),
              ", ".join(str(e["step"]) for e in entries))
    return out
