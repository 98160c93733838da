"""Stage 3: distil a teacher into a student speaker model (``svmix-train``).

``train(config, data_dir, exp_dir, teacher_cache=... | teacher=...)`` runs single-process or under
torchrun (DDP), resumes exactly from ``EXP/checkpoints/last.pt`` when it exists, validates on a
held-out trials list every ``val_every`` steps, keeps the best checkpoints and finally writes
``EXP/model.pt`` (the average of the ``average`` best, or the final weights without validation).

Outputs in EXP: ``config.yaml`` (resolved), ``train.log``, ``metrics.jsonl`` (one JSON object per
log interval, ``"type": "train"``, and per validation, ``"type": "val"``), ``checkpoints/``,
``model.pt``, and TensorBoard events in ``tb/`` when TensorBoard is installed.

With ``train.kd_unlabelled`` each step also distils on a batch of unlabelled audio (``kd_data``, its
targets from ``kd_teacher_cache`` or the online teacher; :mod:`svmix.train.unlabelled`).
"""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from svmix.checkpoint import save_model
from svmix.data.audio import SAMPLE_RATE, scan_cache_path
from svmix.data.datadir import DataDir
from svmix.data.index import utterance_keys
from svmix.data.shards import ShardStream, is_shard_dir, read_shard_index
from svmix.errors import SvmixError
from svmix.models import build_model, init_frontend_from_teacher, resolve_model_config
from svmix.teachers.protocol import Teacher, check_teacher
from svmix.train.augment import AugmentResources, Augmenter
from svmix.train.checkpointing import (BestCheckpoints, average_checkpoints, load_training_state, rng_state,
                                       save_training_state, set_rng_state)
from svmix.train.config import resolve_config
from svmix.train.dataset import CropExamples, TrainingSet
from svmix.train.distributed import DistContext, init_distributed, shutdown
from svmix.train.objective import DistillationObjective, kd_active
from svmix.train.optim import (OPTIMIZERS, EarlyStopping, build_optimizer, build_schedule, optimizer_config_at,
                               set_lr)
from svmix.train.sampler import ShardedBatchSampler
from svmix.train.unlabelled import UnlabelledStream
from svmix.train.validation import Validator
from svmix.utils.fileio import atomic_open
from svmix.utils.locking import output_lock
from svmix.utils.logging import DETAIL, get_logger, setup_logging
from svmix.utils.progress import Progress

_log = get_logger("train")


class TeacherTargets:
    """Where KD targets come from: a feature cache (read by the dataset) or an online teacher run
    here on the clean crops. ``layers`` are HF-indexed teacher layers (any subset of the cached
    ones). Given both a cache and a teacher spec, the cache is used after checking it was built
    by that teacher."""

    def __init__(self, kd_cfg: Dict[str, Any], cache_dir: Optional[os.PathLike],
                 teacher: Union[None, str, Teacher], device: torch.device):
        self.cache, self.teacher = None, None
        if not kd_active(kd_cfg):  # no KD loss, or λ = 0: a teacher or cache given is not used
            self.layers: List[int] = []
            self.hidden_size, self.frame_shift = None, 320
            return
        if cache_dir is not None:
            from svmix.cache import TeacherCache

            self.cache = TeacherCache(cache_dir)
            self.cache_dir = str(cache_dir)
            if teacher is not None:
                self.cache.check_compatible(teacher_spec=teacher)
            available = list(self.cache.layers)
            self.hidden_size, self.frame_shift = int(self.cache.hidden_size), int(self.cache.frame_shift)
        elif teacher is not None:
            if isinstance(teacher, (str, os.PathLike)):
                from svmix.teachers import load_teacher

                teacher = load_teacher(teacher, str(device))
            self.teacher = check_teacher(teacher).to(device).eval()
            available = list(range(teacher.num_layers + 1))
            self.hidden_size, self.frame_shift = int(teacher.hidden_size), int(teacher.frame_shift)
        else:
            raise SvmixError(f"train.kd.name '{kd_cfg['name']}' needs --teacher-cache or --teacher "
                             "(or set train.kd.lambda to 0 or train.kd.name to null to train without distillation)")
        layers = kd_cfg.get("layers")
        self.layers = [max(available)] if layers is None else [int(x) for x in layers]
        missing = [x for x in self.layers if x not in available]
        if missing:
            raise SvmixError(f"teacher layer(s) {missing} not available (teacher has {available})")

    def check_utterances(self, utts: Sequence[str]) -> None:
        if self.cache is None:
            return
        cached = set(self.cache.utt_ids)
        missing = [u for u in utts if u not in cached]
        if missing:
            raise SvmixError(f"teacher cache {self.cache_dir} lacks {len(missing)} training utterance(s), e.g. "
                             f"'{missing[0]}'; rerun svmix-cache-teacher on this data dir")

    def teacher_module(self) -> Teacher:
        """The teacher itself: the online one, or the one the cache was built with."""
        if self.teacher is not None:
            return self.teacher
        if self.cache is None:
            raise SvmixError("init_frontend_from_teacher needs --teacher-cache or --teacher")
        from svmix.teachers import load_teacher

        return load_teacher(self.cache.manifest["teacher"]["spec"])

    def online(self, clean: torch.Tensor, seq_len: int) -> torch.Tensor:
        """(B, K, T, H) targets from the online teacher on the clean crops."""
        with torch.no_grad():
            outs = self.teacher(clean)
        targets = torch.stack([outs[layer] for layer in self.layers], dim=1).float()
        if targets.shape[2] != seq_len:
            raise SvmixError(f"teacher gives {targets.shape[2]} frames per crop, the student {seq_len}")
        return targets


