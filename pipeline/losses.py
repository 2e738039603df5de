"""Losses: Dice + cross-entropy with deep supervision over stacked heads.

Our networks return their deep-supervision heads stacked on dim 1, ``(N, L, C, *spatial)``,
deepest (full-resolution, main) head first, the order of MONAI's ``DynUNet``. MONAI's
``DeepSupervisionLoss`` takes a list, so :class:`DeepSupervisedLoss` unbinds the stack first.
"""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn


class DeepSupervisedLoss(nn.Module):
    """Apply a loss to every deep-supervision head and combine them with MONAI's weights.

    Args:
        loss: the per-head loss (default ``DiceCELoss(to_onehot_y=True, softmax=True)``).
        weight_mode: MONAI ``DeepSupervisionLoss`` mode: ``"exp"`` (weights 1, 1/2, 1/4, ... from the
            main head on, normalised), ``"same"`` or ``"two"``.
        weights: explicit per-head weights (main head first); overrides ``weight_mode``.

    Call with ``input`` of shape ``(N, L, C, *spatial)`` (stacked heads; a plain ``(N, C, *spatial)``
    tensor is one head) and ``target`` of shape ``(N, 1, *spatial)``. Returns a scalar tensor.

    Raises (on call):
        ValueError: ``input`` has neither the target's rank nor one more.
    """

    def __init__(self, loss: nn.Module | None = None, weight_mode: str = "exp", weights: list[float] | None = None):
        super().__init__()
        self.loss = loss if loss is not None else DiceCELoss(to_onehot_y=True, softmax=True)
        self.combined = DeepSupervisionLoss(self.loss, weight_mode=weight_mode, weights=weights)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.dim() == target.dim() + 1:
            return self.combined(list(torch.unbind(input, dim=1)), target)
        if input.dim() == target.dim():
            return self.loss(input, target)
        raise ValueError(f"input of shape {tuple(input.shape)} does not fit target of shape {tuple(target.shape)}")
