"""Training losses (docs/method.md §Losses): AAM-softmax with top-K hard negatives, and the two KD losses.

The classification loss is registered in ``svmix.registry.CLASSIFICATION_LOSSES`` (config
``train.aam``), the KD losses in ``svmix.registry.KD_LOSSES`` (config ``train.kd``): their
constructors take different arguments, so one kind cannot be named where the other is expected.
KD losses take a frame mask ``(B, T)`` (True where the teacher frame exists) so frames that come
from repeat-padding a short utterance are ignored.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from svmix.registry import CLASSIFICATION_LOSSES, KD_LOSSES


@CLASSIFICATION_LOSSES.register("aam_topk")
class AAMSoftmaxTopK(nn.Module):
    """Additive angular margin softmax whose K hardest non-target classes get a negative margin.

    Target logit cos(θ+m); the K non-target classes with the highest cosine get cos(θ−m_neg); all
    logits ×scale; class-weighted cross-entropy with w_c = N_total / N_c (``class_counts``).
    ``impostor_weight`` > 1 is the paper's "weight multiplier" reading: the K hard negatives'
    exponentials in the softmax denominator are multiplied by it (log w added to their logits);
    the authors' code has no such factor (default 1).
    """

    def __init__(self, embed_dim: int, num_classes: int, class_counts: Optional[Sequence[int]] = None,
                 margin: float = 0.2, scale: float = 30.0, top_k: int = 5, negative_margin: float = 0.1,
                 impostor_weight: float = 1.0, class_weighted: bool = True):
        super().__init__()
        self.num_classes, self.scale, self.top_k = num_classes, scale, min(top_k, num_classes - 1)
        self.set_margin(margin)
        self.cos_n, self.sin_n = math.cos(negative_margin), math.sin(negative_margin)
        self.log_impostor_weight = math.log(impostor_weight)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_normal_(self.weight)
        if class_weighted and class_counts is not None:
            counts = torch.as_tensor(class_counts, dtype=torch.float32)
            if counts.numel() != num_classes or (counts <= 0).any():
                raise ValueError("class_counts needs one positive count per class")
            self.register_buffer("class_weights", counts.sum() / counts)
        else:
            self.class_weights = None

    def set_margin(self, margin: float) -> None:
        """The target's additive angular margin (changed during training by ``train.margin_ramp``)."""
        self.margin = float(margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        sin = torch.sqrt(torch.clamp(1.0 - cos * cos, 0.0, 1.0))
        target = F.one_hot(labels, self.num_classes).to(cos.dtype)
        hard = torch.zeros_like(cos)
        if self.top_k > 0:
            # The target is pushed out of the ranking by multiplying its cosine by -2 (as coded); a
            # target with a negative cosine can still be picked, and then gets phi + hard - cos.
            ranking = cos * (1.0 - 3.0 * target)
            hard.scatter_(1, ranking.topk(self.top_k, dim=1).indices, 1.0)
        hard_logit = cos * self.cos_n + sin * self.sin_n + (1.0 - target) * (self.log_impostor_weight / self.scale)
        phi = cos * self.cos_m - sin * self.sin_m
        logits = target * phi + hard * hard_logit + (1.0 - target - hard) * cos
        return logits * self.scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels, weight=self.class_weights)

    def normaliser(self, labels: torch.Tensor) -> torch.Tensor:
        """The denominator of the loss's batch mean: the summed class weights of ``labels``."""
        if self.class_weights is None:
            return torch.tensor(float(len(labels)))
        return self.class_weights.to(labels.device)[labels].sum().float()


def _masked_frames(mask: Optional[torch.Tensor], ref: torch.Tensor) -> torch.Tensor:
    """(B, T) float mask, all ones when ``mask`` is None."""
    if mask is None:
        return ref.new_ones(ref.shape[:2])
    return mask.to(ref.dtype)


