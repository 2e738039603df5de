"""Losses: Dice + cross-entropy (optionally weighted per voxel) with deep supervision over stacked heads.

Our networks return their deep-supervision heads stacked on dim 1, ``(N, L, C, *spatial)``,
deepest (full-resolution, main) head first, the order of MONAI's ``DynUNet``. MONAI's
``DeepSupervisionLoss`` takes a list, so :class:`DeepSupervisedLoss` unbinds the stack first.

MONAI's ``SupervisedTrainer`` calls ``loss_function(pred, label)`` only, so a per-voxel weight map
(the U-Net border weights, :class:`pipeline.transforms.BorderWeightd`) travels as a second channel of
the target (``pipeline.training.PrepareTrainingBatch`` appends it) and
:class:`BorderWeightedDiceCELoss` splits it off again. Deep supervision resizes that two-channel
target like a plain one (nearest), so the weights stay aligned with the labels on every head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class BorderWeightedDiceCELoss(DiceCELoss):
    """MONAI's ``DiceCELoss`` whose cross-entropy term is weighted per voxel by a map in the target.

    Takes every ``DiceCELoss`` argument; ``to_onehot_y=True`` and a softmax (multi-channel) output are
    required, since the target holds class indices. Call with ``input`` ``(N, C, *spatial)`` logits and

    - ``target`` ``(N, 1, *spatial)``: class indices; exactly ``DiceCELoss`` (no weights);
    - ``target`` ``(N, 2, *spatial)``: channel 0 the class indices, channel 1 the weight map w(x) (>= 0); the
      loss is ``lambda_dice * Dice(input, labels) + lambda_ce * CE_w`` with the weighted mean
      ``CE_w = sum_x w(x) CE(x) / sum_x w(x)`` over the batch (``reduction="mean"``; the convention of
      PyTorch's class-weighted cross-entropy: the weights set the voxels' relative importance, as in the
      paper's energy sum_x w(x) log p(x), while the term keeps the scale of a plain cross-entropy, so
      ``lambda_ce`` and the learning rate keep their meaning; all-ones weights give the plain
      cross-entropy) or the sum ``sum_x w(x) CE(x)`` (``reduction="sum"``). ``DiceCELoss``'s class ``weight``
      and ``label_smoothing`` apply to the per-voxel cross-entropy as in ``torch.nn.functional.cross_entropy``.

    Returns (on call): a scalar tensor.

    Raises:
        ValueError: ``to_onehot_y`` is not set, a reduction other than mean or sum (on construction); a target
            with neither 1 nor 2 channels, or a one-channel (sigmoid) input with weights (on call).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if not self.dice.to_onehot_y:
            raise ValueError("BorderWeightedDiceCELoss needs to_onehot_y=True: the target holds class indices (+ weights)")
        if self.cross_entropy.reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {self.cross_entropy.reduction!r}")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] == 1:
            return super().forward(input, target)
        if target.shape[1] != 2 or input.dim() != target.dim():
            raise ValueError(
                f"target must be (N, 1, ...) labels or (N, 2, ...) labels and weights for input {tuple(input.shape)}, "
                f"got {tuple(target.shape)}"
            )
        if input.shape[1] == 1:
            raise ValueError("per-voxel weights need a softmax output with at least two channels")
        labels, weights = target[:, :1], target[:, 1]
        dice = self.dice(input, labels)
        ce = F.cross_entropy(
            input, labels[:, 0].long(), weight=self.cross_entropy.weight, reduction="none",
            label_smoothing=self.cross_entropy.label_smoothing,
        )
        weights = weights.to(ce.dtype)
        ce_term = (ce * weights).sum()
        if self.cross_entropy.reduction == "mean":
            ce_term = ce_term / weights.sum().clamp_min(torch.finfo(ce.dtype).tiny)
        return self.lambda_dice * dice + self.lambda_ce * ce_term
