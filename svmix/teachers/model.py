"""A frozen SSL teacher (WavLM / HuBERT / wav2vec 2.0) on top of torchaudio's model classes.

``SSLTeacher(wav)`` returns the hidden states exactly as Hugging Face's ``output_hidden_states``
does: entry 0 is the input of the first Transformer layer, entry ``i`` the output of layer ``i``.
Post-LN ("Base") models apply the encoder LayerNorm before the first layer (so entry 0 is normed);
pre-LN ("stable layer norm", "Large") models apply it after the last layer, replacing the last entry.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

DEFAULT_CONV_LAYERS = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


def build_torchaudio_model(arch: str, params: Dict[str, Any], feat_proj_layer_norm: bool = True) -> nn.Module:
    """Instantiate torchaudio's ``wavlm_model`` (arch "wavlm") or ``wav2vec2_model`` (HuBERT, wav2vec 2.0).

    ``feat_proj_layer_norm=False`` drops the feature-projection LayerNorm (some HuBERT configs).
    ``params["feature_extractor"] == "fbank"`` (svmix's filterbank teacher, svmix.teachers.hf_format)
    replaces the conv feature extractor with stacked log-mel filterbanks.
    """
    from torchaudio.models import wav2vec2_model, wavlm_model

    builder = wavlm_model if arch == "wavlm" else wav2vec2_model
    kwargs = {k: v for k, v in params.items() if k != "feature_extractor"}
    model = builder(**{"aux_num_out": None, **kwargs})
    if params.get("feature_extractor", "conv") == "fbank":
        from svmix.models.fbank import TeacherFbankExtractor

        model.feature_extractor = TeacherFbankExtractor()
    if not feat_proj_layer_norm:
        model.encoder.feature_projection.layer_norm = nn.Identity()
    return model


def frame_geometry(params: Dict[str, Any]) -> Tuple[int, int]:
    """(hop, receptive field) in samples of the feature extractor that builder ``params`` describe."""
    conv_layers = params.get("extractor_conv_layer_config") or DEFAULT_CONV_LAYERS
    field, jump = 1, 1
    for _, kernel, stride in conv_layers:
        field += (kernel - 1) * jump
        jump *= stride
    return jump, field


def num_frames(num_samples: int, hop: int, field: int) -> int:
    return 0 if num_samples < field else (num_samples - field) // hop + 1


class SSLTeacher(nn.Module):
    """Frozen, always in eval mode, gradients off; see the module docstring for the layer indexing.

    ``params`` are the keyword arguments of torchaudio's model builder; ``arch`` is "wavlm" or
    "wav2vec2" (HuBERT shares the wav2vec 2.0 architecture). ``normalize_waveform`` applies the
    per-utterance zero-mean/unit-variance normalisation the model was trained with.
    """

    def __init__(self, model: nn.Module, arch: str, params: Dict[str, Any], *,
                 normalize_waveform: bool = False, normalize_eps: float = 1e-7,
                 feat_proj_layer_norm: bool = True, spec: str = "", fingerprint: str = ""):
        super().__init__()
        self.model = model
        self.arch = arch
        self.params = dict(params)
        self.normalize_waveform = normalize_waveform
        self.normalize_eps = normalize_eps
        self.feat_proj_layer_norm = feat_proj_layer_norm
        self.spec = spec
        self.fingerprint = fingerprint
        self.post_ln = not params["encoder_layer_norm_first"]
        self.frame_shift, self.receptive_field = frame_geometry(params)
        self.num_layers = len(model.encoder.transformer.layers)
        self.hidden_size = int(params["encoder_embed_dim"])
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "SSLTeacher":
        """A teacher never trains: ``.train()`` from a surrounding module keeps it in eval mode."""
        return super().train(False)

    def normalize(self, wav: torch.Tensor) -> torch.Tensor:
        if not self.normalize_waveform:
            return wav
        mean = wav.mean(dim=-1, keepdim=True)
        var = wav.var(dim=-1, unbiased=False, keepdim=True)
        return (wav - mean) / torch.sqrt(var + self.normalize_eps)

    @torch.no_grad()
    def hidden_states(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """Hidden states of an already normalised waveform batch (B, N) → list of (B, T, H)."""
        return hf_hidden_states(self.model, wav, self.post_ln)

    def forward(self, wav: torch.Tensor) -> List[torch.Tensor]:
        if wav.dim() != 2:
            raise ValueError(f"teacher input must be (batch, samples), got shape {tuple(wav.shape)}")
        return self.hidden_states(self.normalize(wav.float()))

    def num_frames(self, num_samples: int) -> int:
        return num_frames(num_samples, self.frame_shift, self.receptive_field)

    def checkpoint(self) -> Dict[str, Any]:
        """A self-describing dict that :func:`svmix.teachers.load_teacher` reads back (svmix source)."""
        return {
            "svmix_teacher": 1,
            "arch": self.arch,
            "params": self.params,
            "normalize_waveform": self.normalize_waveform,
            "normalize_eps": self.normalize_eps,
            "feat_proj_layer_norm": self.feat_proj_layer_norm,
            "spec": self.spec,
            "state_dict": self.model.state_dict(),
        }


def hf_hidden_states(model: nn.Module, wav: torch.Tensor, post_ln: bool, mask: Optional[torch.Tensor] = None,
                     mask_embedding: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
    """Run a torchaudio ``Wav2Vec2Model`` and collect hidden states with Hugging Face indexing.

    ``mask`` (B, T) bool replaces those projected frames with ``mask_embedding`` (H,) before the
    Transformer, as masked-prediction pretraining does (HuBERT, WavLM).
    """
    features, _ = model.feature_extractor(wav, None)
    x = model.encoder.feature_projection(features)
    if mask is not None:
        x = torch.where(mask[..., None], mask_embedding.to(x.dtype), x)
    transformer = model.encoder.transformer
    x = x + transformer.pos_conv_embed(x)
    if post_ln:
        x = transformer.layer_norm(x)
    x = transformer.dropout(x)
    states = [x]
    position_bias = None
    for layer in transformer.layers:
        x, position_bias = layer(x, None, position_bias=position_bias)
        states.append(x)
    if not post_ln:
        states[-1] = transformer.layer_norm(x)
    return states
