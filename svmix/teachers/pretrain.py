"""Self-supervised pretraining of a WavLM-architecture teacher: masked prediction of k-means targets.

What pretrained WavLM is to VoxCeleb, this teacher is to the mini world: trained once on a
pretraining pool with far more voices than the students' labelled set, then shipped. The objective
is HuBERT's first iteration with WavLM's utterance mixing:

- targets: k-means clusters (scikit-learn ``MiniBatchKMeans``) of 39-dim MFCC+Δ+ΔΔ frames computed
  on the *clean* crop, one per 20 ms frame (400-sample window, 320-sample hop: exactly the conv
  frontend's frames);
- input: the crop (through the conv feature extractor, or with ``model.svmix_feature_extractor:
  fbank`` through stacked log-mel filterbanks), optionally overlapped with a crop of another
  utterance (``mix_p``, WavLM's denoising) and augmented with noise/reverberation; spans of
  projected frames are replaced by a learned mask embedding (``mask_prob`` starts per frame,
  ``mask_length`` frames each);
- loss: cross-entropy of a linear predictor on the last layer over the masked frames; with
  ``speaker_weight > 0`` an AAM speaker loss on the mean-pooled last layer is added (the pool's own
  voices; the model card then says the teacher is partly supervised), pooled over all frames or,
  with ``speaker_pool: unmasked``, over the frames that were not masked.

Training is step-based and exactly resumable: model, predictor, optimiser, scheduler, the sampler's
and torch's random states are saved atomically every ``checkpoint_every`` steps to
``OUT/pretrain_state.pt``; a rerun continues from there and gives bit-identical weights to an
uninterrupted run. A time limit (``max_minutes``) never shortens training silently: reaching it
saves the state and raises an error saying how to continue. The result is saved in the Hugging Face
layout with ``kmeans.npz``, ``training.json`` and a ``MODEL_CARD.md``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from svmix.data.audio import load_audio
from svmix.data.datadir import DataDir
from svmix.errors import SvmixError
from svmix.teachers.hf_format import save_hf_wavlm
from svmix.teachers.mini import DEFAULT_CONFIG as MINI_CONFIG
from svmix.teachers.mini import AAMHead, CropSampler, _lr_factor, torchaudio_params
from svmix.teachers.mini import _schema as mini_schema
from svmix.teachers.model import build_torchaudio_model, frame_geometry, hf_hidden_states, num_frames
from svmix.utils.fileio import atomic_open, torch_load, torch_save_atomic, write_json
from svmix.utils.logging import DETAIL, get_logger
from svmix.utils.progress import Progress, track

_log = get_logger("pretrain")

FRAME_WINDOW, FRAME_HOP = 400, 320  # the conv frontend's receptive field and hop, in samples

DEFAULT_CONFIG: Dict[str, Any] = {
    "seed": 0,
    # The mini teacher's WavLM architecture, two layers deeper (Hugging Face WavLMConfig keys).
    "model": {**copy.deepcopy(MINI_CONFIG["model"]), "num_hidden_layers": 6},
    "kmeans": {"clusters": 100, "frames": 200000, "utterances": 2000, "n_mfcc": 13},
    "train": {
        "steps": 20000, "batch_size": 8, "crop_seconds": 2.0, "lr": 5.0e-4, "warmup_steps": 1000,
        "weight_decay": 0.01, "grad_clip": 5.0, "mask_prob": 0.08, "mask_length": 10,
        "mix_p": 0.2, "speaker_weight": 0.0, "speaker_pool": "all", "margin": 0.2, "scale": 30.0,
        "augment_p": 0.5, "noise_snr": [5.0, 25.0], "reverb_p": 0.3, "gain_db": [-6.0, 6.0],
        "channel_p": 0.0, "channel_db": 6.0,
        "log_every": 50, "checkpoint_every": 500,
    },
}

def _schema() -> Dict[str, Any]:
    """Type and range of every key: the mini teacher's rules for the keys they share, plus the
    k-means and masking keys (rules of svmix.train.config)."""
    from svmix.train.config import UNIT, Choice, Num, Section

    schema = {k: v for k, v in mini_schema().items()
              if not k.startswith("train.") or k.split(".", 1)[1] in DEFAULT_CONFIG["train"]}
    schema.update({
        "kmeans": Section(), "kmeans.clusters": Num(int, 2, 10000), "kmeans.frames": Num(int, 100, 10 ** 9),
        "kmeans.utterances": Num(int, 1, 10 ** 9), "kmeans.n_mfcc": Num(int, 2, 40),
        "train.mask_prob": UNIT, "train.mask_length": Num(int, 1, 1000), "train.mix_p": UNIT,
        "train.speaker_weight": Num(float, 0.0, 1000.0), "train.speaker_pool": Choice(("all", "unmasked")),
        "train.checkpoint_every": Num(int, 1, 10 ** 9),
    })
    return schema


def pretrain_config(override: Optional[Dict[str, Any]] = None, where: str = "config") -> Dict[str, Any]:
    """DEFAULT_CONFIG overridden by ``override``, checked: unknown keys and out-of-range values are
    one-line errors naming ``where`` and the key."""
    from svmix.train.config import merge, validate

    cfg = merge(DEFAULT_CONFIG, override or {})
    try:
        validate(cfg, _schema(), aliases={})
    except SvmixError as e:
        raise SvmixError(f"{where}: {e}") from None
    return cfg


def _fingerprint(cfg: Dict[str, Any], data_dir: os.PathLike) -> str:
    text = json.dumps({"config": cfg, "data": str(Path(data_dir).resolve())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class MfccTargets:
    """39-dim MFCC+Δ+ΔΔ frames aligned with the conv frontend, and their nearest k-means cluster."""

    def __init__(self, n_mfcc: int, centers: Optional[np.ndarray] = None, mean: Optional[np.ndarray] = None,
                 std: Optional[np.ndarray] = None):
        import torchaudio

        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=16000, n_mfcc=n_mfcc,
            melkwargs={"n_fft": FRAME_WINDOW, "win_length": FRAME_WINDOW, "hop_length": FRAME_HOP,
                       "n_mels": 40, "center": False})
        self.centers, self.mean, self.std = centers, mean, std

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) waveforms → (B, T, 3·n_mfcc) with T = (N − 400) // 320 + 1."""
        import torchaudio

        c = self.mfcc(wav.float())  # (B, n_mfcc, T)
        d1 = torchaudio.functional.compute_deltas(c)
        d2 = torchaudio.functional.compute_deltas(d1)
        return torch.cat([c, d1, d2], dim=1).transpose(1, 2)

    def fit(self, waves: Sequence[np.ndarray], clusters: int, max_frames: int, seed: int) -> None:
        from sklearn.cluster import MiniBatchKMeans
        from threadpoolctl import threadpool_limits

        frames = np.concatenate([self.features(torch.from_numpy(w.astype(np.float32))[None])[0].numpy()
                                 for w in waves if len(w) >= FRAME_WINDOW])
        rng = np.random.default_rng(seed)
        if len(frames) > max_frames:
            frames = frames[np.sort(rng.choice(len(frames), max_frames, replace=False))]
        if len(frames) < clusters:
            raise SvmixError(f"k-means needs at least {clusters} frames, the sample has {len(frames)}")
        self.mean, self.std = frames.mean(axis=0), frames.std(axis=0) + 1e-5
        km = MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=3, batch_size=4096, max_iter=100)
        with threadpool_limits(1):  # one thread: the same clusters on every machine
            km.fit((frames - self.mean) / self.std)
        self.centers = km.cluster_centers_.astype(np.float32)

    def labels(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) → (B, T) cluster ids."""
        feats = (self.features(wav) - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)
        return torch.cdist(feats, torch.from_numpy(self.centers)[None]).argmin(dim=-1)

    def save(self, path: Path) -> None:
        with atomic_open(path, "wb") as f:
            np.savez(f, centers=self.centers, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: Path, n_mfcc: int) -> "MfccTargets":
        with np.load(path) as z:
            return cls(n_mfcc, z["centers"], z["mean"], z["std"])


def span_mask(rng: np.random.Generator, batch: int, frames: int, prob: float, length: int) -> torch.Tensor:
    """HuBERT-style span mask (B, T): ``prob·T`` random starts, ``length`` frames each; ≥1 frame masked."""
    mask = np.zeros((batch, frames), dtype=bool)
    starts_max = max(1, frames - length + 1)
    for b in range(batch):
        count = min(starts_max, max(1, int(prob * frames + rng.random())))
        for s in rng.choice(starts_max, count, replace=False):
            mask[b, s:s + length] = True
    return torch.from_numpy(mask)


class PretrainSampler(CropSampler):
    """Seeded crops; the clean crop gives targets, the mixed and augmented one is the input."""

    def mixed_batch(self, size: int):
        idx = self.rng.integers(0, len(self.audio), size)
        clean = [self.crop(self.audio[i]).astype(np.float32) for i in idx]
        noisy = []
        for wav in clean:
            if self.rng.random() < self.cfg["mix_p"]:
                other = self.crop(self.audio[int(self.rng.integers(0, len(self.audio)))]).astype(np.float32)
                span = int(self.rng.integers(1, len(wav) // 2 + 1))  # WavLM: at most half overlaps
                start = int(self.rng.integers(0, len(wav) - span + 1))
                ratio = 10 ** (-self.rng.uniform(-5.0, 5.0) / 20)
                energy = np.sqrt((wav ** 2).mean() / max((other[:span] ** 2).mean(), 1e-10))
                wav = wav.copy()
                wav[start:start + span] += ratio * energy * other[:span]
            noisy.append(self.augment(wav))
        return (torch.from_numpy(np.stack(clean)), torch.from_numpy(np.stack(noisy)),
                torch.from_numpy(self.labels[idx]).long())


class Predictor(nn.Module):
    """Mask embedding + linear cluster predictor (+ optional AAM speaker head)."""

    def __init__(self, hidden: int, clusters: int, speakers: int, margin: float, scale: float):
        super().__init__()
        self.mask_embedding = nn.Parameter(torch.empty(hidden).uniform_())
        self.proj = nn.Linear(hidden, clusters)
        self.speaker = AAMHead(hidden, speakers, margin, scale) if speakers > 1 else None


def speaker_pooling(states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over time of ``states`` (B, T, H); with ``mask`` (B, T, True = masked), over the frames
    the model saw unmasked only, so the speaker head is not trained on mask embeddings it never
    meets at inference. An utterance with every frame masked falls back to the mean of all frames."""
    if mask is None:
        return states.mean(dim=1)
    seen = (~mask).unsqueeze(-1).to(states.dtype)
    count = seen.sum(dim=1)
    pooled = (states * seen).sum(dim=1) / count.clamp(min=1.0)
    return torch.where(count > 0, pooled, states.mean(dim=1))


