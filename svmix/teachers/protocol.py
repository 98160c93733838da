"""What svmix needs from a teacher: the declared interface of the cache writer, the trainer and
``init_frontend_from_teacher``.

Every teacher source (torchaudio bundle, Hugging Face directory, svmix teacher checkpoint, the mini
teacher) yields an :class:`~svmix.teachers.model.SSLTeacher`, which implements it; another class can
stand in for a teacher by providing the same members. :func:`check_teacher` runs once where a
teacher enters svmix (``load_teacher``, an in-memory teacher given to the trainer) and turns a
missing or ill-typed member into a one-line error.
"""
from __future__ import annotations

from typing import Any, List, Protocol, runtime_checkable

import torch
from torch import nn

from svmix.errors import SvmixError


@runtime_checkable
class Teacher(Protocol):
    spec: str                  # how it was named (--teacher SPEC); recorded in a cache's manifest
    fingerprint: str           # what identifies its weights (checked against a cache)
    hidden_size: int           # H of every hidden state
    num_layers: int            # Transformer layers; hidden states are indexed 0..num_layers (HF indexing)
    frame_shift: int           # samples between frames (320 for wav2vec 2.0-style extractors)
    receptive_field: int       # samples seen by one frame (400)
    normalize_waveform: bool   # whether normalize() standardises the waveform
    model: nn.Module           # the torchaudio Wav2Vec2Model/WavLM module (feature_extractor, encoder)

    def normalize(self, wav: torch.Tensor) -> torch.Tensor:
        """The input normalisation the model was trained with, over whole utterances (B, N)."""

    def hidden_states(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """Hidden states (num_layers + 1 tensors of (B, T, H)) of an already normalised batch (B, N)."""

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples."""

    def __call__(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """normalize() then hidden_states()."""

    def to(self, *args: Any, **kwargs: Any) -> "Teacher":
        ...

    def eval(self) -> "Teacher":
        ...


# the members with their types; positive-integer members are checked for a positive value
_ATTRIBUTES = {"spec": str, "fingerprint": str, "hidden_size": int, "num_layers": int, "frame_shift": int,
               "receptive_field": int, "normalize_waveform": bool, "model": nn.Module}
_METHODS = ("normalize", "hidden_states", "num_frames", "__call__", "to", "eval")


def check_teacher(teacher: Any, where: str = "teacher") -> Teacher:
    """``teacher`` if it implements :class:`Teacher`, else a one-line error naming what is missing."""
    missing = [name for name in (*_ATTRIBUTES, *_METHODS) if not hasattr(teacher, name)]
    if missing:
        raise SvmixError(f"{where}: {type(teacher).__name__} is not a teacher (missing {', '.join(missing)}; "
                         "see svmix.teachers.protocol.Teacher)")
    for name, kind in _ATTRIBUTES.items():
        value = getattr(teacher, name)
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SvmixError(f"{where}: teacher {name}={value!r}, expected a positive integer")
        elif not isinstance(value, kind):
            raise SvmixError(f"{where}: teacher {name} is a {type(value).__name__}, expected {kind.__name__}")
    bad = [name for name in _METHODS if not callable(getattr(teacher, name))]
    if bad:
        raise SvmixError(f"{where}: teacher {', '.join(bad)} not callable")
    return teacher
