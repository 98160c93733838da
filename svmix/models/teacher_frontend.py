"""The frozen-teacher frontend ``teacher``: a pretrained SSL model gives the whole hidden-state stack.

``model.frontend: {name: teacher, path: DIR}`` with ``model.encoder: {name: identity}`` is the
"teacher + backend" system: the teacher's L+1 hidden states (Hugging Face indexing) go to the same
weighted layer sum + backend as a student's, and only the backend trains (docs/method.md §Baselines,
see Teacher + backend). The teacher runs in eval mode always, without gradients, on the waveform normalised
the way it was trained (``SSLTeacher.normalize``).

Resolution records the teacher's architecture (``model.frontend.teacher``: torchaudio builder
parameters, waveform normalisation) and the fingerprint of its weights, read from ``path`` once;
so a checkpoint builds the module from its config alone and loads the teacher's weights from its
own state dict (``model.pt`` needs no teacher directory). Only a fresh build for training
(``pretrained=True``) reads the weights from ``path``, and checks they are the ones recorded.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from svmix.errors import SvmixError
from svmix.registry import FRONTENDS

DEFAULT_TEACHER_PATH = "teachers/mini_world"  # the mini world's shipped teacher (docs/mini-world.md)
# what model.frontend.teacher records (besides the torchaudio builder ``params``)
ARCHITECTURE_KEYS = ("arch", "normalize_waveform", "normalize_eps", "feat_proj_layer_norm", "fingerprint")

_architectures: Dict[Tuple[str, str], Dict[str, Any]] = {}


def teacher_architecture(path: str, key: str) -> Dict[str, Any]:
    """What ``model.frontend.teacher`` records for the teacher at ``path`` (memoised by fingerprint)."""
    from svmix.teachers import load_teacher, teacher_fingerprint

    try:
        fingerprint = teacher_fingerprint(path)
        if (path, fingerprint) not in _architectures:
            teacher = load_teacher(path)
            _architectures[(path, fingerprint)] = _describe(teacher)
    except SvmixError as e:
        raise SvmixError(f"{key}.path: {e}") from None
    return copy.deepcopy(_architectures[(path, fingerprint)])


def _describe(teacher: Any) -> Dict[str, Any]:
    from svmix.registry import yaml_safe

    return {"arch": teacher.arch, "params": yaml_safe(dict(teacher.params)),
            "normalize_waveform": bool(teacher.normalize_waveform), "normalize_eps": float(teacher.normalize_eps),
            "feat_proj_layer_norm": bool(teacher.feat_proj_layer_norm), "fingerprint": teacher.fingerprint}


@FRONTENDS.register("teacher")
class TeacherFrontend(nn.Module):
    """Waveform (B, N) → the frozen teacher's hidden-state stack (B, L+1, T, H).

    ``teacher`` is the recorded architecture (filled in by :meth:`complete_config`; None in a
    config means "read it from ``path``")."""

    def __init__(self, hidden: int, path: str = DEFAULT_TEACHER_PATH, teacher: Optional[Dict[str, Any]] = None):
        super().__init__()
        from svmix.teachers.model import SSLTeacher, build_torchaudio_model

        if teacher is None:
            teacher = teacher_architecture(path, "model.frontend")
        self.path, self.architecture = path, copy.deepcopy(teacher)
        model = build_torchaudio_model(teacher["arch"], teacher["params"], teacher["feat_proj_layer_norm"])
        self.teacher = SSLTeacher(model, teacher["arch"], teacher["params"],
                                  normalize_waveform=teacher["normalize_waveform"],
                                  normalize_eps=teacher["normalize_eps"],
                                  feat_proj_layer_norm=teacher["feat_proj_layer_norm"],
                                  spec=path, fingerprint=teacher["fingerprint"])
        self.dim = self.teacher.hidden_size
        self.num_states = self.teacher.num_layers + 1

    @staticmethod
    def complete_config(params: Dict[str, Any], key: str) -> Dict[str, Any]:
        if params.get("teacher") is None:
            params = {**params, "teacher": teacher_architecture(str(params["path"]), key)}
        return params

    def load_pretrained(self) -> None:
        """Copy the weights of the teacher at ``path`` in; they must be the recorded ones."""
        from svmix.teachers import load_teacher

        try:
            source = load_teacher(self.path)
        except SvmixError as e:
            raise SvmixError(f"model.frontend.path: {e}") from None
        found = _describe(source)
        if found != self.architecture:
            differ = sorted(k for k in found if found[k] != self.architecture.get(k))
            raise SvmixError(f"model.frontend.path: the teacher at {self.path} is not the one this config "
                             f"records (differs in {', '.join(differ)}); resolve the config again or restore it")
        self.teacher.model.load_state_dict(source.model.state_dict())

    @property
    def hop(self) -> int:
        return int(self.teacher.frame_shift)

    @property
    def receptive_field(self) -> int:
        return int(self.teacher.receptive_field)

    def num_frames(self, num_samples: int) -> int:
        return self.teacher.num_frames(num_samples)

    def profile_parts(self) -> Dict[str, List[str]]:
        """Which submodules count as which part in svmix.profiling: the teacher's CNN and feature
        projection as the frontend, its Transformer (position embedding, layers) as the encoder."""
        transformer = "teacher.model.encoder.transformer"  # its own forward is not called: name what is
        return {"frontend": ["teacher.model.feature_extractor", "teacher.model.encoder.feature_projection"],
                "encoder": [f"{transformer}.pos_conv_embed", *self.profile_layers(), f"{transformer}.layer_norm"]}

    def profile_layers(self) -> List[str]:
        return [f"teacher.model.encoder.transformer.layers.{i}" for i in range(self.teacher.num_layers)]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.teacher(wav), dim=1)
