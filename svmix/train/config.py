"""Training configuration: overrides, closed resolution, ranges (the YAML reader, the merge and
model-config includes are in :mod:`svmix.yaml_config`).

A training YAML has a ``model:`` and a ``train:`` section. The model may be embedded
(``model: {...}``) or included with ``model_config: PATH`` (a YAML file whose content is a model
config, or has a top-level ``model:`` key, or includes a base model YAML of its own); keys under an
embedded ``model:`` then override the included ones. A relative ``model_config`` path is looked up as given (from the working directory)
and then next to the training config. ``--override key.sub=value`` (YAML-parsed value) is applied
before the include is resolved, so ``--override model_config=conf/model/transformer_mini.yaml``
swaps the student.

Resolution is *closed*: every value that can change a result is written out, the model's and each
registry entry's (optimiser, scheduler, losses) from its constructor signature, the augmentation's
from ``DEFAULT_AUGMENT_CONFIG``, so ``EXP/config.yaml`` and the checkpoints record what a run
used. Then :func:`validate` checks the whole resolved config against :data:`SCHEMA`, the one table
of the valid type and range of every key, before any work starts.

Old configs still load: ``train.kd.type`` is the old name of ``train.kd.name``, and
``model.sample_rate: 16000`` is accepted and dropped (audio is always 16 kHz).
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import yaml

from svmix.errors import SvmixError
from svmix.models import resolve_model_config
from svmix.registry import CLASSIFICATION_LOSSES, KD_LOSSES
from svmix.teachers.hf_format import FEATURE_EXTRACTORS
from svmix.train.augment import AUGMENTATIONS, DEFAULT_AUGMENT_CONFIG
from svmix.train.objective import KD_TARGET_NORMS, KD_TRAINER_KEYS, kd_loss_params
from svmix.train.optim import OPTIMIZERS, SCHEDULERS
from svmix.yaml_config import find_include, merge, read_model_config, read_yaml  # noqa: F401 (re-exported)

DEFAULT_TRAIN_CONFIG: Dict[str, Any] = {
    "seed": 4221,
    "batch_size": 128,            # global (micro-)batch, split evenly over DDP ranks
    "accum_grad": 1,              # micro-batches of batch_size per optimiser step (effective batch: product)
    "max_steps": None,            # stop after this many optimiser steps ...
    "epochs": None,               # ... or after this many passes (one of the two is required)
    "optimizer": {"name": "adamw", "lr": 2.0e-4, "weight_decay": 2.0e-5},
    "optimizer_switch": None,     # {"at_step": N, "optimizer": {...}}: the released AdamW → SGD switch
    "scheduler": {"name": "plateau", "factor": 0.5, "patience": 5},
    "early_stopping": {"patience": 10},  # in validations without improvement; null disables
    "grad_clip": 10.0,            # max gradient norm; null disables
    "amp": False,                 # mixed precision (CUDA only)
    "init_frontend_from_teacher": False,  # copy the teacher's conv frontend where shapes match (DistilHuBERT)
    # layers null: the last teacher layer; target_norm null: raw teacher states (the paper)
    "kd": {"name": "last_mse", "layers": None, "lambda": 1.0, "target_norm": None},
    # KD on unlabelled audio (beyond the paper): {"lambda": w, "batch_size": n} adds w·KD on a batch of n
    # crops of svmix-train --kd-data per step, beside the labelled batch; null: off (docs/method.md §KD on unlabelled audio)
    "kd_unlabelled": None,
    "aam": {"name": "aam_topk", "margin": 0.2, "scale": 30.0, "top_k": 5, "negative_margin": 0.1,
            "impostor_weight": 1.0, "class_weighted": True},
    "augment": {"p": 0.8},        # filled from svmix.train.augment.DEFAULT_AUGMENT_CONFIG; null disables
    "speaker_balanced": False,    # sample a speaker uniformly, then one of its utterances
    "preload_audio": False,       # keep all training audio in RAM (small corpora)
    "val_every": 2000,            # steps between validations (and checkpoints); "epoch": once per epoch
    "val_segments": 10,           # 3 s segments per validation utterance (docs/method.md §Evaluation: 10)
    "val_batch_size": 32,
    "checkpoint_every": None,     # default: val_every
    "keep_best": 5,               # best-by-validation-EER model checkpoints kept
    "average": 1,                 # EXP/model.pt = average of this many best (1: the best checkpoint)
    "log_every": 50,
    "num_workers": 2,
    "threads": None,              # CPU threads of this process (torch.set_num_threads); null: torch's default.
                                  # CPU results depend on it (reduction order), so configs that must reproduce pin it
    "find_unused_parameters": False,
    "crop_seconds": None,         # training crop length; null: the model's segment_seconds (fixed for SV-Mixer)
    "margin_ramp": None,          # {"start": m0, "steps": N}: AAM margin m0 -> train.aam.margin over N steps (LMFT)
}


# ---------------------------------------------------------------- reading and merging
# The one YAML reader and the one merge live in svmix.yaml_config (light: the recipes import it).


def apply_overrides(config: Dict[str, Any], overrides: Union[Sequence[str], Mapping[str, Any]]) -> Dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML: ``0.5``, ``true``, ``[1,2]``) or a
    mapping ``{"key.sub": value}``."""
    config = copy.deepcopy(config)
    if isinstance(overrides, Mapping):
        items = [(str(k), v, f"{k}={v!r}") for k, v in overrides.items()]
    else:
        items = []
        for item in overrides or ():
            if "=" not in item:
                raise SvmixError(f"override '{item}' is not of the form key.sub=value")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            items.append((key, value, item))
    for key, value, item in items:
        node = config
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise SvmixError(f"override '{item}': '{part}' is not a section")
            node = node[part]
        node[parts[-1]] = value
    return config


