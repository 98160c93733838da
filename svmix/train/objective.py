"""What is trained: the student, the AAM-softmax classifier and the KD head(s), as one module
(so one optimiser and one DDP wrapper cover all of them). Total loss = AAM + λ·KD (docs/method.md §Losses);
a batch without labels (KD on unlabelled audio) has the loss λ_u·KD (docs/method.md §KD on unlabelled audio)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from svmix.registry import CLASSIFICATION_LOSSES, KD_LOSSES
from svmix.train import losses  # noqa: F401  (registers the losses)

# train.kd keys the trainer reads; the others are the KD loss's constructor arguments
KD_TRAINER_KEYS = ("name", "layers", "lambda", "target_norm")
# train.kd.target_norm: null (the paper: raw teacher states) or "layer" (each target frame standardised
# over its H dims, without affine parameters, before any KD loss). A pre-LN teacher's intermediate
# states are not normalised and can be far larger than its final-LN output (docs/method.md §Losses).
KD_TARGET_NORMS = ("layer",)


def kd_active(kd_config: Dict[str, Any]) -> bool:
    """Whether a ``train.kd`` section distils: a KD loss is named and λ > 0. With λ = 0 no KD head
    is built and no teacher targets are needed (the supervised baselines train that way)."""
    return bool(kd_config.get("name")) and float(kd_config.get("lambda", 1.0)) > 0


def kd_loss_params(kd_config: Dict[str, Any]) -> Dict[str, Any]:
    """The constructor arguments of the KD loss in a ``train.kd`` section."""
    return {k: v for k, v in kd_config.items() if k not in KD_TRAINER_KEYS}


class DistillationObjective(nn.Module):
    def __init__(self, student: nn.Module, class_counts: Sequence[int], aam_config: Dict[str, Any],
                 kd_config: Dict[str, Any], teacher_hidden: Optional[int] = None, unlabelled_lambda: float = 0.0):
        super().__init__()
        self.student = student
        self.unlabelled_lambda = float(unlabelled_lambda)
        self.aam = CLASSIFICATION_LOSSES.build(aam_config, embed_dim=student.embed_dim,
                                               num_classes=len(class_counts), class_counts=list(class_counts))
        self.kd_lambda = float(kd_config.get("lambda", 1.0))
        self.kd_target_norm = kd_config.get("target_norm")
        if self.kd_target_norm not in (None,) + KD_TARGET_NORMS:
            raise ValueError(f"train.kd.target_norm must be null or one of {KD_TARGET_NORMS}, "
                             f"got {self.kd_target_norm!r}")
        self.kd = None
        if kd_active(kd_config):
            self.kd = KD_LOSSES.build({"name": kd_config["name"], **kd_loss_params(kd_config)},
                                      student_hidden=int(student.config["hidden"]), teacher_hidden=teacher_hidden,
                                      num_targets=len(kd_config["layers"]))

    def normalisers(self, labels: Optional[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """(2,) denominators of the AAM and KD batch means for a batch (``mask``: (B, T) valid frames),
        so that micro-batch losses can be weighted into the loss of their union (gradient accumulation).
        Without labels the AAM denominator is 1 (there is no AAM term)."""
        kd = self.kd.normaliser(mask) if self.kd is not None else torch.tensor(1.0)
        aam = self.aam.normaliser(labels).cpu() if labels is not None else torch.tensor(1.0)
        return torch.stack([aam, kd.cpu()])

    def forward(self, wav: torch.Tensor, labels: Optional[torch.Tensor], targets: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None, shares: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Losses of the batch; ``shares`` (2,) weights its AAM and KD means as parts of a larger batch
        (the loss is then ``shares[0]·aam + λ·shares[1]·kd``; the reported ``aam``/``kd`` are unweighted).
        ``labels`` None: a batch of unlabelled audio, whose loss is ``λ_u·shares[1]·kd`` (``aam`` 0)."""
        states = self.student.hidden_states(wav)
        if labels is None:
            if self.kd is None or not self.unlabelled_lambda:
                raise ValueError("a batch without labels needs a KD loss and unlabelled_lambda > 0")
            kd = self._kd(states, targets, mask)
            weight = self.unlabelled_lambda * (1.0 if shares is None else shares[1])
            return {"loss": weight * kd, "aam": kd.new_zeros(()), "kd": kd.detach()}
        aam = self.aam(self.student.backend(states), labels)
        if self.kd is None:
            kd = aam.new_zeros(())
        else:
            kd = self._kd(states, targets, mask)
        if shares is None:
            loss = aam + self.kd_lambda * kd
        else:
            loss = shares[0] * aam + self.kd_lambda * shares[1] * kd
        return {"loss": loss, "aam": aam.detach(), "kd": kd.detach()}

    def _kd(self, states: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if self.kd_target_norm == "layer":
            targets = F.layer_norm(targets, targets.shape[-1:])
        return self.kd(states, targets, mask)
