"""Stage 1 of the mini recipe: train a small WavLM-architecture teacher from scratch.

No pretrained SSL weights exist offline, so the default recipe trains its own teacher: torchaudio's
``wavlm_model`` with a small configuration, optimised for speaker classification (additive angular
margin softmax on the mean-pooled last hidden state) on random crops of the training speakers, with
light noise/reverberation augmentation. It is saved in the Hugging Face layout (``config.json`` with
``model_type: wavlm`` + ``model.safetensors``), so stage 2 loads it exactly like a downloaded WavLM.

Deterministic given the seed (data order, crops, augmentation and initialisation are seeded; a fixed
number of steps). ``max_minutes`` (off by default) bounds the training time: reaching it is an error
that says so, and nothing is saved. A time limit never shortens training silently, since the
result would then depend on the machine's speed and load.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from svmix.data import simulate
from svmix.data.audio import load_audio
from svmix.data.datadir import DataDir
from svmix.errors import SvmixError
from svmix.teachers.hf_format import FEATURE_EXTRACTORS, HF_DEFAULTS, HF_MODEL_TYPES, save_hf_wavlm
from svmix.teachers.model import build_torchaudio_model, hf_hidden_states
from svmix.utils.fileio import write_json
from svmix.utils.logging import DETAIL, get_logger
from svmix.utils.progress import Progress, track

_log = get_logger("mini_teacher")

DEFAULT_CONFIG: Dict[str, Any] = {
    "seed": 0,
    "model": {  # Hugging Face WavLMConfig keys
        "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024,
        "conv_dim": [128] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": False, "feat_extract_norm": "group", "do_stable_layer_norm": False,
        "num_conv_pos_embeddings": 64, "num_conv_pos_embedding_groups": 16,
        "num_buckets": 320, "max_bucket_distance": 800,
        "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "feat_proj_dropout": 0.1,
    },
    "train": {
        "steps": 400, "batch_size": 8, "crop_seconds": 3.0, "lr": 1.0e-3, "warmup_steps": 40,
        "weight_decay": 0.01, "grad_clip": 5.0, "margin": 0.0, "scale": 30.0,
        "augment_p": 0.6, "noise_snr": [5.0, 25.0], "reverb_p": 0.3, "gain_db": [-6.0, 6.0],
        "channel_p": 0.0, "channel_db": 6.0,
        "log_every": 20,
    },
}


def _schema() -> Dict[str, Any]:
    """Type and range of every key of the mini-teacher config (rules of svmix.train.config)."""
    from svmix.train.config import DROPOUT, MARGIN, SNR, UNIT, Choice, Flag, Items, Num, Section

    dims = Items(Num(int, 1, 1 << 16))
    return {
        "seed": Num(int, 0, 2 ** 32 - 1),
        "model": Section(), "train": Section(),
        "model.hidden_size": Num(int, 1, 1 << 16), "model.num_hidden_layers": Num(int, 1, 1000),
        "model.num_attention_heads": Num(int, 1, 1024), "model.intermediate_size": Num(int, 1, 1 << 20),
        "model.conv_dim": dims, "model.conv_kernel": Items(Num(int, 1, 1024)),
        "model.conv_stride": Items(Num(int, 1, 1024)), "model.conv_bias": Flag(),
        "model.feat_extract_norm": Choice(("group", "layer")), "model.do_stable_layer_norm": Flag(),
        "model.num_conv_pos_embeddings": Num(int, 1, 4096), "model.num_conv_pos_embedding_groups": Num(int, 1, 4096),
        "model.num_buckets": Num(int, 1, 10 ** 5), "model.max_bucket_distance": Num(int, 1, 10 ** 6),
        "model.svmix_feature_extractor": Choice(FEATURE_EXTRACTORS),  # absent: conv (svmix.teachers.hf_format)
        "model.hidden_dropout": DROPOUT, "model.attention_dropout": DROPOUT,
        "model.activation_dropout": DROPOUT, "model.feat_proj_dropout": DROPOUT,
        "train.steps": Num(int, 1, 10 ** 7), "train.batch_size": Num(int, 2, 10 ** 5),  # batch-centred features
        "train.crop_seconds": Num(float, 0.1, 600.0), "train.lr": Num(float, 0.0, 10.0, lo_open=True),
        "train.warmup_steps": Num(int, 0, 10 ** 7), "train.weight_decay": Num(float, 0.0, 10.0),
        "train.grad_clip": Num(float, 0.0, 10.0 ** 6, lo_open=True), "train.margin": MARGIN,
        "train.scale": Num(float, 0.0, 1000.0, lo_open=True), "train.augment_p": UNIT, "train.noise_snr": SNR,
        "train.reverb_p": UNIT, "train.gain_db": SNR, "train.log_every": Num(int, 1, 10 ** 9),
        "train.channel_p": UNIT, "train.channel_db": Num(float, 0.0, 40.0),
    }


def check_config(config: Dict[str, Any], where: str = "teacher config") -> Dict[str, Any]:
    """``config`` if every key is known and in range, else a one-line error naming ``where`` and the key."""
    from svmix.train.config import validate

    try:
        validate(config, _schema(), aliases={})
    except SvmixError as e:
        raise SvmixError(f"{where}: {e}") from None
    return config


def load_config(path: Optional[os.PathLike], overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """DEFAULT_CONFIG overridden by the YAML file at ``path`` and then by ``overrides``
    (``{"train.steps": 10}``), checked (unknown keys and out-of-range values are errors)."""
    from svmix.train.config import apply_overrides, merge, read_yaml

    raw = read_yaml(path, "teacher config") if path is not None else {}
    config = merge(DEFAULT_CONFIG, apply_overrides(raw, overrides or {}))
    return check_config(config, str(path) if path is not None else "teacher config")


def torchaudio_params(model_config: Dict[str, Any]) -> Dict[str, Any]:
    """torchaudio ``wavlm_model`` kwargs for an HF-style model config, dropouts included (for training)."""
    cfg = {**HF_DEFAULTS, **model_config}
    _, params = HF_MODEL_TYPES.get("wavlm")(cfg)
    params.update(encoder_dropout=cfg["hidden_dropout"], encoder_attention_dropout=cfg["attention_dropout"],
                  encoder_ff_interm_dropout=cfg["activation_dropout"],
                  encoder_projection_dropout=cfg["feat_proj_dropout"])
    return params


class AAMHead(nn.Module):
    """Additive angular margin softmax over speakers on batch-centred pooled features.

    Centring (BatchNorm without affine) removes the direction all utterances share, which otherwise
    dominates cosines early in training; evaluation centres in the same way (``evaluate_teacher``).
    """

    def __init__(self, dim: int, num_classes: int, margin: float, scale: float):
        super().__init__()
        self.center = nn.BatchNorm1d(dim, affine=False)
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_normal_(self.weight)
        self.margin, self.scale = margin, scale

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(self.center(x)), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = torch.cos(torch.acos(cos) + self.margin)
        one_hot = F.one_hot(labels, cos.shape[1]).bool()
        logits = self.scale * torch.where(one_hot, target, cos)
        return F.cross_entropy(logits, labels)


class CropSampler:
    """Seeded random crops (wrap-padded when shorter) with a random session channel, light
    reverberation, noise and gain."""

    def __init__(self, audio: Sequence[np.ndarray], labels: Sequence[int], cfg: Dict[str, Any], seed: int):
        self.audio, self.labels, self.cfg = audio, np.asarray(labels), cfg
        self.samples = int(cfg["crop_seconds"] * 16000)
        self.rng = np.random.default_rng(seed)

    def crop(self, wav: np.ndarray) -> np.ndarray:
        if len(wav) <= self.samples:
            return np.resize(wav, self.samples)
        start = int(self.rng.integers(0, len(wav) - self.samples + 1))
        return wav[start:start + self.samples]

    def augment(self, wav: np.ndarray) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        # p = 0 draws nothing, so configs written before channels existed give the same crops
        if cfg["channel_p"] > 0 and rng.random() < cfg["channel_p"]:
            wav = simulate.random_channel(wav, rng, cfg["channel_db"])
        if rng.random() < cfg["reverb_p"]:
            wav = simulate.reverberate(wav, simulate.simulated_rir(rng))
        if rng.random() < cfg["augment_p"]:
            noise = simulate.colored_noise(len(wav), str(rng.choice(["white", "pink", "brown"])), rng)
            wav = simulate.add_noise(wav, noise, float(rng.uniform(*cfg["noise_snr"])))
        return (wav * 10 ** (rng.uniform(*cfg["gain_db"]) / 20)).astype(np.float32)

    def batch(self, size: int):
        idx = self.rng.integers(0, len(self.audio), size)
        wavs = np.stack([self.augment(self.crop(self.audio[i])) for i in idx])
        return torch.from_numpy(wavs), torch.from_numpy(self.labels[idx]).long()


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_mini_teacher(data_dir: os.PathLike, out_dir: os.PathLike, config: Dict[str, Any],
                       max_minutes: Optional[float] = None, trials_data: Optional[os.PathLike] = None,
                       progress: bool = True) -> Dict[str, Any]:
    """Train, save (HF layout) and optionally evaluate the mini teacher; returns the summary dict."""
    start_time = time.time()
    out_dir = Path(out_dir)
    check_config(config)  # before any work
    seed, tcfg = int(config["seed"]), config["train"]
    data = DataDir(data_dir)
    utt2spk, wav_scp = data.utt2spk, data.wav_scp
    missing = [u for u in utt2spk if u not in wav_scp]
    if missing:
        raise SvmixError(f"{data_dir}/utt2spk: utterance '{missing[0]}' has no wav.scp entry")
    speakers = sorted(set(utt2spk.values()))
    if len(speakers) < 2:
        raise SvmixError(f"{data_dir}: speaker classification needs at least 2 speakers, found {len(speakers)}")
    if trials_data is not None:
        _evaluation_trials(trials_data)  # fail before training, not after
    utts = sorted(utt2spk)
    audio = [load_audio(wav_scp[u], u)
             for u in track(utts, desc="loading audio", unit="utt", enabled=progress, leave=False)]
    labels = [speakers.index(utt2spk[u]) for u in utts]

    torch.manual_seed(seed)
    params = torchaudio_params(config["model"])
    model = build_torchaudio_model("wavlm", params)
    post_ln = not params["encoder_layer_norm_first"]
    head = AAMHead(params["encoder_embed_dim"], len(speakers), tcfg["margin"], tcfg["scale"])
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=tcfg["lr"],
                                  weight_decay=tcfg["weight_decay"])
    steps = int(tcfg["steps"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, tcfg["warmup_steps"], steps))
    sampler = CropSampler(audio, labels, tcfg, seed)
    _log.info("mini teacher: %d speakers, %d utterances, %.2fM parameters, %d steps of %d x %.1f s",
              len(speakers), len(utts), sum(p.numel() for p in model.parameters()) / 1e6, steps,
              tcfg["batch_size"], tcfg["crop_seconds"])
    model.train()
    losses: List[float] = []
    with Progress(total=steps, desc="training mini teacher", unit="step", enabled=progress) as bar:
        for step in range(steps):
            if max_minutes is not None and time.time() - start_time > max_minutes * 60:
                raise SvmixError(f"time limit of {max_minutes:g} min reached after {step} of {steps} steps; "
                                 f"nothing was saved to {out_dir} (raise --max-minutes or leave it off: a "
                                 "time limit never shortens training)")
            wav, label = sampler.batch(tcfg["batch_size"])
            pooled = hf_hidden_states(model, wav, post_ln)[-1].mean(dim=1)
            loss = head(pooled, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), tcfg["grad_clip"])
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            if (step + 1) % tcfg["log_every"] == 0:
                _log.info("step %d/%d loss %.3f", step + 1, steps, float(np.mean(losses[-tcfg["log_every"]:])),
                          extra=DETAIL)

    extra = {"svmix_mini_teacher": {"seed": seed, "speakers": len(speakers)}}
    save_hf_wavlm(model, params, out_dir, do_normalize=False, extra_config=extra)
    summary = {"seed": seed, "steps_done": len(losses), "steps": steps,
               "final_loss": float(np.mean(losses[-tcfg["log_every"]:])) if losses else None,
               "num_speakers": len(speakers), "num_utterances": len(utts),
               "train_minutes": round((time.time() - start_time) / 60, 2), "config": config}
    if trials_data is not None:
        from svmix.teachers import load_teacher

        summary["eval"] = evaluate_teacher(load_teacher(out_dir), trials_data, progress=progress)
        write_json(out_dir / "eval.json", summary["eval"])
        _log.info("mini teacher EER on %s: %.2f%% (last layer; per layer %s)", trials_data,
                  summary["eval"]["eer"], summary["eval"]["eer_per_layer"])
    write_json(out_dir / "training.json", summary)
    return summary


def evaluate_teacher(teacher: Any, data_dir: os.PathLike, progress: bool = True) -> Dict[str, Any]:
    """EER (%) of cosine scoring on mean-pooled hidden states of whole utterances, for every layer.

    Pooled vectors are centred with their mean over the evaluated utterances (no labels used).
    """
    from svmix.metrics import compute_eer

    labelled, wav_scp = _evaluation_trials(data_dir)
    needed = sorted({t.enroll for t in labelled} | {t.test for t in labelled})
    pooled = []
    for utt in track(needed, desc="evaluating teacher", unit="utt", enabled=progress, leave=False):
        states = teacher(torch.from_numpy(load_audio(wav_scp[utt], utt))[None])
        pooled.append(torch.stack([h[0].mean(dim=0) for h in states]).numpy())
    vectors = np.stack(pooled)  # (utterances, layers, hidden)
    vectors -= vectors.mean(axis=0, keepdims=True)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True) + 1e-12
    row = {utt: i for i, utt in enumerate(needed)}
    enroll = vectors[[row[t.enroll] for t in labelled]]
    test = vectors[[row[t.test] for t in labelled]]
    scores = (enroll * test).sum(axis=-1)  # (trials, layers)
    labels = np.array([t.label for t in labelled])
    per_layer = {str(i): round(compute_eer(scores[:, i], labels), 3) for i in range(scores.shape[1])}
    return {"eer": per_layer[str(teacher.num_layers)], "eer_per_layer": per_layer, "layer": teacher.num_layers,
            "scoring": "cosine on mean-pooled, centred hidden states", "n_target": int(labels.sum()),
            "n_nontarget": int(len(labels) - labels.sum()), "trials": str(Path(data_dir) / "trials")}



def _evaluation_trials(data_dir: os.PathLike):
    """Labelled trials of ``data_dir`` and its wav.scp; every trial utterance must have audio."""
    data = DataDir(data_dir)
    trials = data.trials
    if not trials:
        raise SvmixError(f"{data_dir}: no trials file (needed to evaluate the teacher)")
    labelled = [t for t in trials if t.label is not None]
    if len({t.label for t in labelled}) < 2:
        raise SvmixError(f"{data_dir}/trials: needs labelled target and non-target trials")
    wav_scp = data.wav_scp
    for t in labelled:
        for utt in (t.enroll, t.test):
            if utt not in wav_scp:
                raise SvmixError(f"{data_dir}/trials:{t.line}: utterance '{utt}' is not in wav.scp")
    return labelled, wav_scp
