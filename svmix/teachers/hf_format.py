"""Hugging Face-format SSL model directories (``config.json`` + weights) without ``transformers``.

Reading maps the HF config onto torchaudio builder parameters and renames the HF parameter names
onto torchaudio's module tree; writing (used by the mini teacher) does the inverse for WavLM.
Supported ``model_type`` values are the entries of ``HF_MODEL_TYPES``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

from svmix.errors import SvmixError
from svmix.registry import Registry
from svmix.teachers.model import SSLTeacher, build_torchaudio_model

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
BASE_MODEL_PREFIXES = ("wavlm.", "hubert.", "wav2vec2.")

# HF config defaults (transformers' config classes) for keys a config.json may omit.
HF_DEFAULTS: Dict[str, Any] = {
    "feat_extract_norm": "group", "feat_extract_activation": "gelu", "hidden_act": "gelu",
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False, "layer_norm_eps": 1e-5, "feat_proj_layer_norm": True,
    "conv_pos_batch_norm": False, "add_adapter": False, "num_buckets": 320, "max_bucket_distance": 800,
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
}

HF_MODEL_TYPES = Registry("Hugging Face model_type")


@HF_MODEL_TYPES.register("wav2vec2")
@HF_MODEL_TYPES.register("hubert")
def _wav2vec2_params(cfg: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    return "wav2vec2", _common_params(cfg)


@HF_MODEL_TYPES.register("wavlm")
def _wavlm_params(cfg: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    params = _common_params(cfg)
    params.update(encoder_num_buckets=int(cfg["num_buckets"]), encoder_max_distance=int(cfg["max_bucket_distance"]))
    return "wavlm", params


# svmix's one extension of the HF layout: ``"svmix_feature_extractor": "fbank"`` in config.json puts
# 80 mean-normalised log-mel filterbanks, two 10 ms frames stacked (svmix.models.fbank.StackedFbank),
# in the place of the conv feature extractor. Its geometry is written as one "conv layer" of 160
# channels, kernel 560, stride 320 (the frames' dimension, span and hop), so frame counts, the
# feature projection's input size and frame_shift/receptive_field follow from the usual keys.
FEATURE_EXTRACTORS = ("conv", "fbank")
FBANK_GEOMETRY = [[160, 560, 320]]


def _common_params(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """torchaudio builder kwargs (plus svmix's ``feature_extractor`` when it is not the conv stack);
    dropouts are 0 because a teacher only ever runs in eval mode."""
    fbank = cfg.get("svmix_feature_extractor", "conv") == "fbank"
    conv = [list(t) for t in zip(cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"])]
    return {
        **({"feature_extractor": "fbank"} if fbank else {}),
        "extractor_mode": f"{cfg['feat_extract_norm']}_norm",
        "extractor_conv_layer_config": FBANK_GEOMETRY if fbank else conv,
        "extractor_conv_bias": bool(cfg["conv_bias"]),
        "encoder_embed_dim": int(cfg["hidden_size"]),
        "encoder_projection_dropout": 0.0,
        "encoder_pos_conv_kernel": int(cfg["num_conv_pos_embeddings"]),
        "encoder_pos_conv_groups": int(cfg["num_conv_pos_embedding_groups"]),
        "encoder_num_layers": int(cfg["num_hidden_layers"]),
        "encoder_num_heads": int(cfg["num_attention_heads"]),
        "encoder_attention_dropout": 0.0,
        "encoder_ff_interm_features": int(cfg["intermediate_size"]),
        "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.0,
        "encoder_layer_norm_first": bool(cfg["do_stable_layer_norm"]),
        "encoder_layer_drop": 0.0,
    }


def _check_supported(cfg: Dict[str, Any], where: str) -> None:
    unsupported = {
        "hidden_act": cfg["hidden_act"] != "gelu",
        "feat_extract_activation": cfg["feat_extract_activation"] != "gelu",
        "feat_extract_norm": cfg["feat_extract_norm"] not in ("group", "layer"),
        "layer_norm_eps": abs(float(cfg["layer_norm_eps"]) - 1e-5) > 1e-12,
        "conv_pos_batch_norm": bool(cfg["conv_pos_batch_norm"]),
        "add_adapter": bool(cfg["add_adapter"]),
        "svmix_feature_extractor": cfg.get("svmix_feature_extractor", "conv") not in FEATURE_EXTRACTORS,
    }
    bad = [f"{key}={cfg.get(key)!r}" for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise SvmixError(f"{where}: unsupported teacher configuration ({', '.join(bad)})")


# HF name pattern -> torchaudio name template; applied in order, first match wins.
_HF_TO_TORCHAUDIO: List[Tuple[str, str]] = [
    (r"^feature_extractor\.(.*)$", r"feature_extractor.\1"),
    (r"^feature_projection\.(.*)$", r"encoder.feature_projection.\1"),
    (r"^encoder\.pos_conv_embed\.conv\.weight_g$", r"encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv_embed\.conv\.weight_v$", r"encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.(pos_conv_embed|layer_norm|layers)\.(.*)$", r"encoder.transformer.\1.\2"),
]
_WAVLM_QKV = re.compile(r"^(encoder\.transformer\.layers\.\d+\.attention)\.([qkv])_proj\.(weight|bias)$")
_WAVLM_OUT = re.compile(r"^(encoder\.transformer\.layers\.\d+\.attention)\.out_proj\.(weight|bias)$")


def hf_to_torchaudio_state(state: Dict[str, torch.Tensor], arch: str) -> Dict[str, torch.Tensor]:
    """Rename an HF state dict (base model or with a task head) onto torchaudio's module names."""
    prefixed = [k for k in state if k.startswith(BASE_MODEL_PREFIXES)]
    if prefixed:  # a checkpoint with a head (e.g. ...ForCTC): keep only the base model
        prefix = prefixed[0].split(".", 1)[0] + "."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, template in _HF_TO_TORCHAUDIO:
            if re.match(pattern, key):
                out[re.sub(pattern, template, key)] = value
                break  # keys that match nothing (masked_spec_embed, quantizer, ...) are not needed
    if arch == "wavlm":
        out = _fuse_wavlm_qkv(out)
    return out


def _fuse_wavlm_qkv(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchaudio's WavLM attention keeps q/k/v in one ``nn.MultiheadAttention`` in_proj."""
    out, parts = {}, {}
    for key, value in state.items():
        qkv, proj = _WAVLM_QKV.match(key), _WAVLM_OUT.match(key)
        if qkv:
            parts.setdefault((qkv.group(1), qkv.group(3)), {})[qkv.group(2)] = value
        elif proj:
            out[f"{proj.group(1)}.attention.out_proj.{proj.group(2)}"] = value
        else:
            out[key] = value
    for (prefix, kind), qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            continue  # reported as missing by load_state_dict
        out[f"{prefix}.attention.in_proj_{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    return out


def torchaudio_to_hf_wavlm_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`hf_to_torchaudio_state` for WavLM (HF ``WavLMModel`` parameter names)."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("encoder.feature_projection."):
            out[key[len("encoder."):]] = value
            continue
        if key.startswith("encoder.transformer."):
            key = "encoder." + key[len("encoder.transformer."):]
        fused = re.match(r"^(encoder\.layers\.\d+\.attention)\.attention\.in_proj_(weight|bias)$", key)
        if fused:
            for name, chunk in zip("qkv", value.chunk(3)):
                out[f"{fused.group(1)}.{name}_proj.{fused.group(2)}"] = chunk.contiguous()
            continue
        out[key.replace(".attention.attention.out_proj.", ".attention.out_proj.")] = value
    return out


def read_hf_config(directory: Path) -> Dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise SvmixError(f"{directory}: not a Hugging Face model directory (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SvmixError(f"{path}: not valid JSON ({e})") from None
    if "model_type" not in raw:
        raise SvmixError(f"{path}: no 'model_type'; expected one of {', '.join(HF_MODEL_TYPES.names())}")
    return {**HF_DEFAULTS, **raw}


def weights_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise SvmixError(f"{directory}: no weights file (expected one of {', '.join(WEIGHT_FILES)})")


def _read_weights(path: Path) -> Dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated weight files raise many types
        raise SvmixError(f"{path}: cannot read weights ({' '.join(str(e).split())[:200]})") from None


def waveform_normalization(directory: Path, cfg: Dict[str, Any]) -> bool:
    """``do_normalize`` from preprocessor_config.json; without one, HF's rule of thumb
    (models with LayerNorm in the conv feature extractor expect normalised input)."""
    pre = directory / "preprocessor_config.json"
    if pre.is_file():
        return bool(json.loads(pre.read_text()).get("do_normalize", False))
    return cfg["feat_extract_norm"] == "layer"


def load_hf_teacher(directory: Path, spec: str = "", fingerprint: str = "") -> SSLTeacher:
    cfg = read_hf_config(directory)
    _check_supported(cfg, str(directory / "config.json"))
    to_params: Callable = HF_MODEL_TYPES.get(cfg["model_type"])
    arch, params = to_params(cfg)
    model = build_torchaudio_model(arch, params, feat_proj_layer_norm=bool(cfg["feat_proj_layer_norm"]))
    path = weights_file(directory)
    state = hf_to_torchaudio_state(_read_weights(path), arch)
    load_state_strict(model, state, str(path))
    return SSLTeacher(model, arch, params, normalize_waveform=waveform_normalization(directory, cfg),
                      normalize_eps=1e-7, feat_proj_layer_norm=bool(cfg["feat_proj_layer_norm"]),
                      spec=spec, fingerprint=fingerprint)


def load_state_strict(model: torch.nn.Module, state: Dict[str, torch.Tensor], where: str) -> None:
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise SvmixError(f"{where}: weights do not match the configuration "
                         f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SvmixError(f"{where}: weights do not match the configuration ({' '.join(str(e).split())[:300]})") from None


def _key_mismatch(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Tuple[List[str], List[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def hf_wavlm_config(params: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    """An HF ``WavLMConfig``-style dict for torchaudio WavLM builder ``params`` (inverse of ``_wavlm_params``)."""
    conv = params["extractor_conv_layer_config"]
    return {
        "model_type": "wavlm",
        "architectures": ["WavLMModel"],
        "feat_extract_norm": params["extractor_mode"].replace("_norm", ""),
        "feat_extract_activation": "gelu",
        "hidden_act": "gelu",
        "conv_dim": [c[0] for c in conv],
        "conv_kernel": [c[1] for c in conv],
        "conv_stride": [c[2] for c in conv],
        "num_feat_extract_layers": len(conv),
        "conv_bias": params["extractor_conv_bias"],
        "hidden_size": params["encoder_embed_dim"],
        "num_hidden_layers": params["encoder_num_layers"],
        "num_attention_heads": params["encoder_num_heads"],
        "intermediate_size": params["encoder_ff_interm_features"],
        "num_conv_pos_embeddings": params["encoder_pos_conv_kernel"],
        "num_conv_pos_embedding_groups": params["encoder_pos_conv_groups"],
        "num_buckets": params["encoder_num_buckets"],
        "max_bucket_distance": params["encoder_max_distance"],
        "do_stable_layer_norm": params["encoder_layer_norm_first"],
        "layer_norm_eps": 1e-5,
        "hidden_dropout": params["encoder_dropout"],
        "attention_dropout": params["encoder_attention_dropout"],
        "activation_dropout": params["encoder_ff_interm_dropout"],
        "feat_proj_dropout": params["encoder_projection_dropout"],
        "layerdrop": params["encoder_layer_drop"],
        "apply_spec_augment": False,
        **({"svmix_feature_extractor": params["feature_extractor"]} if "feature_extractor" in params else {}),
        **extra,
    }


def save_hf_wavlm(model: torch.nn.Module, params: Dict[str, Any], directory: Path,
                  do_normalize: bool = False, extra_config: Dict[str, Any] = None) -> None:
    """Write a torchaudio WavLM as an HF directory: config.json, model.safetensors, preprocessor_config.json."""
    from safetensors.torch import save_file

    from svmix.utils.fileio import atomic_path, write_json

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in torchaudio_to_hf_wavlm_state(model.state_dict()).items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(directory / "preprocessor_config.json", {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": 16000,
        "padding_value": 0.0, "do_normalize": do_normalize, "return_attention_mask": True})
    write_json(directory / "config.json", hf_wavlm_config(params, **(extra_config or {})))
