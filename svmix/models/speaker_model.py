"""The student as one module: waveform → hidden-state stack → speaker embedding."""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch
from torch import nn

from svmix.data.audio import SAMPLE_RATE
from svmix.errors import SvmixError
from svmix.models.frontend import Frontend
from svmix.registry import BACKENDS, ENCODERS, constructor_defaults, fill_defaults

# Model-level defaults; each component's own parameters default to its constructor's (filled in by
# resolve_model_config). Valid ranges: svmix.train.config.SCHEMA.
DEFAULT_MODEL_CONFIG: Dict[str, Any] = {
    "segment_seconds": 3.0,   # training crop and evaluation segment (149 frames)
    "num_eval_segments": 10,  # docs/method.md §Evaluation: 10 segments of 3 s per test utterance
    "hidden": 1024,
    "embed_dim": 192,
    "frontend": {"channels": 512},
    "encoder": {"name": "svmixer", "num_layers": 5, "group_dim": 128},
    "backend": {"name": "ecapa"},
}
FRONTEND_PROVIDED = ("hidden",)  # Frontend arguments that come from the model config's top level


def resolve_model_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """Fill defaults into a (possibly partial) ``model:`` config; the result is what checkpoints store.

    Every parameter of the frontend, encoder and backend is written out with its constructor default
    (a closed config). ``sample_rate`` is not a setting: audio is always 16 kHz; old configs that
    carry ``sample_rate: 16000`` still load, any other value is an error."""
    config = dict(config or {})
    if "sample_rate" in config:
        rate = config.pop("sample_rate")
        if rate != SAMPLE_RATE:
            raise SvmixError(f"model.sample_rate={rate!r}: svmix models run on {SAMPLE_RATE} Hz audio only "
                             "(input is resampled on reading); remove the key")
    unknown = sorted(set(config) - set(DEFAULT_MODEL_CONFIG))
    if unknown:
        raise SvmixError(f"model.{unknown[0]}: unknown model config key; known: {', '.join(DEFAULT_MODEL_CONFIG)}")
    resolved = copy.deepcopy(DEFAULT_MODEL_CONFIG)
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(resolved.get(key), dict) and key in ("frontend",):
            resolved[key] = {**resolved[key], **value}
        else:
            resolved[key] = copy.deepcopy(value)
    if not isinstance(resolved["frontend"], dict):
        raise SvmixError(f"model.frontend: expected a mapping, got {resolved['frontend']!r}")
    resolved["frontend"] = fill_defaults(resolved["frontend"], constructor_defaults(Frontend, FRONTEND_PROVIDED),
                                         "model.frontend", "the frontend")
    resolved["encoder"] = ENCODERS.resolve(resolved["encoder"], "model.encoder")
    resolved["backend"] = BACKENDS.resolve(resolved["backend"], "model.backend")
    return resolved


class SpeakerModel(nn.Module):
    def __init__(self, config: Dict[str, Any]):
        super().__init__()
        self.config = resolve_model_config(config)
        cfg = self.config
        self.sample_rate = SAMPLE_RATE
        self.segment_samples = int(round(cfg["segment_seconds"] * self.sample_rate))
        self.num_eval_segments = int(cfg["num_eval_segments"])
        hidden = int(cfg["hidden"])
        self.frontend = Frontend(hidden, **cfg["frontend"])
        self.seq_len = self.frontend.num_frames(self.segment_samples)
        self.encoder = ENCODERS.build(cfg["encoder"], hidden=hidden, seq_len=self.seq_len)
        self.backend = BACKENDS.build(cfg["backend"], hidden=hidden, num_states=self.encoder.num_layers + 1,
                                      embed_dim=int(cfg["embed_dim"]))

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    def hidden_states(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform → (B, L+1, T, H) hidden-state stack."""
        return self.encoder(self.frontend(wav))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, segment_samples) waveform → (B, D) embeddings."""
        return self.backend(self.hidden_states(wav))


def build_model(config: Dict[str, Any]) -> SpeakerModel:
    return SpeakerModel(config)