# ---------------------------------------------------------------- schema: type and range of every key
def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


@dataclass(frozen=True)
class Num:
    """An int (``kind=int``; bools are not ints here) or a finite number in [lo, hi] (ends open when
    asked); ``null`` allows None, ``words`` allows literal strings (e.g. ``"epoch"``)."""
    kind: type
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False
    words: Tuple[str, ...] = ()

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.null
        if isinstance(value, str):
            return value in self.words
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        text = f"{what} in {'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}{')' if self.hi_open else ']'}"
        return text + "".join(f" or '{w}'" for w in self.words) + (" or null" if self.null else "")


@dataclass(frozen=True)
class Flag:
    null: bool = False

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool) or (value is None and self.null)

    def describe(self) -> str:
        return "true or false" + (" or null" if self.null else "")


@dataclass(frozen=True)
class Choice:
    options: Tuple[str, ...]
    null: bool = False

    def ok(self, value: Any) -> bool:
        return value in self.options or (value is None and self.null)

    def describe(self) -> str:
        return "one of " + ", ".join(self.options) + (" or null" if self.null else "")


@dataclass(frozen=True)
class Items:
    """A non-empty list of ``item`` values; ``length`` fixes its length, ``ascending`` asks lo <= hi
    (ranges), ``scalar`` also accepts one bare item, ``null`` accepts None."""
    item: Union[Num, Choice, "Items"]  # Items of Items: a list of fixed-length rows
    length: Optional[int] = None
    ascending: bool = False
    scalar: bool = False
    null: bool = False

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.null
        if self.scalar and not isinstance(value, list):
            return self.item.ok(value)
        if not isinstance(value, list) or not value or (self.length is not None and len(value) != self.length):
            return False
        if not all(self.item.ok(v) for v in value):
            return False
        return not self.ascending or all(a <= b for a, b in zip(value, value[1:]))

    def describe(self) -> str:
        count = f"{self.length} values" if self.length else "a non-empty list of values"
        text = f"{'a list of ' if self.length else ''}{count}, each {self.item.describe()}"
        if self.ascending:
            text += ", in ascending order"
        if self.scalar:
            text = f"{self.item.describe()}, or {text}"
        return text + (" or null" if self.null else "")


