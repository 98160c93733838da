"""Parameters and MACs per encoder layer and per model part (``svmix-profile``).

MACs are ``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2 for one input (batch 1), which
counts matrix products and convolutions (not norms, activations, pooling or biases) — the
convention of the table in docs/method.md §Layer sizes. Attention products (QKᵀ and AV inside
``scaled_dot_product_attention``) are counted with PyTorch's SDPA formula, also for the CPU
kernel the counter does not know, and are reported separately as ``attention_gmacs``; ``gmacs``
never includes them.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils import flop_counter

from svmix.data.audio import SAMPLE_RATE
from svmix.errors import SvmixError
from svmix.inference.segments import segment_starts
from svmix.models import build_model, resolve_model_config
from svmix.models.encoder import BLOCK_LAYOUTS
from svmix.models.frontend import num_frames
from svmix.registry import ENCODERS

GIGA = 1e9
MODEL_PARTS = ("frontend", "encoder", "backend")  # a student's parts, in order


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
ATTENTION_OPS = {_CPU_SDPA, torch.ops.aten._scaled_dot_product_flash_attention,
                 torch.ops.aten._scaled_dot_product_efficient_attention,
                 torch.ops.aten._scaled_dot_product_cudnn_attention}


class MacCounts:
    """MACs of one forward pass, by module path (``root.child.…``), split into linear and attention."""

    def __init__(self, module: nn.Module, *inputs: torch.Tensor):
        self.root = type(module).__name__
        counter = flop_counter.FlopCounterMode(display=False, custom_mapping={_CPU_SDPA: _sdpa_flops})
        with torch.no_grad(), counter:
            module(*inputs)
        self._counts = counter.get_flop_counts()

    def _flops(self, path: str, attention: bool) -> int:
        key = f"{self.root}.{path}" if path else self.root
        ops = self._counts.get(key, {})
        return sum(n for op, n in ops.items() if (op in ATTENTION_OPS) == attention)

    def gmacs(self, path: str = "") -> float:
        return self._flops(path, attention=False) / 2 / GIGA

    def attention_gmacs(self, path: str = "") -> float:
        return self._flops(path, attention=True) / 2 / GIGA

    def summary(self, module: nn.Module, path: str = "") -> Dict[str, Any]:
        entry = {"params": num_params(module), "gmacs": self.gmacs(path)}
        if self.attention_gmacs(path):
            entry["attention_gmacs"] = self.attention_gmacs(path)
        return entry


    def summary_of(self, model: nn.Module, paths: Sequence[str]) -> Dict[str, Any]:
        """:meth:`summary` of the submodules of ``model`` at ``paths`` taken together (disjoint paths)."""
        entries = [self.summary(model.get_submodule(path), path) for path in paths]
        total = {"params": sum(e["params"] for e in entries), "gmacs": sum(e["gmacs"] for e in entries)}
        attention = sum(e.get("attention_gmacs", 0.0) for e in entries)
        if attention:
            total["attention_gmacs"] = attention
        return total


def _part_paths(model: nn.Module) -> Dict[str, List[str]]:
    """Module paths of each part; a frontend that holds more than a frontend (the frozen teacher,
    whose Transformer is its encoder) says which of its submodules belong to which part."""
    paths = {"frontend": ["frontend"], "encoder": ["encoder"], "backend": ["backend"]}
    own = getattr(model.frontend, "profile_parts", None)
    if own is not None:
        for part, subpaths in own().items():
            paths[part] = [f"frontend.{p}" for p in subpaths] + ([] if part == "frontend" else paths[part])
    return paths


def _layer_paths(model: nn.Module) -> List[str]:
    own = getattr(model.frontend, "profile_layers", None)
    if own is not None:
        return [f"frontend.{p}" for p in own()]
    return [f"encoder.blocks.{i}" for i in range(len(model.encoder.blocks))]


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _accepted(cls: type, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def profile_encoder_layer(name: str, hidden: int = 1024, seq_len: int = 149, group_dim: int = 128,
                          **kw: Any) -> Dict[str, Any]:
    """One layer of encoder ``name``: params, GMACs for one ``seq_len``-frame input, and its parts
    (the layer's direct submodules). ``group_dim`` is ignored by encoders without groups."""
    cls = ENCODERS.get(name)
    options = {**_accepted(cls, {"group_dim": group_dim}), **kw}
    try:
        encoder = cls(hidden=hidden, seq_len=seq_len, num_layers=1, **options)
    except (TypeError, ValueError) as e:
        raise SvmixError(f"cannot build encoder '{name}': {e}") from e
    layer = encoder.blocks[0].eval()
    shape = tuple((1, seq_len, hidden)[i] for i in BLOCK_LAYOUTS[encoder.block_layout])
    counts = MacCounts(layer, torch.randn(shape))
    result = {"encoder": name, "hidden": hidden, "seq_len": seq_len, **options, **counts.summary(layer)}
    result["parts"] = {part: counts.summary(child, part) for part, child in layer.named_children()
                       if num_params(child) or counts.gmacs(part)}
    return result


def profile_model(model_config: Mapping[str, Any], seconds: Optional[float] = 3.0) -> Dict[str, Any]:
    """A whole student for one ``seconds``-long input, by part (frontend, encoder with per-layer
    entries, backend). Fixed-length encoders are built for that length, as they would be trained; a
    one-pass model (``SpeakerModel.one_pass``) keeps its trained segment and takes the longer input;
    ``seconds=None`` keeps the config's ``segment_seconds``. ``evaluation`` is
    :func:`evaluation_cost` for an utterance of that length."""
    config = resolve_model_config(copy.deepcopy(dict(model_config)))
    model = _build(config)
    samples = model.segment_samples
    if seconds is not None and model.one_pass:
        samples = int(round(float(seconds) * SAMPLE_RATE))
    elif seconds is not None:
        config["segment_seconds"] = float(seconds)
        model = _build(config)
        samples = model.segment_samples
    counts = MacCounts(model, torch.randn(1, samples))
    parts = {name: counts.summary_of(model, paths) for name, paths in _part_paths(model).items()}
    parts["encoder"]["layers"] = [counts.summary_of(model, [path]) for path in _layer_paths(model)]
    result = {"frontend": config["frontend"]["name"], "encoder": config["encoder"]["name"],
              "backend": config["backend"]["name"],
              "seconds": samples / SAMPLE_RATE, "frames": model.frontend.num_frames(samples), **counts.summary(model),
              "parts": parts, "evaluation": evaluation_cost(model_config, samples / SAMPLE_RATE)}
    return result


def _build(config: Mapping[str, Any]) -> nn.Module:
    try:
        return build_model(config, pretrained=False).eval()  # sizes only: no weights needed
    except (TypeError, ValueError, KeyError) as e:
        raise SvmixError(f"cannot build the model from its config: {e}") from e


def evaluation_cost(model_config: Mapping[str, Any], seconds: float) -> Dict[str, Any]:
    """MACs to embed one ``seconds``-long utterance as extraction does: a one-pass model runs once
    on the whole utterance; any other runs once per distinct evaluation segment (docs/method.md
    §Evaluation: a 10 s utterance is 10 passes over 3 s, one of 3 s or less is one). Returns the
    passes, the seconds each pass sees, GMACs in all (attention products apart) and per second of audio."""
    model = _build(resolve_model_config(copy.deepcopy(dict(model_config))))
    samples = int(round(float(seconds) * SAMPLE_RATE))
    if model.one_pass:
        passes, pass_samples = 1, samples
    else:
        passes = len(np.unique(segment_starts(samples, model.segment_samples, model.num_eval_segments)))
        pass_samples = model.segment_samples
    counts = MacCounts(model, torch.randn(1, pass_samples))
    gmacs, attention = passes * counts.gmacs(), passes * counts.attention_gmacs()
    return {"seconds": samples / SAMPLE_RATE, "one_pass": bool(model.one_pass), "passes": passes,
            "pass_seconds": pass_samples / SAMPLE_RATE, "gmacs": gmacs, "attention_gmacs": attention,
            "gmacs_per_second": gmacs / (samples / SAMPLE_RATE),
            "attention_gmacs_per_second": attention / (samples / SAMPLE_RATE)}


def _ratio(b: float, a: float) -> Optional[float]:
    return b / a if a else None  # undefined when A has none


def compare_profiles(a: Mapping[str, Any], b: Mapping[str, Any]) -> Dict[str, Dict[str, Optional[float]]]:
    """B/A ratios of params, GMACs and GMACs with attention products, per part and in total,
    for two :func:`profile_model` results (None where A's value is 0)."""
    def entries(result: Mapping[str, Any]) -> Dict[str, Mapping[str, Any]]:
        return {**{part: result["parts"][part] for part in MODEL_PARTS}, "total": result}

    def with_attention(entry: Mapping[str, Any]) -> float:
        return entry["gmacs"] + entry.get("attention_gmacs", 0.0)

    return {part: {"params": _ratio(eb["params"], ea["params"]), "gmacs": _ratio(eb["gmacs"], ea["gmacs"]),
                   "gmacs_with_attention": _ratio(with_attention(eb), with_attention(ea))}
            for (part, ea), eb in zip(entries(a).items(), entries(b).values())}


def encoder_mismatch(ratios: Mapping[str, Mapping[str, Optional[float]]], max_param_diff: Optional[float] = None,
                     max_ratio: Optional[float] = None) -> Optional[str]:
    """Why the encoders of a pair fail a cost check (None when they pass): their params differ by more
    than ``max_param_diff`` (|B/A − 1|), or B's encoder params or GMACs exceed ``max_ratio`` × A's.
    GMACs here exclude the attention products, which only makes a Transformer A look cheaper."""
    encoder = ratios["encoder"]
    params, gmacs = encoder["params"], encoder["gmacs"]
    rounding = 1e-9  # a ratio exactly at the limit passes despite float rounding
    if max_param_diff is not None and (params is None or abs(params - 1) > max_param_diff + rounding):
        return (f"encoder params differ by more than {max_param_diff:g}: B/A = {_show(params)} "
                f"(allowed {1 - max_param_diff:.3f} to {1 + max_param_diff:.3f})")
    if max_ratio is not None:
        for what, value in (("params", params), ("GMACs", gmacs)):
            if value is None or value > max_ratio + rounding:
                return f"encoder {what} B/A = {_show(value)} exceeds {max_ratio:g}"
    return None


def _show(ratio: Optional[float]) -> str:
    return "undefined" if ratio is None else f"{ratio:.3f}"


def frames_for(seconds: float, sample_rate: int = 16000) -> int:
    return num_frames(int(round(seconds * sample_rate)))