def _load_pool(data_dir: os.PathLike, need_speakers: bool):
    data = DataDir(data_dir)
    wav_scp = data.wav_scp
    if not wav_scp:
        raise SvmixError(f"{data_dir}/wav.scp: no utterances")
    utts = sorted(wav_scp)
    speakers: List[str] = []
    labels = [0] * len(utts)
    if need_speakers:
        utt2spk = data.utt2spk
        missing = [u for u in utts if u not in utt2spk]
        if missing:
            raise SvmixError(f"{data_dir}/utt2spk: utterance '{missing[0]}' has no speaker "
                             "(needed with train.speaker_weight > 0)")
        speakers = sorted({utt2spk[u] for u in utts})
        index = {s: i for i, s in enumerate(speakers)}
        labels = [index[utt2spk[u]] for u in utts]
    return utts, wav_scp, speakers, labels


def pretrain_teacher(data_dir: os.PathLike, out_dir: os.PathLike, config: Dict[str, Any],
                     max_minutes: Optional[float] = None, command: str = "",
                     progress: bool = True) -> Dict[str, Any]:
    """Pretrain (or resume pretraining) a WavLM teacher on ``data_dir``; returns the summary dict."""
    cfg = pretrain_config(config)
    if max_minutes is not None and not max_minutes > 0:
        raise SvmixError(f"max_minutes must be > 0, got {max_minutes}")
    out_dir = Path(out_dir)
    seed, tcfg = int(cfg["seed"]), cfg["train"]
    fingerprint = _fingerprint(cfg, data_dir)
    state_path, kmeans_path = out_dir / "pretrain_state.pt", out_dir / "kmeans.npz"
    done = out_dir / "training.json"
    if done.exists() and not state_path.exists():
        summary = json.loads(done.read_text())
        if summary.get("fingerprint") == fingerprint:
            _log.info("%s: already pretrained with this config and data; nothing to do", out_dir)
            return summary
        raise SvmixError(f"{out_dir}: holds a teacher pretrained with another config or data; "
                         "choose another --out")
    state = torch_load(state_path, "pretraining state") if state_path.exists() else None
    if state is not None and state["fingerprint"] != fingerprint:
        raise SvmixError(f"{state_path}: was started with another config or data; "
                         "remove it to start again, or use the original config")

    speaker_loss = tcfg["speaker_weight"] > 0
    utts, wav_scp, speakers, labels = _load_pool(data_dir, speaker_loss)
    if speaker_loss and len(speakers) < 2:
        raise SvmixError(f"{data_dir}: a speaker loss needs at least 2 speakers, found {len(speakers)}")
    audio = [load_audio(wav_scp[u], u).astype(np.float16)
             for u in track(utts, desc="loading audio", unit="utt", enabled=progress)]
    hours = sum(len(a) for a in audio) / 16000 / 3600

    targets = MfccTargets(cfg["kmeans"]["n_mfcc"])
    if kmeans_path.exists():
        targets = MfccTargets.load(kmeans_path, cfg["kmeans"]["n_mfcc"])
    else:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(audio), min(len(audio), cfg["kmeans"]["utterances"]), replace=False)
        _log.info("fitting %d k-means clusters on MFCC frames of %d utterances", cfg["kmeans"]["clusters"], len(pick))
        targets.fit([audio[i] for i in sorted(pick)], cfg["kmeans"]["clusters"], cfg["kmeans"]["frames"], seed)
        targets.save(kmeans_path)

    torch.manual_seed(seed)
    params = torchaudio_params(cfg["model"])
    model = build_torchaudio_model("wavlm", params)
    post_ln = not params["encoder_layer_norm_first"]
    predictor = Predictor(params["encoder_embed_dim"], cfg["kmeans"]["clusters"], len(speakers),
                          tcfg["margin"], tcfg["scale"])
    trainable = list(model.parameters()) + list(predictor.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    steps = int(tcfg["steps"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, tcfg["warmup_steps"], steps))
    sampler = PretrainSampler(audio, labels, tcfg, seed)
    step, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        predictor.load_state_dict(state["predictor"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        step, history = int(state["step"]), list(state["history"])
        _log.info("resuming pretraining at step %d of %d", step, steps)
    _log.info("pretraining teacher: %d utterances (%.2f h), %d speakers, %.2fM parameters, %d steps of %d x %.1f s",
              len(utts), hours, len(speakers), sum(p.numel() for p in model.parameters()) / 1e6,
              steps, tcfg["batch_size"], tcfg["crop_seconds"])

    def save_state() -> None:
        torch_save_atomic({
            "fingerprint": fingerprint, "step": step, "history": history, "model": model.state_dict(),
            "predictor": predictor.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "sampler_rng": sampler.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state()}, state_path)

    start = time.monotonic()
    model.train()
    predictor.train()
    window: List[List[float]] = []
    with Progress(total=steps, initial=step, desc="pretraining teacher", unit="step", enabled=progress) as bar:
        while step < steps:
            clean, noisy, spk = sampler.mixed_batch(tcfg["batch_size"])
            with torch.no_grad():  # a filterbank extractor's 560-sample frames: one fewer at some lengths
                target = targets.labels(clean)[:, :num_frames(clean.shape[1], *frame_geometry(params))]
            mask = span_mask(sampler.rng, target.shape[0], target.shape[1], tcfg["mask_prob"], tcfg["mask_length"])
            last = hf_hidden_states(model, noisy, post_ln, mask=mask, mask_embedding=predictor.mask_embedding)[-1]
            logits = predictor.proj(last[mask])
            loss = F.cross_entropy(logits, target[mask])
            accuracy = (logits.argmax(dim=-1) == target[mask]).float().mean().item()
            if predictor.speaker is not None:
                loss = loss + tcfg["speaker_weight"] * predictor.speaker(
                    speaker_pooling(last, mask if tcfg["speaker_pool"] == "unmasked" else None), spk)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, tcfg["grad_clip"])
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update()
            window.append([loss.item(), accuracy])
            if step % tcfg["log_every"] == 0 or step == steps:
                mean_loss, mean_acc = (float(v) for v in np.mean(window, axis=0))
                history.append({"step": step, "loss": round(mean_loss, 5), "masked_accuracy": round(mean_acc, 5)})
                _log.info("step %d/%d loss %.4f masked-frame accuracy %.3f", step, steps, mean_loss, mean_acc,
                          extra=DETAIL)
                window = []
            if step % tcfg["checkpoint_every"] == 0 and step < steps:
                save_state()
            if max_minutes is not None and step < steps and time.monotonic() - start > max_minutes * 60:
                save_state()
                raise SvmixError(f"time limit of {max_minutes:g} min reached at step {step} of {steps}; "
                                 f"the state is saved in {state_path}: rerun the same command to continue "
                                 "(a time limit never shortens training)")

    extra = {"svmix_pretrained_teacher": {"seed": seed, "objective": _objective(cfg), "steps": steps}}
    save_hf_wavlm(model, params, out_dir, do_normalize=False, extra_config=extra)
    summary = {"fingerprint": fingerprint, "seed": seed, "steps": steps, "objective": _objective(cfg),
               "data": str(data_dir), "num_utterances": len(utts), "hours": round(hours, 3),
               "num_speakers": len(speakers) if speaker_loss else None,
               "parameters": sum(p.numel() for p in model.parameters()),
               "final": history[-1] if history else None, "history": history, "config": cfg,
               "command": command}
    write_json(done, summary)
    with atomic_open(out_dir / "MODEL_CARD.md") as f:
        f.write(model_card(summary))
    state_path.unlink(missing_ok=True)
    return summary


def _objective(cfg: Dict[str, Any]) -> str:
    t = cfg["train"]
    text = (f"masked prediction of {cfg['kmeans']['clusters']} k-means clusters of MFCC frames "
            f"(HuBERT iteration 1), utterance mixing p={t['mix_p']:g} (WavLM)")
    if t["channel_p"] > 0:
        text += (f", inputs through a random session channel with p={t['channel_p']:g} (±{t['channel_db']:g} dB; "
                 "targets from the clean crop)")
    if t["speaker_weight"] > 0:
        text += f", plus AAM speaker classification of the pool's voices (weight {t['speaker_weight']:g}"
        text += ", on the unmasked frames)" if t["speaker_pool"] == "unmasked" else ")"
    return text


_INPUTS = {"conv": "the waveform, through WavLM's convolutional feature extractor",
           "fbank": ("80 log-mel filterbanks, mean-normalised per input, two 10 ms frames stacked (20 ms hop), "
                     "in the place of the convolutional feature extractor (config.json: "
                     "`svmix_feature_extractor: fbank`)")}


def model_card(summary: Dict[str, Any]) -> str:
    """The teacher's model card: objective, data, steps, seed, command and metrics."""
    import yaml

    final = summary.get("final") or {}
    supervised = summary["config"]["train"]["speaker_weight"] > 0
    lines = [
        "# Pretrained mini teacher (WavLM architecture, Hugging Face layout)", "",
        f"- **Objective:** {summary['objective']}.",
        f"- **Supervision:** {'partly supervised: it has seen speaker labels of its pool' if supervised else 'self-supervised: no labels were used'}.",
        f"- **Data:** `{summary['data']}`, {summary['num_utterances']} utterances, {summary['hours']} h.",
        f"- **Input:** {_INPUTS[summary['config']['model'].get('svmix_feature_extractor', 'conv')]}.",
        f"- **Size:** {summary['parameters'] / 1e6:.2f}M parameters.",
        f"- **Training:** {summary['steps']} steps, seed {summary['seed']}.",
        f"- **Final training metrics:** loss {final.get('loss')}, masked-frame accuracy {final.get('masked_accuracy')}.",
        "", "## Reproduce", "", "```bash", summary.get("command") or "(command not recorded)", "```", "",
        "## Config", "", "```yaml", yaml.safe_dump(summary["config"], sort_keys=True).rstrip(), "```", "",
    ]
    return "\n".join(lines)