class MetricsLog:
    """``metrics.jsonl`` (append per record) with TensorBoard mirroring when available."""

    def __init__(self, exp_dir: Path, enabled: bool):
        self.path = exp_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(exp_dir / "tb"))
            except ImportError:
                pass

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint we resume from)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = []
        with open(self.path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the kill
                if record["step"] <= step:
                    keep.append(json.dumps(record, sort_keys=True) + "\n")
        with atomic_open(self.path) as f:
            f.writelines(keep)

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _training_data(data_dir: os.PathLike):
    """``(utts, paths, labels, speakers, shard index)``: a Kaldi data dir has no shard index, a shard
    dir (:mod:`svmix.data.shards`) no paths (None)."""
    if is_shard_dir(data_dir):
        index = read_shard_index(data_dir)
        utt2spk = index.utt2spk
        utts, paths = sorted(utt2spk), None
    else:
        index = None
        data = DataDir(data_dir)
        wav_scp, utt2spk = data.wav_scp, data.utt2spk
        utts = sorted(wav_scp)
        missing = [u for u in utts if u not in utt2spk]
        if missing:
            raise SvmixError(f"{data.file('utt2spk')}: no speaker for utterance '{missing[0]}'")
        paths = [wav_scp[u] for u in utts]
    speakers = sorted({utt2spk[u] for u in utts})
    if len(speakers) < 2:
        raise SvmixError(f"{data_dir}: training needs at least 2 speakers, found {len(speakers)}")
    label_of = {s: i for i, s in enumerate(speakers)}
    labels = [label_of[utt2spk[u]] for u in utts]
    return utts, paths, labels, speakers, index


def training_crop(student: torch.nn.Module, crop_seconds: Optional[float]) -> "tuple[int, int]":
    """(samples, frames) of a training crop: the model's segment, or ``train.crop_seconds``.

    SV-Mixer's token MLPs are sized for exactly the segment's frames (``fixed_length`` encoders), so
    its crops cannot be longer; other encoders (e.g. the transformer) take any length."""
    if crop_seconds is None:
        return student.segment_samples, student.seq_len
    samples = int(round(float(crop_seconds) * SAMPLE_RATE))
    if samples != student.segment_samples and student.encoder.fixed_length:
        raise SvmixError(f"train.crop_seconds={crop_seconds}: the {student.config['encoder']['name']} encoder is "
                         f"sized for {student.config['segment_seconds']} s segments and cannot train on other crops; "
                         "set train.crop_seconds to null")
    return samples, student.frontend.num_frames(samples)


def _worker_init(worker_id: int) -> None:
    # Data randomness comes from per-item seeds; seed the global generators anyway for any library use.
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def _write_config(exp_dir: Path, config: Dict[str, Any]) -> None:
    with atomic_open(exp_dir / "config.yaml") as f:
        yaml.safe_dump(config, f, sort_keys=False)


def train(config: Dict[str, Any], data_dir: os.PathLike, exp_dir: os.PathLike,
          teacher_cache: Optional[os.PathLike] = None, teacher: Union[None, str, Teacher] = None,
          val_data: Optional[os.PathLike] = None, augment_dir: Optional[os.PathLike] = None,
          device: Optional[str] = None, max_steps: Optional[int] = None, progress: bool = True,
          init_from: Optional[os.PathLike] = None, kd_data: Optional[os.PathLike] = None,
          kd_teacher_cache: Optional[os.PathLike] = None) -> Path:
    """Train (or resume) the experiment in ``exp_dir``; returns the path of ``EXP/model.pt``.

    ``config`` is a training config (:func:`svmix.train.config.load_train_config`); it is resolved
    and validated (with ``max_steps`` overriding ``train.max_steps``) before any work starts.

    ``init_from`` (a trained experiment dir or checkpoint) continues from that student, e.g. for
    large-margin fine-tuning (``conf/lmft_mini.yaml``): its model config replaces the config's, a
    fresh run starts from its weights, and from its AAM classifier too when that experiment's
    ``checkpoints/last.pt`` was trained on the same speakers. A resumed run ignores it.

    ``kd_data`` (a Kaldi data dir; speaker labels are not read) is the unlabelled audio of
    ``train.kd_unlabelled``, and ``kd_teacher_cache`` its teacher cache, built by the same teacher as
    ``teacher_cache`` (without one, the online ``teacher`` gives its targets)."""
    if max_steps is not None:
        config = {**config, "train": {**config.get("train", {}), "max_steps": max_steps}}
    config = resolve_config(config)
    if init_from is not None:
        from svmix.checkpoint import read_checkpoint

        start = read_checkpoint(init_from)
        if start["config"] != config["model"]:
            _log.info("model config taken from %s (the initial student)", init_from)
        config["model"] = start["config"]
    ctx = init_distributed(device)
    try:
        with output_lock(exp_dir, "svmix-train"):  # a second run on EXP refuses, naming this one
            return _Trainer(config, ctx, Path(exp_dir), data_dir, teacher_cache, teacher, val_data,
                            augment_dir, progress, init_from, kd_data, kd_teacher_cache).run()
    finally:
        shutdown(ctx)


def accumulated_backward(model: torch.nn.Module, objective: DistillationObjective, wav: torch.Tensor,
                         labels: Optional[torch.Tensor], targets: Optional[torch.Tensor], mask: torch.Tensor,
                         accum: int, scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
                         autocast: Callable[[], Any] = nullcontext, sync: bool = True) -> Dict[str, torch.Tensor]:
    """Backpropagate the loss of one step's batch as ``accum`` equal micro-batches (``model``: the
    objective, maybe DDP-wrapped). Each micro-batch's AAM and KD means are weighted by its share of
    the batch's normalisers (summed class weights, valid frames or samples), so the accumulated
    gradient is that of the whole batch's loss (up to float rounding and batch-dependent layers:
    BatchNorm in train mode sees each micro-batch's statistics). Under DDP only the last micro-batch
    all-reduces (``no_sync`` for the others), and none does with ``sync=False`` (a batch whose gradient
    a later backward of the same step all-reduces). ``labels`` None: a batch of unlabelled audio (KD
    only). Returns the batch's detached losses."""
    n = len(wav)
    if n % accum:
        raise SvmixError(f"a batch of {n} does not split into {accum} equal micro-batches")
    size = n // accum
    parts = [slice(j * size, (j + 1) * size) for j in range(accum)]
    norms = torch.stack([objective.normalisers(None if labels is None else labels[p], mask[p])
                         for p in parts])  # (accum, 2)
    shares = (norms / norms.sum(dim=0)).to(wav.device)
    totals: Dict[str, torch.Tensor] = {}
    for j, part in enumerate(parts):
        reduce = sync and j == accum - 1
        quiet = model.no_sync() if isinstance(model, DistributedDataParallel) and not reduce else nullcontext()
        with quiet:
            with autocast():
                out = model(wav[part], None if labels is None else labels[part],
                            None if targets is None else targets[part], mask[part], shares=shares[j])
            scale(out["loss"]).backward()
        for key, weight in (("loss", 1.0), ("aam", shares[j, 0]), ("kd", shares[j, 1])):
            value = out[key].detach().float() * weight
            totals[key] = totals[key] + value if key in totals else value
    return totals


class _Trainer:
    def __init__(self, config, ctx: DistContext, exp_dir: Path, data_dir, teacher_cache, teacher, val_data,
                 augment_dir, progress, init_from=None, kd_data=None, kd_teacher_cache=None):
        self.ctx, self.exp = ctx, exp_dir
        cfg = config["train"]
        self.cfg, self.progress = cfg, progress and ctx.is_main
        if ctx.is_main:
            exp_dir.mkdir(parents=True, exist_ok=True)
            setup_logging(exp_dir / "train.log")
        ctx.barrier()
        if cfg["threads"] is not None:
            torch.set_num_threads(int(cfg["threads"]))
        _log.info("CPU threads: %d (train.threads: %s)", torch.get_num_threads(), cfg["threads"])
        seed = int(cfg["seed"])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        utts, paths, labels, self.speakers, shard_index = _training_data(data_dir)
        self.num_utts = len(utts)
        self.targets = TeacherTargets(cfg["kd"], teacher_cache, teacher, ctx.device)
        self.targets.check_utterances(utts)
        cfg["kd"]["layers"] = self.targets.layers or None
        self.config = config
        self.unlabelled_targets = self._unlabelled_targets(cfg, kd_data, kd_teacher_cache, teacher)

        student = build_model(config["model"])
        if self.targets.layers and student.frontend.hop != self.targets.frame_shift:
            raise SvmixError(f"the student's frame shift ({student.frontend.hop} samples) differs from the "
                             f"teacher's ({self.targets.frame_shift}); KD needs aligned frames")
        if cfg["init_frontend_from_teacher"]:
            copied = init_frontend_from_teacher(student, self.targets.teacher_module())
            _log.info("initialised %d frontend tensor(s) from the teacher", len(copied))
        counts = np.bincount(labels, minlength=len(self.speakers))
        unlabelled = cfg["kd_unlabelled"]
        self.objective = DistillationObjective(student, counts, cfg["aam"], cfg["kd"], self.targets.hidden_size,
                                               unlabelled["lambda"] if unlabelled else 0.0).to(ctx.device)
        if ctx.rank:
            torch.manual_seed(seed + ctx.rank)  # different dropout per rank; same initial weights
        self.model = (DistributedDataParallel(self.objective, find_unused_parameters=cfg["find_unused_parameters"])
                      if ctx.distributed else self.objective)

        crop_samples, crop_frames = training_crop(student, cfg["crop_seconds"])
        self.accum = int(cfg["accum_grad"])
        if int(cfg["batch_size"]) % ctx.world_size:
            raise SvmixError(f"train.batch_size {cfg['batch_size']} is not divisible by the {ctx.world_size} processes")
        workers = int(cfg["num_workers"])
        crop_args = (crop_samples, crop_frames, self.targets.frame_shift, self.targets.cache, self.targets.layers)
        return_clean = self.targets.teacher is not None
        if shard_index is not None:  # audio shards: read sequentially, no audio scan (checked when written)
            if cfg["speaker_balanced"] or cfg["preload_audio"]:
                raise SvmixError(f"{data_dir}: train.speaker_balanced and train.preload_audio need a Kaldi data "
                                 "dir, not audio shards")
            self.examples = CropExamples(*crop_args, return_clean=return_clean)
            # One stream batch is one optimiser step: accum_grad micro-batches of this rank's share.
            self.dataset = ShardStream(shard_index, self.speakers, self.examples,
                                       int(cfg["batch_size"]) * self.accum // ctx.world_size, seed, ctx.rank,
                                       ctx.world_size, workers)
            self.sampler = self.dataset  # the epoch plan: set_epoch, batches_per_epoch
            loader_args = {"batch_size": None, "persistent_workers": False}  # workers re-read the epoch's plan
        else:
            self.dataset = self.examples = TrainingSet(utts, paths, labels, *crop_args, return_clean=return_clean,
                                                       preload=cfg["preload_audio"], progress=self.progress,
                                                       scan_cache=scan_cache_path(data_dir))
            # One sampler batch is one optimiser step: accum_grad micro-batches of batch_size.
            self.sampler = ShardedBatchSampler(labels, int(cfg["batch_size"]) * self.accum, seed, ctx.rank,
                                               ctx.world_size, cfg["speaker_balanced"], utterance_keys(utts))
            loader_args = {"batch_sampler": self.sampler, "persistent_workers": workers > 0}
        if cfg["augment"] and float(cfg["augment"].get("p", 0)) > 0:  # babble draws on the dataset
            self.examples.augmenter = Augmenter(cfg["augment"], AugmentResources(augment_dir, self.dataset.other_speech))
        self.loader = DataLoader(self.dataset, num_workers=workers, worker_init_fn=_worker_init,
                                 generator=torch.Generator().manual_seed(seed),
                                 pin_memory=ctx.device.type == "cuda", **loader_args)
        self.unlabelled: Optional[UnlabelledStream] = None
        if unlabelled:
            u_targets = self.unlabelled_targets
            u_args = (crop_samples, crop_frames, u_targets.frame_shift, u_targets.cache, u_targets.layers)
            self.unlabelled = UnlabelledStream(kd_data, int(unlabelled["batch_size"]) * self.accum, seed, ctx.rank,
                                               ctx.world_size, u_args, workers, cfg["preload_audio"], self.progress,
                                               ctx.device.type == "cuda", _worker_init)
            u_targets.check_utterances(list(self.unlabelled.dataset.utts))
            if cfg["augment"] and float(cfg["augment"].get("p", 0)) > 0:
                self.unlabelled.dataset.augmenter = Augmenter(
                    cfg["augment"], AugmentResources(augment_dir, self.unlabelled.dataset.other_speech))
            self.unlabelled.dataset.return_clean = return_clean
        self.validating, self.validator = val_data is not None, None
        if self.validating and ctx.is_main:
            self.validator = Validator(val_data, int(cfg["val_segments"]), int(cfg["val_batch_size"]),
                                       preload=cfg["preload_audio"])

        self.schedule = build_schedule(cfg)
        es = cfg["early_stopping"]
        self.early_stopping = EarlyStopping(es.get("patience") if es else None)
        self.amp = bool(cfg["amp"]) and ctx.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.best = BestCheckpoints(exp_dir, int(cfg["keep_best"]))
        self.metrics = MetricsLog(exp_dir, ctx.is_main)
        self.step, self.epoch, self.batch_in_epoch, self.stopped, self.last_validated = 0, 0, 0, False, -1
        self.optimizer_cfg = optimizer_config_at(cfg, 0)
        self.optimizer = build_optimizer(self.objective.parameters(), self.optimizer_cfg)
        self.init_from = None if init_from is None else str(init_from)
        self._resume()
        if ctx.is_main:
            _write_config(exp_dir, self.config)

    # -- state ---------------------------------------------------------------------------------
    def _state(self) -> Dict[str, Any]:
        rngs = self.ctx.all_gather(rng_state())
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "stopped": self.stopped, "last_validated": self.last_validated, "config": self.config,
                "speakers": self.speakers, "world_size": self.ctx.world_size, "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(), "optimizer_config": self.optimizer_cfg,
                "schedule": self.schedule.state_dict(), "early_stopping": self.early_stopping.state_dict(),
                "scaler": self.scaler.state_dict(), "best": self.best.entries, "rng": rngs,
                "unlabelled": None if self.unlabelled is None else self.unlabelled.state_dict()}

    def _save(self) -> None:
        state = self._state()  # collective: every rank takes part
        if self.ctx.is_main:
            save_training_state(self.exp, state)
            self.best.commit(self.exp)
        self.ctx.barrier()

    def _resume(self) -> None:
        state = load_training_state(self.exp)
        if state is None:  # a fresh start; clear what a run killed before its first checkpoint left
            if self.init_from is not None:
                self._initialise_from(self.init_from)
            if self.ctx.is_main:
                self.metrics.truncate_after(0)
                self.best.remove_strays(self.exp)
            return
        if resolve_model_config(state["config"]["model"]) != self.config["model"]:  # old checkpoints: open configs
            raise SvmixError(f"{self.exp}: existing checkpoint has a different model config; "
                             "use a new experiment directory")
        if state["speakers"] != self.speakers:
            raise SvmixError(f"{self.exp}: existing checkpoint was trained on different speakers")
        self.objective.load_state_dict(state["objective"])
        self.optimizer_cfg = OPTIMIZERS.resolve(state["optimizer_config"], f"{self.exp}: optimizer_config")
        self.optimizer = build_optimizer(self.objective.parameters(), self.optimizer_cfg)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.stopped, self.last_validated = state["stopped"], state["last_validated"]
        if (state.get("unlabelled") is None) != (self.unlabelled is None):
            raise SvmixError(f"{self.exp}: existing checkpoint was trained "
                             f"{'without' if self.unlabelled is not None else 'with'} train.kd_unlabelled; "
                             "use a new experiment directory")
        if self.unlabelled is not None:
            self.unlabelled.load_state_dict(state["unlabelled"])
        self.best = BestCheckpoints(self.exp, int(self.cfg["keep_best"]), state["best"])
        if isinstance(self.dataset, ShardStream) and self.batch_in_epoch and (
                state["world_size"] != self.ctx.world_size
                or state["config"]["train"]["num_workers"] != self.cfg["num_workers"]):
            _log.warning("resuming audio shards in the middle of epoch %d with another number of processes or "
                         "DataLoader workers: the epoch's shard split changes, so for the rest of this epoch some "
                         "utterances repeat and others are left out", self.epoch)
        if state["world_size"] == self.ctx.world_size:
            set_rng_state(state["rng"][self.ctx.rank])
        else:
            _log.warning("resuming with %d processes instead of %d: dropout RNG streams restart",
                         self.ctx.world_size, state["world_size"])
        if self.ctx.is_main:
            self.best.remove_strays(self.exp)
            self.metrics.truncate_after(self.step)
            _log.info("resumed %s at step %d (epoch %d)", self.exp, self.step, self.epoch)

    def _initialise_from(self, source: str) -> None:
        """Start from a trained student (and its classifier, when trained on the same speakers)."""
        from svmix.checkpoint import read_checkpoint, resolve_checkpoint_path

        ckpt = read_checkpoint(source)
        self.objective.student.load_state_dict(ckpt["state_dict"])
        exp = resolve_checkpoint_path(source).parent
        state = load_training_state(exp) if (exp / "checkpoints").is_dir() else None
        head = "a new AAM classifier"
        if state is not None and state.get("speakers") == self.speakers:
            aam = {k[len("aam."):]: v for k, v in state["objective"].items() if k.startswith("aam.")}
            if aam and all(v.shape == self.objective.aam.state_dict()[k].shape for k, v in aam.items()
                           if k in self.objective.aam.state_dict()):
                self.objective.aam.load_state_dict(aam, strict=False)
                head = f"the AAM classifier of {exp}"
        _log.info("initialised the student from %s and %s", resolve_checkpoint_path(source), head)

    def _margin_at(self, step: int) -> Optional[float]:
        """The AAM margin of ``train.margin_ramp`` at ``step`` (None without a ramp)."""
        ramp = self.cfg["margin_ramp"]
        if not ramp:
            return None
        end, start = float(self.cfg["aam"]["margin"]), float(ramp["start"])
        return start + (end - start) * min(1.0, step / int(ramp["steps"]))

    # -- loop ----------------------------------------------------------------------------------
    def _finished(self) -> bool:
        cfg = self.cfg
        if self.stopped:
            return True
        if cfg["max_steps"] is not None and self.step >= int(cfg["max_steps"]):
            return True
        return cfg["epochs"] is not None and self.epoch >= int(cfg["epochs"])

    def _total_steps(self) -> int:
        cfg = self.cfg
        totals = [int(cfg["max_steps"])] if cfg["max_steps"] is not None else []
        if cfg["epochs"] is not None:
            totals.append(int(cfg["epochs"]) * self.sampler.batches_per_epoch)
        return min(totals)

    def _interval(self, value: Union[int, str]) -> int:
        """A step interval; ``"epoch"`` means the number of batches per epoch."""
        return self.sampler.batches_per_epoch if value == "epoch" else int(value)

    def _train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        dev = self.ctx.device
        wav, labels = batch["wav"].to(dev, non_blocking=True), batch["label"].to(dev, non_blocking=True)
        mask = batch["mask"].to(dev, non_blocking=True)
        if self.targets.teacher is not None:
            targets = self.targets.online(batch["clean"].to(dev, non_blocking=True), mask.shape[1])
        else:
            targets = batch["target"].to(dev, non_blocking=True) if "target" in batch else None
        wanted = optimizer_config_at(self.cfg, self.step)
        if wanted != self.optimizer_cfg:
            _log.info("step %d: switching optimizer to %s", self.step, wanted["name"])
            self.optimizer_cfg, self.optimizer = wanted, build_optimizer(self.objective.parameters(), wanted)
        set_lr(self.optimizer, self.schedule.lr(self.step))
        margin = self._margin_at(self.step)
        if margin is not None:
            self.objective.aam.set_margin(margin)
        autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if self.amp else nullcontext
        self.optimizer.zero_grad(set_to_none=True)
        unlabelled = None
        if self.unlabelled is not None:  # its gradient is all-reduced with the labelled batch's, below
            u_batch = self.unlabelled.next()
            u_mask = u_batch["mask"].to(dev, non_blocking=True)
            if self.unlabelled_targets.teacher is not None:
                u_targets = self.unlabelled_targets.online(u_batch["clean"].to(dev, non_blocking=True),
                                                           u_mask.shape[1])
            else:
                u_targets = u_batch["target"].to(dev, non_blocking=True)
            unlabelled = accumulated_backward(self.model, self.objective, u_batch["wav"].to(dev, non_blocking=True),
                                              None, u_targets, u_mask, self.accum, scale=self.scaler.scale,
                                              autocast=autocast, sync=False)
        out = accumulated_backward(self.model, self.objective, wav, labels, targets, mask, self.accum,
                                   scale=self.scaler.scale, autocast=autocast)
        if unlabelled is not None:
            out["kd_unlabelled"] = unlabelled["kd"]
            out["loss"] = out["loss"] + unlabelled["loss"]
        if self.cfg["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            out["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.objective.parameters(),
                                                              float(self.cfg["grad_clip"])).detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if margin is not None:
            out["margin"] = torch.tensor(margin)
        return {k: v.detach().float() for k, v in out.items()}

    def _validate(self) -> Optional[float]:
        eer = None
        self.last_validated = self.step
        if self.validator is not None:
            started = time.time()
            eer = self.validator(self.objective.student, self.ctx.device)
            self.metrics.write({"type": "val", "step": self.step, "epoch": self.epoch, "eer": eer,
                                "seconds": round(time.time() - started, 2)})
            _log.info("step %d: validation EER %.3f%%", self.step, eer)
            self.best.offer(self.step, eer, self.objective.student, self._model_extra(eer))
        eer = self.ctx.broadcast(eer)
        if eer is not None:
            self.schedule.on_validation(eer)
            self.early_stopping.update(eer)
            if self.early_stopping.should_stop:
                _log.info("step %d: early stopping (no improvement in %d validations)", self.step,
                          self.early_stopping.patience)
                self.stopped = True
        return eer

    def _unlabelled_targets(self, cfg, kd_data, kd_teacher_cache, teacher) -> Optional[TeacherTargets]:
        """The teacher targets of ``train.kd_unlabelled`` (None when it is off), checked before any work."""
        if not cfg["kd_unlabelled"]:
            if kd_data is not None or kd_teacher_cache is not None:
                raise SvmixError("--kd-data/--kd-teacher-cache need train.kd_unlabelled "
                                 "(e.g. --override 'train.kd_unlabelled={lambda: 1.0}')")
            return None
        if kd_data is None:
            raise SvmixError("train.kd_unlabelled needs --kd-data (a data dir of unlabelled audio)")
        if not self.targets.layers:
            raise SvmixError("train.kd_unlabelled needs distillation on the labelled set too "
                             "(train.kd: a KD loss name and lambda > 0)")
        if int(cfg["kd_unlabelled"]["batch_size"]) % self.ctx.world_size:
            raise SvmixError(f"train.kd_unlabelled.batch_size {cfg['kd_unlabelled']['batch_size']} is not divisible "
                             f"by the {self.ctx.world_size} processes")
        if self.targets.cache is not None and kd_teacher_cache is None:
            raise SvmixError("train.kd_unlabelled with --teacher-cache needs --kd-teacher-cache "
                             "(the teacher cache of --kd-data)")
        if kd_teacher_cache is None:
            return self.targets  # the online teacher
        targets = TeacherTargets(cfg["kd"], kd_teacher_cache, teacher, self.ctx.device)
        built_by = lambda cache: cache.manifest["teacher"].get("fingerprint") or cache.manifest["teacher"]
        if self.targets.cache is not None and built_by(targets.cache) != built_by(self.targets.cache):
            raise SvmixError(f"--kd-teacher-cache {kd_teacher_cache} was built by another teacher than "
                             f"--teacher-cache {self.targets.cache_dir}")
        if targets.hidden_size != self.targets.hidden_size or targets.frame_shift != self.targets.frame_shift:
            raise SvmixError(f"--kd-teacher-cache {kd_teacher_cache}: hidden size {targets.hidden_size} and frame "
                             f"shift {targets.frame_shift} differ from the training targets' "
                             f"({self.targets.hidden_size}, {self.targets.frame_shift})")
        return targets

    def _model_extra(self, eer: Optional[float]) -> Dict[str, Any]:
        return {"num_speakers": len(self.speakers), "step": self.step, "val_eer": eer,
                "train_config": self.cfg, "kd_layers": self.targets.layers, "init_from": self.init_from}

    def run(self) -> Path:
        cfg = self.cfg
        log_every, val_every, ckpt_every = (self._interval(cfg[k])
                                            for k in ("log_every", "val_every", "checkpoint_every"))
        if self.ctx.is_main:
            _log.info("training %s: %d utterances, %d speakers, %d process(es), batch %d x %d accumulated, "
                      "%d steps/epoch", self.exp, self.num_utts, len(self.speakers), self.ctx.world_size,
                      cfg["batch_size"], self.accum, self.sampler.batches_per_epoch)
            if self.unlabelled is not None:
                _log.info("KD on unlabelled audio: %d utterances of %s, batch %d x %d accumulated, lambda %g",
                          self.unlabelled.num_utts, self.unlabelled.data_dir, cfg["kd_unlabelled"]["batch_size"],
                          self.accum, cfg["kd_unlabelled"]["lambda"])
            if isinstance(self.dataset, ShardStream):
                _log.info("reading %d audio shards, %d DataLoader worker(s) per process", len(self.dataset.index.paths),
                          self.dataset.num_streams)
        bar = Progress(total=self._total_steps(), initial=self.step, desc="train", unit="step", enabled=self.progress)
        sums: Dict[str, torch.Tensor] = {}
        count, started = 0, time.time()
        last_saved = self.step
        self.objective.train()
        while not self._finished():
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            for batch in self.loader:
                out = self._train_step(batch)
                self.step += 1
                self.batch_in_epoch += 1
                if self.batch_in_epoch == self.sampler.batches_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update(1)
                if self.step % log_every == 0:
                    means = {k: float(self.ctx.mean(v / count)) for k, v in sums.items()}
                    record = {"type": "train", "step": self.step, "epoch": self.epoch,
                              "lr": self.optimizer.param_groups[0]["lr"],
                              "steps_per_s": round(count / max(time.time() - started, 1e-9), 3), **means}
                    self.metrics.write(record)
                    if self.ctx.is_main:
                        _log.info("step %d: %s", self.step, " ".join(f"{k} {v:.4g}" for k, v in means.items()),
                                  extra=DETAIL)
                    sums, count, started = {}, 0, time.time()
                if self.step % val_every == 0:
                    self._validate()
                if self.step % ckpt_every == 0 or self.step == self.last_validated or self._finished():
                    self._save()
                    last_saved = self.step
                if self._finished():
                    break
        bar.close()
        if self.validating and self.last_validated != self.step:  # the final weights compete too
            self._validate()
            self._save()
        elif last_saved != self.step:
            self._save()
        out = self.exp / "model.pt"
        if self.ctx.is_main:
            if self.best.entries:
                average_checkpoints(self.exp, int(cfg["average"]) or 1, out)
            else:
                save_model(out, self.objective.student, self._model_extra(None))
                _log.info("wrote %s (final weights; no validation data)", out)
            self.metrics.close()
        self.ctx.barrier()
        return out
