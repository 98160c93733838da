"""The speaker model as one module: waveform → frontend (registry ``FRONTENDS``) → encoder
(``ENCODERS``) → hidden-state stack → backend (``BACKENDS``) → speaker embedding.

A student is the ``conv`` frontend + a frame encoder; the baselines of docs/method.md §Baselines
are other frontends: the frozen ``teacher`` (its own stack, with the ``identity`` encoder) and
``fbank`` filterbanks (``identity`` encoder: the backend sees the filterbanks as one state)."""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch
from torch import nn

from svmix.data.audio import SAMPLE_RATE
from svmix.errors import SvmixError
from svmix.registry import BACKENDS, ENCODERS, FRONTENDS

# Model-level defaults; each component's own parameters default to its constructor's (filled in by
# resolve_model_config). Valid ranges: svmix.train.config.SCHEMA.
DEFAULT_MODEL_CONFIG: Dict[str, Any] = {
    "segment_seconds": 3.0,   # training crop and evaluation segment (149 frames)
    "num_eval_segments": 10,  # docs/method.md §Evaluation: 10 segments of 3 s per test utterance
    "hidden": 1024,
    "embed_dim": 192,
    "frontend": {"name": "conv", "channels": 512},
    "encoder": {"name": "svmixer", "num_layers": 5, "group_dim": 128},
    "backend": {"name": "ecapa"},
}


def resolve_model_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """Fill defaults into a (possibly partial) ``model:`` config; the result is what checkpoints store.

    Every parameter of the frontend, encoder and backend is written out with its constructor default
    (a closed config); a frontend section without ``name`` (configs written before the frontend
    registry) is the ``conv`` frontend. ``sample_rate`` is not a setting: audio is always 16 kHz; old configs that
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
        resolved[key] = copy.deepcopy(value)
    frontend = resolved["frontend"]
    if not isinstance(frontend, dict):
        raise SvmixError(f"model.frontend: expected a mapping, got {frontend!r}")
    if frontend.get("name", "conv") == "conv":  # the default frontend's own defaults (e.g. 512 channels)
        frontend = {**DEFAULT_MODEL_CONFIG["frontend"], **frontend}
    resolved["frontend"] = FRONTENDS.resolve(frontend, "model.frontend")
    resolved["encoder"] = ENCODERS.resolve(resolved["encoder"], "model.encoder")
    resolved["backend"] = BACKENDS.resolve(resolved["backend"], "model.backend")
    return resolved


def one_pass(config: Dict[str, Any]) -> bool:
    """Whether a (resolved) model config's encoder embeds a whole utterance in one pass (it declares
    ``whole_utterance``, e.g. ``svmixer_anylen``), rather than the evaluation's fixed-length segments
    (docs/method.md §Evaluation; every other encoder, also the length-agnostic ones, for comparability)."""
    return bool(getattr(ENCODERS.get(config["encoder"]["name"], "model.encoder.name"), "whole_utterance", False))


class SpeakerModel(nn.Module):
    """``pretrained`` loads the weights of pretrained components (the frozen teacher) from where
    the config says they are, as a fresh training run needs; a model whose weights then come from
    a checkpoint is built with ``pretrained=False`` and needs nothing but its config."""

    def __init__(self, config: Dict[str, Any], pretrained: bool = True):
        super().__init__()
        self.config = resolve_model_config(config)
        cfg = self.config
        self.sample_rate = SAMPLE_RATE
        self.segment_samples = int(round(cfg["segment_seconds"] * self.sample_rate))
        self.num_eval_segments = int(cfg["num_eval_segments"])
        self.one_pass = one_pass(cfg)
        if self.one_pass and self.num_eval_segments != 1:
            raise SvmixError(f"model.num_eval_segments={self.num_eval_segments}: the '{cfg['encoder']['name']}' "
                             "encoder embeds a whole utterance in one pass; set it to 1")
        hidden = int(cfg["hidden"])
        self.frontend = FRONTENDS.build(cfg["frontend"], hidden=hidden)
        name = cfg["frontend"]["name"]
        if self.frontend.dim != hidden:
            raise SvmixError(f"model.hidden={hidden}: the '{name}' frontend gives {self.frontend.dim}-dim "
                             f"frames; set model.hidden to {self.frontend.dim}")
        if self.frontend.num_states is not None and cfg["encoder"]["name"] != "identity":
            raise SvmixError(f"model.encoder.name: the '{name}' frontend gives the hidden-state stack itself; "
                             "use the 'identity' encoder")
        if pretrained and hasattr(self.frontend, "load_pretrained"):
            self.frontend.load_pretrained()
        self.seq_len = self.frontend.num_frames(self.segment_samples)
        if self.seq_len < 1:
            raise SvmixError(f"model.segment_seconds={cfg['segment_seconds']}: too short for one frame "
                             f"of the '{name}' frontend")
        self.encoder = ENCODERS.build(cfg["encoder"], hidden=hidden, seq_len=self.seq_len)
        num_states = self.frontend.num_states or self.encoder.num_layers + 1
        self.backend = BACKENDS.build(cfg["backend"], hidden=hidden, num_states=num_states,
                                      embed_dim=int(cfg["embed_dim"]))

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    def hidden_states(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform → (B, L+1, T, H) hidden-state stack."""
        return self.encoder(self.frontend(wav))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform → (B, D) embeddings; N is ``segment_samples`` unless ``one_pass``
        (then any length of at least one frame)."""
        return self.backend(self.hidden_states(wav))


def build_model(config: Dict[str, Any], pretrained: bool = True) -> SpeakerModel:
    return SpeakerModel(config, pretrained=pretrained)