@KD_LOSSES.register("last_mse")
class LastMSE(nn.Module):
    """MSE between the student's last state and one teacher layer, averaged over valid B·T·H.

    When student and teacher hidden sizes differ (the mini recipe), the student state first goes
    through a learned ``Linear(student_hidden → teacher_hidden)`` (trained with the rest)."""

    def __init__(self, student_hidden: int, teacher_hidden: int, num_targets: int = 1):
        super().__init__()
        if num_targets != 1:
            raise ValueError(f"last_mse distils exactly one teacher layer, got {num_targets}")
        self.projection = nn.Linear(student_hidden, teacher_hidden) if student_hidden != teacher_hidden else None

    def forward(self, states: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """states (B, L+1, T, Hs); targets (B, 1, T, Ht); mask (B, T)."""
        pred = states[:, -1]
        if self.projection is not None:
            pred = self.projection(pred)
        m = _masked_frames(mask, pred)
        err = ((pred - targets[:, 0]) ** 2).mean(dim=-1)  # (B, T)
        return (err * m).sum() / m.sum().clamp_min(1.0)

    @staticmethod
    def normaliser(mask: torch.Tensor) -> torch.Tensor:
        """The denominator of the loss's batch mean: the number of valid frames."""
        return mask.float().sum().clamp_min(1.0)


@KD_LOSSES.register("last_mse_pooled")
class LastMSEPooled(nn.Module):
    """``last_mse`` plus an utterance-level term (beyond the paper): ``pooled_weight`` · (1 − cos) between
    the student's and the teacher's states averaged over each crop's valid frames, both centred by
    their batch mean. The frame MSE is mostly the teacher's phonetic content; the pooled, centred
    term is its speaker direction (the teacher's mean-pooled states are a speaker embedding of their
    own; docs/method.md §KD with a pooled term). Per crop, then averaged over the batch; the batch
    centring makes micro-batches (``train.accum_grad``) differ from one batch, like BatchNorm."""

    def __init__(self, student_hidden: int, teacher_hidden: int, num_targets: int = 1, pooled_weight: float = 1.0):
        super().__init__()
        if num_targets != 1:
            raise ValueError(f"last_mse_pooled distils exactly one teacher layer, got {num_targets}")
        self.pooled_weight = float(pooled_weight)
        self.projection = nn.Linear(student_hidden, teacher_hidden) if student_hidden != teacher_hidden else None

    def forward(self, states: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """states (B, L+1, T, Hs); targets (B, 1, T, Ht); mask (B, T)."""
        pred = states[:, -1]
        if self.projection is not None:
            pred = self.projection(pred)
        target = targets[:, 0]
        m = _masked_frames(mask, pred)
        frames = m.sum(dim=1).clamp_min(1.0)  # (B,)
        mse = (((pred - target) ** 2).mean(dim=-1) * m).sum(dim=1) / frames
        pooled_pred = (pred * m[..., None]).sum(dim=1) / frames[:, None]
        pooled_target = (target * m[..., None]).sum(dim=1) / frames[:, None]
        if len(pred) > 1:  # one crop alone has no batch to be centred by
            pooled_pred = pooled_pred - pooled_pred.mean(dim=0, keepdim=True)
            pooled_target = pooled_target - pooled_target.mean(dim=0, keepdim=True)
        cos = F.cosine_similarity(pooled_pred, pooled_target, dim=-1, eps=1e-6)
        return (mse + self.pooled_weight * (1.0 - cos)).mean()

    @staticmethod
    def normaliser(mask: torch.Tensor) -> torch.Tensor:
        """The denominator of the loss's batch mean: the number of crops."""
        return torch.tensor(float(len(mask)))


@KD_LOSSES.register("distilhubert")
class DistilHuBERTLoss(nn.Module):
    """DistilHuBERT-style KD: one Linear→GELU→Linear head per target teacher layer, all fed the
    student's last state. Per sample and head: mean_{T·H}|p−t| − λ·Σ_t log σ(cos(p_t, t_t));
    summed over heads, averaged over the batch. Masked frames are left out of both terms."""

    def __init__(self, student_hidden: int, teacher_hidden: int, num_targets: int = 3, cos_weight: float = 1.0):
        super().__init__()
        self.cos_weight = cos_weight
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(student_hidden, teacher_hidden), nn.GELU(),
                          nn.Linear(teacher_hidden, teacher_hidden))
            for _ in range(num_targets))

    def forward(self, states: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """states (B, L+1, T, Hs); targets (B, K, T, Ht); mask (B, T)."""
        last = states[:, -1]
        m = _masked_frames(mask, last)
        frames = m.sum(dim=1).clamp_min(1.0)  # valid frames per sample
        total = last.new_zeros(last.shape[0])
        for k, head in enumerate(self.heads):
            pred, target = head(last), targets[:, k]
            l1 = ((pred - target).abs().mean(dim=-1) * m).sum(dim=1) / frames
            cos = F.logsigmoid(F.cosine_similarity(pred, target, dim=-1))
            total = total + l1 - self.cos_weight * (cos * m).sum(dim=1)
        return total.mean()

    @staticmethod
    def normaliser(mask: torch.Tensor) -> torch.Tensor:
        """The denominator of the loss's batch mean: the number of samples."""
        return torch.tensor(float(len(mask)))