@dataclass(frozen=True)
class Section:
    """A mapping (validated key by key); ``null`` allows None (the feature is off)."""
    null: bool = False

    def ok(self, value: Any) -> bool:
        return isinstance(value, dict) or (value is None and self.null)

    def describe(self) -> str:
        return "a mapping" + (" or null" if self.null else "")


@dataclass(frozen=True)
class Text:
    """A non-empty string (a path, a fingerprint)."""

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value)

    def describe(self) -> str:
        return "a non-empty string"


@dataclass(frozen=True)
class Name:
    """The ``name`` of a registry entry (its registry checks the value while resolving)."""
    null: bool = False

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) or (value is None and self.null)

    def describe(self) -> str:
        return "a registered name" + (" or null" if self.null else "")


Rule = Union[Num, Flag, Choice, Items, Section, Text, Name]

BIG = 10 ** 9           # step counts and intervals
DIM = 1 << 20           # layer widths
UNIT = Num(float, 0.0, 1.0)
DROPOUT = Num(float, 0.0, 1.0, hi_open=True)
MARGIN = Num(float, 0.0, 1.5)             # radians, below pi/2
SNR = Items(Num(float, -100.0, 100.0), length=2, ascending=True)

# Every key of a resolved config (model, train, augmentation, and every registry entry's parameters)
# with its valid type and range. Registry parameters share one rule per section and name.
SCHEMA: Dict[str, Rule] = {
    # model
    "model": Section(),
    "model.segment_seconds": Num(float, 0.1, 600.0),
    "model.num_eval_segments": Num(int, 1, 1000),
    "model.hidden": Num(int, 1, DIM),
    "model.embed_dim": Num(int, 1, DIM),
    "model.frontend": Section(),
    "model.frontend.name": Name(),
    "model.frontend.channels": Items(Num(int, 1, DIM), scalar=True),     # conv
    "model.frontend.kernels": Items(Num(int, 1, 1024)),
    "model.frontend.strides": Items(Num(int, 1, 1024)),
    "model.frontend.dropout": DROPOUT,
    "model.frontend.num_mel_bins": Num(int, 1, 1024),                    # fbank
    "model.frontend.frame_length_ms": Num(float, 0.2, 1000.0),
    "model.frontend.frame_shift_ms": Num(float, 0.1, 1000.0),
    "model.frontend.stack": Num(int, 1, 8),                              # fbank_projected
    "model.frontend.mean_norm": Flag(),
    "model.frontend.path": Text(),                                       # teacher
    "model.frontend.teacher": Section(null=True),   # the teacher's architecture (svmix.models.teacher_frontend)
    "model.frontend.teacher.arch": Choice(("wavlm", "wav2vec2")),
    "model.frontend.teacher.normalize_waveform": Flag(),
    "model.frontend.teacher.normalize_eps": Num(float, 0.0, 1.0, lo_open=True),
    "model.frontend.teacher.feat_proj_layer_norm": Flag(),
    "model.frontend.teacher.fingerprint": Text(),
    "model.frontend.teacher.params": Section(),     # torchaudio wav2vec2_model / wavlm_model arguments
    "model.frontend.teacher.params.feature_extractor": Choice(FEATURE_EXTRACTORS),   # absent: conv
    "model.frontend.teacher.params.extractor_mode": Choice(("group_norm", "layer_norm")),
    "model.frontend.teacher.params.extractor_conv_layer_config": Items(Items(Num(int, 1, DIM), length=3)),
    "model.frontend.teacher.params.extractor_conv_bias": Flag(),
    "model.frontend.teacher.params.encoder_embed_dim": Num(int, 1, DIM),
    "model.frontend.teacher.params.encoder_projection_dropout": DROPOUT,
    "model.frontend.teacher.params.encoder_pos_conv_kernel": Num(int, 1, 4096),
    "model.frontend.teacher.params.encoder_pos_conv_groups": Num(int, 1, 4096),
    "model.frontend.teacher.params.encoder_num_layers": Num(int, 1, 1000),
    "model.frontend.teacher.params.encoder_num_heads": Num(int, 1, 1024),
    "model.frontend.teacher.params.encoder_attention_dropout": DROPOUT,
    "model.frontend.teacher.params.encoder_ff_interm_features": Num(int, 1, DIM),
    "model.frontend.teacher.params.encoder_ff_interm_dropout": DROPOUT,
    "model.frontend.teacher.params.encoder_dropout": DROPOUT,
    "model.frontend.teacher.params.encoder_layer_norm_first": Flag(),
    "model.frontend.teacher.params.encoder_layer_drop": DROPOUT,
    "model.frontend.teacher.params.encoder_num_buckets": Num(int, 1, 1 << 16),
    "model.frontend.teacher.params.encoder_max_distance": Num(int, 1, 1 << 20),
    "model.encoder": Section(),
    "model.encoder.name": Name(),
    "model.encoder.num_layers": Num(int, 1, 1000),
    "model.encoder.group_dim": Num(int, 1, DIM),
    "model.encoder.token_expansion": Num(int, 1, 64),
    "model.encoder.channel_expansion": Num(int, 1, 64),
    "model.encoder.expansion": Num(int, 1, 64),
    "model.encoder.dropout": DROPOUT,
    "model.encoder.lgm": Flag(),
    "model.encoder.msm": Flag(),
    "model.encoder.gcm": Flag(),
    "model.encoder.lgm_mode": Choice(("parallel", "sequential")),
    "model.encoder.token_window": Num(int, 1, 100000, null=True),   # svmixer_anylen (null: the segment's frames)
    "model.encoder.num_heads": Num(int, 1, 1024),
    "model.encoder.ffn_dim": Num(int, 1, DIM),
    "model.encoder.pos_conv_kernel": Num(int, 0, 4096),   # 0: no position embedding
    "model.encoder.pos_conv_groups": Num(int, 1, 4096),
    "model.encoder.kernel": Num(int, 1, 1023),
    "model.encoder.stepsize": Num(int, 1, 1024),
    "model.backend": Section(),
    "model.backend.name": Name(),
    "model.backend.weighted_sum": Flag(),
    "model.backend.channels": Num(int, 1, DIM),
    "model.backend.dilations": Items(Num(int, 1, 64)),
    "model.backend.scale": Num(int, 1, 64),
    "model.backend.se_bottleneck": Num(int, 1, DIM),
    "model.backend.pooled_channels": Num(int, 1, DIM),
    "model.backend.attention_bottleneck": Num(int, 1, DIM),
    "model.backend.noise_std": Items(Num(float, 0.0, 10.0), length=2, ascending=True),
    "model.backend.freq": Num(int, 1, DIM),                       # redimnet
    "model.backend.freq_strides": Items(Num(int, 1, 64)),
    "model.backend.blocks_2d": Num(int, 0, 64),
    "model.backend.expansion": Num(int, 1, 64),
    "model.backend.time_kernel": Num(int, 1, 1023),
    # train
    "train": Section(),
    "train.seed": Num(int, 0, 2 ** 32 - 1),
    "train.batch_size": Num(int, 1, 10 ** 6),
    "train.accum_grad": Num(int, 1, 1024),
    "train.max_steps": Num(int, 1, BIG, null=True),
    "train.epochs": Num(int, 1, 10 ** 6, null=True),
    "train.optimizer": Section(),
    "train.optimizer.name": Name(),
    "train.optimizer.lr": Num(float, 0.0, 10.0),  # 0: frozen (tests, warm-up experiments)
    "train.optimizer.weight_decay": Num(float, 0.0, 10.0),
    "train.optimizer.betas": Items(Num(float, 0.0, 1.0, hi_open=True), length=2),
    "train.optimizer.eps": Num(float, 0.0, 1.0, lo_open=True),
    "train.optimizer.amsgrad": Flag(),
    "train.optimizer.momentum": UNIT,
    "train.optimizer.dampening": UNIT,
    "train.optimizer.nesterov": Flag(),
    "train.optimizer.maximize": Flag(),
    "train.optimizer.decoupled_weight_decay": Flag(),
    "train.optimizer.foreach": Flag(null=True),
    "train.optimizer.capturable": Flag(),
    "train.optimizer.differentiable": Flag(),
    "train.optimizer.fused": Flag(null=True),
    "train.optimizer_switch": Section(null=True),
    "train.optimizer_switch.at_step": Num(int, 1, BIG),
    "train.optimizer_switch.optimizer": Section(),   # its keys follow train.optimizer.*
    "train.scheduler": Section(),
    "train.scheduler.name": Name(),
    "train.scheduler.factor": Num(float, 0.0, 1.0, lo_open=True),
    "train.scheduler.patience": Num(int, 0, 10 ** 6),
    "train.scheduler.threshold": UNIT,
    "train.scheduler.min_lr": Num(float, 0.0, 10.0),
    "train.scheduler.t_0": Num(int, 1, BIG),
    "train.scheduler.t_up": Num(int, 0, BIG),
    "train.scheduler.eta_max": Num(float, 0.0, 10.0, lo_open=True),
    "train.scheduler.t_mult": Num(float, 1.0, 1000.0),
    "train.scheduler.gamma": Num(float, 0.0, 10.0 ** 6, lo_open=True),
    "train.early_stopping": Section(null=True),
    "train.early_stopping.patience": Num(int, 1, 10 ** 6, null=True),
    "train.grad_clip": Num(float, 0.0, 10.0 ** 6, lo_open=True, null=True),
    "train.amp": Flag(),
    "train.init_frontend_from_teacher": Flag(),
    "train.kd": Section(),
    "train.kd.name": Name(null=True),
    "train.kd.layers": Items(Num(int, 0, 1000), null=True),
    "train.kd.lambda": Num(float, 0.0, 10.0 ** 6),
    "train.kd.target_norm": Choice(KD_TARGET_NORMS, null=True),
    "train.kd.cos_weight": Num(float, 0.0, 10.0 ** 6),
    "train.kd.pooled_weight": Num(float, 0.0, 10.0 ** 6),
    "train.kd_unlabelled": Section(null=True),
    "train.kd_unlabelled.lambda": Num(float, 0.0, 10.0 ** 6, lo_open=True),
    "train.kd_unlabelled.batch_size": Num(int, 1, 10 ** 6),
    "train.aam": Section(),
    "train.aam.name": Name(),
    "train.aam.margin": MARGIN,
    "train.aam.scale": Num(float, 0.0, 1000.0, lo_open=True),
    "train.aam.top_k": Num(int, 0, 10 ** 6),
    "train.aam.negative_margin": MARGIN,
    "train.aam.impostor_weight": Num(float, 0.0, 10.0 ** 6, lo_open=True),
    "train.aam.class_weighted": Flag(),
    "train.augment": Section(null=True),
    "train.augment.p": UNIT,
    "train.augment.types": Items(Choice(tuple(AUGMENTATIONS.names()))),
    "train.augment.noise_snr": SNR,
    "train.augment.music_snr": SNR,
    "train.augment.babble_snr": SNR,
    "train.augment.babble_sources": Items(Num(int, 1, 100), length=2, ascending=True),
    "train.augment.colored_noise_snr": SNR,
    "train.augment.colors": Items(Choice(("white", "pink", "brown"))),
    "train.augment.clip_ratio": Items(Num(float, 0.0, 1.0, lo_open=True), length=2, ascending=True),
    "train.augment.simulated_rir": Flag(),
    "train.speaker_balanced": Flag(),
    "train.preload_audio": Flag(),
    "train.val_every": Num(int, 1, BIG, words=("epoch",)),
    "train.val_segments": Num(int, 1, 1000),
    "train.val_batch_size": Num(int, 1, 10 ** 6),
    "train.checkpoint_every": Num(int, 1, BIG, words=("epoch",)),
    "train.keep_best": Num(int, 1, 1000),
    "train.average": Num(int, 1, 1000),
    "train.log_every": Num(int, 1, BIG, words=("epoch",)),
    "train.num_workers": Num(int, 0, 256),
    "train.threads": Num(int, 1, 4096, null=True),
    "train.find_unused_parameters": Flag(),
    "train.crop_seconds": Num(float, 0.1, 600.0, null=True),
    "train.margin_ramp": Section(null=True),
    "train.margin_ramp.start": MARGIN,
    "train.margin_ramp.steps": Num(int, 1, BIG),
}
# sections whose keys follow another section's rules
SCHEMA_ALIASES = {"train.optimizer_switch.optimizer": "train.optimizer"}


