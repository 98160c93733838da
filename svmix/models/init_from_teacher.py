"""Initialise the student's conv frontend and feature projection from a teacher (DistilHuBERT style)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, List, Optional, Tuple

import torch
from torch import nn

if TYPE_CHECKING:
    from svmix.teachers.protocol import Teacher


def _module_pairs(frontend: nn.Module, teacher: nn.Module) -> Iterator[Tuple[str, nn.Module, Optional[nn.Module]]]:
    teacher_convs = teacher.feature_extractor.conv_layers
    for i, layer in enumerate(frontend.feature_extractor.conv_layers):
        other = teacher_convs[i] if i < len(teacher_convs) else None
        yield f"feature_extractor.conv_layers.{i}.conv", layer.conv, getattr(other, "conv", None)
        yield f"feature_extractor.conv_layers.{i}.layer_norm", layer.layer_norm, getattr(other, "layer_norm", None)
    projection = teacher.encoder.feature_projection
    yield "feature_projection.layer_norm", frontend.feature_projection.layer_norm, projection.layer_norm
    yield "feature_projection.projection", frontend.feature_projection.projection, projection.projection


@torch.no_grad()
def init_frontend_from_teacher(model: nn.Module, teacher: "Teacher") -> List[str]:
    """Copy the teacher's frontend and feature-projection tensors into ``model`` where they fit.

    ``model`` is a ``SpeakerModel`` (or its ``Frontend``); ``teacher`` implements
    :class:`svmix.teachers.protocol.Teacher`, whose ``model`` is a torchaudio ``Wav2Vec2Model``-like
    module (``.feature_extractor.conv_layers[i].conv/.layer_norm``,
    ``.encoder.feature_projection.layer_norm/.projection``). A tensor is copied only when the
    modules are of the same kind (a teacher's per-frame LayerNorm never fills the student's
    GroupNorm) and the shapes match; a teacher conv bias the student lacks is skipped. Returns the
    copied parameter names relative to ``model``.
    """
    from svmix.errors import SvmixError
    from svmix.teachers.protocol import check_teacher

    teacher_model = check_teacher(teacher).model
    prefix = "frontend." if hasattr(model, "frontend") else ""
    frontend = model.frontend if prefix else model
    if not hasattr(frontend, "feature_extractor"):
        name = getattr(model, "config", {}).get("frontend", {}).get("name", type(frontend).__name__)
        raise SvmixError(f"train.init_frontend_from_teacher: the '{name}' frontend has no waveform convolutions "
                         "to initialise from the teacher's; set it to false")
    if not hasattr(teacher_model.feature_extractor, "conv_layers"):
        raise SvmixError("train.init_frontend_from_teacher: the teacher has no waveform convolutions "
                         f"(its feature extractor is {type(teacher_model.feature_extractor).__name__}); set it to false")
    copied = []
    for name, student_module, teacher_module in _module_pairs(frontend, teacher_model):
        if student_module is None or teacher_module is None or not isinstance(teacher_module, type(student_module)):
            continue
        for param_name, param in student_module.named_parameters(recurse=False):
            source = getattr(teacher_module, param_name, None)
            if isinstance(source, torch.Tensor) and source.shape == param.shape:
                param.copy_(source)
                copied.append(f"{prefix}{name}.{param_name}")
    return copied
