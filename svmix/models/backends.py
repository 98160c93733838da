"""Speaker backends over the encoder's hidden-state stack (B, S, T, H) → embeddings (B, D)."""
from __future__ import annotations

import torch
from torch import nn

from svmix.registry import BACKENDS


class LayerWeightedSum(nn.Module):
    """Σ_l w_l h_l with learnable weights initialised U[0,1) and not softmax-normalised (docs/method.md §Backends)."""

    def __init__(self, num_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.rand(1, num_states, 1, 1))

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, S, T, H) → (B, T, H)
        return (states * self.weights).sum(dim=1)


@BACKENDS.register("linear")
class LinearBackend(nn.Module):
    """The paper's 'single linear layer' read as in the group's OS-KDFT: optional weighted layer
    sum (else the last state) → mean‖std over time → Linear(2H→D) → BatchNorm."""

    def __init__(self, hidden: int, num_states: int, embed_dim: int = 192, weighted_sum: bool = True):
        super().__init__()
        self.layer_sum = LayerWeightedSum(num_states) if weighted_sum else None
        self.linear = nn.Linear(2 * hidden, embed_dim)
        self.norm = nn.BatchNorm1d(embed_dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.layer_sum(states) if self.layer_sum is not None else states[:, -1]
        stats = torch.cat([x.mean(dim=1), x.std(dim=1)], dim=-1)
        return self.norm(self.linear(stats))