def _rule(schema: Mapping[str, Rule], aliases: Mapping[str, str], path: str) -> Optional[Rule]:
    for alias, target in aliases.items():
        if path.startswith(alias + "."):
            path = target + path[len(alias):]
    return schema.get(path)


def validate(config: Mapping[str, Any], schema: Mapping[str, Rule] = SCHEMA,
             aliases: Mapping[str, str] = SCHEMA_ALIASES, prefix: str = "") -> None:
    """Check every key of ``config`` against ``schema`` (dotted paths from the top, after ``prefix``):
    the first bad or unknown key is a one-line error naming the key, its value and the valid range."""
    for key, value in config.items():
        path = f"{prefix}{key}"
        rule = _rule(schema, aliases, path)
        if rule is None:
            parent, _, name = path.rpartition(".")
            known = sorted(k.rpartition(".")[2] for k in schema if k.rpartition(".")[0] == parent)
            raise SvmixError(f"{parent or 'config'}: unknown key '{name}'" + (f" (known: {', '.join(known)})" if known else ""))
        if not rule.ok(value):
            raise SvmixError(f"{path}={value!r}: must be {rule.describe()}")
        if isinstance(rule, Section) and value is not None:
            validate(value, schema, aliases, path + ".")


# ---------------------------------------------------------------- resolution
def upgrade_legacy_train(train: Mapping[str, Any]) -> Dict[str, Any]:
    """Old spellings in a ``train:`` section: ``kd.type`` is now ``kd.name``."""
    train = copy.deepcopy(dict(train))
    kd = train.get("kd")
    if isinstance(kd, dict) and "type" in kd:
        if "name" in kd and kd["name"] != kd["type"]:
            raise SvmixError(f"train.kd: both 'name' ({kd['name']!r}) and its old spelling 'type' "
                             f"({kd['type']!r}) are set; keep 'name'")
        kd["name"] = kd.pop("type")
    return train


def resolve_augment_config(config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``DEFAULT_AUGMENT_CONFIG`` overridden by ``config``; unknown keys are errors."""
    unknown = sorted(set(config or {}) - set(DEFAULT_AUGMENT_CONFIG))
    if unknown:
        raise SvmixError(f"train.augment: unknown key '{unknown[0]}' (known: {', '.join(DEFAULT_AUGMENT_CONFIG)})")
    return merge(DEFAULT_AUGMENT_CONFIG, config)


def _resolve_kd(kd: Any) -> Dict[str, Any]:
    if not isinstance(kd, dict):
        raise SvmixError(f"train.kd={kd!r}: must be a mapping (name: null turns distillation off)")
    if not kd.get("name"):
        extra = sorted(set(kd) - set(KD_TRAINER_KEYS))
        if extra:
            raise SvmixError(f"train.kd: unknown key '{extra[0]}' without a KD loss name")
        return {"name": None, "layers": kd.get("layers"), "lambda": kd.get("lambda", 1.0),
                "target_norm": kd.get("target_norm")}
    loss = KD_LOSSES.resolve({"name": kd["name"], **kd_loss_params(kd)}, "train.kd")
    return {"name": loss.pop("name"), "layers": kd.get("layers"), "lambda": kd.get("lambda", 1.0),
            "target_norm": kd.get("target_norm"), **loss}


def resolve_train_config(train: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Fill defaults into a ``train:`` section (closed: every constructor default written out)."""
    if train is not None and not isinstance(train, Mapping):
        raise SvmixError(f"train={train!r}: must be a mapping")
    train = upgrade_legacy_train(train or {})
    train = merge(DEFAULT_TRAIN_CONFIG, train)  # a section naming another entry replaces the default's
    unknown = sorted(set(train) - set(DEFAULT_TRAIN_CONFIG))
    if unknown:  # before resolving sections, so a misspelt key is reported as such
        raise SvmixError(f"train: unknown key '{unknown[0]}' (known: {', '.join(sorted(DEFAULT_TRAIN_CONFIG))})")
    train["optimizer"] = OPTIMIZERS.resolve(train["optimizer"], "train.optimizer")
    switch = train["optimizer_switch"]
    if isinstance(switch, dict) and isinstance(switch.get("optimizer"), Mapping):
        switch["optimizer"] = OPTIMIZERS.resolve(switch["optimizer"], "train.optimizer_switch.optimizer")
    train["scheduler"] = SCHEDULERS.resolve(train["scheduler"], "train.scheduler")
    train["aam"] = CLASSIFICATION_LOSSES.resolve(train["aam"], "train.aam")
    train["kd"] = _resolve_kd(train["kd"])
    if isinstance(train["kd_unlabelled"], Mapping):  # unknown keys are left for validate() to name
        train["kd_unlabelled"] = {"lambda": 1.0, "batch_size": train["batch_size"], **train["kd_unlabelled"]}
    if isinstance(train["augment"], Mapping):
        train["augment"] = resolve_augment_config(train["augment"])
    if train["checkpoint_every"] is None:
        train["checkpoint_every"] = train["val_every"]
    return train


def resolve_config(raw: Mapping[str, Any], config_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Resolve includes, fill every default and validate: returns ``{"model": {...}, "train": {...}}``.

    Idempotent: a resolved config (``EXP/config.yaml``) resolves to itself."""
    unknown = set(raw) - {"model", "model_config", "train"}
    if unknown:
        raise SvmixError(f"unknown top-level config key(s): {', '.join(sorted(unknown))} "
                         "(known: model, model_config, train)")
    model: Dict[str, Any] = {}
    if raw.get("model_config"):
        model = read_model_config(find_include(str(raw["model_config"]), config_dir))
    if not isinstance(model, Mapping) or not isinstance(raw.get("model") or {}, Mapping):
        raise SvmixError("model: must be a mapping")
    config = {"model": resolve_model_config(merge(model, raw.get("model"))), "train": resolve_train_config(raw.get("train"))}
    validate(config)
    train = config["train"]
    if train["max_steps"] is None and train["epochs"] is None:
        raise SvmixError("train config needs max_steps or epochs")
    return config


def load_train_config(path: Optional[os.PathLike] = None, overrides: Union[Sequence[str], Mapping[str, Any]] = (),
                      model_config: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """Read a training YAML (or start empty), apply overrides and resolve it."""
    raw = read_yaml(path, "training config") if path is not None else {}
    if model_config is not None:
        raw["model_config"] = str(model_config)
    raw = apply_overrides(raw, overrides)
    return resolve_config(raw, Path(path).parent if path is not None else None)
