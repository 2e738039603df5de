"""Inference on the foreground's bounding box only: :class:`ForegroundCropInferer`, nnU-Net's crop to the non-zero
region applied at prediction time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms.utils import generate_spatial_bounding_box

__all__ = ["ForegroundCropInferer", "foreground_box"]

# exp() of this underflows to 0 in float32, so a softmax over [0, this] is exactly [1, 0]; it also fits float16
BACKGROUND_LOGIT_GAP = -1.0e4


def _is_nonzero(x: Any) -> Any:
    return x != 0


def foreground_box(inputs: torch.Tensor, margin: int | Sequence[int] = 0) -> tuple[slice, ...] | None:
    """The bounding box of the voxels where any channel of any batch item is non-zero.

    The bundles' normalisations leave 0 outside the acquired anatomy (``NormalizeModalitiesd``'s ``nonzero``
    masks, CT windows that clip air to 0, zero padding from resampling), so this is the head, as nnU-Net's
    ``crop_to_nonzero`` finds it on the raw images.

    Args:
        inputs: (N, C, *spatial).
        margin: voxels added on each side, one for all spatial axes or one per axis (clipped to the volume).

    Returns:
        One slice per spatial axis, or None when no voxel is non-zero.

    Raises:
        ValueError: ``inputs`` has fewer than three axes, or ``margin`` has the wrong length or a negative entry.
    """
    if inputs.dim() < 3:
        raise ValueError(f"inputs must be (N, C, *spatial), got shape {tuple(inputs.shape)}")
    spatial = inputs.dim() - 2
    margins = [int(margin)] * spatial if isinstance(margin, int) else [int(m) for m in margin]
    if len(margins) != spatial or min(margins) < 0:
        raise ValueError(f"margin must be one non-negative int or one per spatial axis ({spatial}), got {margin}")
    plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
    union = plain.reshape(-1, *plain.shape[2:])  # every channel of every batch item counts
    start, end = generate_spatial_bounding_box(union, select_fn=_is_nonzero, margin=margins, allow_smaller=True)
    if any(e <= s for s, e in zip(start, end)):
        return None
    return tuple(slice(int(s), int(e)) for s, e in zip(start, end))


class ForegroundCropInferer(Inferer):
    """Run ``inferer`` on the bounding box of the input's foreground (:func:`foreground_box`) and give every voxel
    outside it to the background class.

    This is nnU-Net's crop to the non-zero region: the windows then cover the head rather than the air around it,
    which in thick CTP slabs is most of the field of view, so fewer windows run and they lie on the anatomy the
    network was trained on. The output has the input's spatial shape and metadata; outside the box it holds the
    logits ``[0, -1e4, ...]``, so a softmax after it gives background with probability exactly 1, and a sigmoid of a
    one-channel output gives 0. An input without any non-zero voxel is background everywhere and the network is not
    called.

    Args:
        inferer: the inferer to run on the cropped input (windows, tiles, TTA, an ensemble, ...).
        margin: voxels kept around the foreground on each side (one for all axes, or one per axis).
    """

    def __init__(self, inferer: Inferer, margin: int | Sequence[int] = 0) -> None:
        super().__init__()
        self.inferer = inferer
        self.margin = margin

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inferer`` on the foreground box of ``inputs`` (N, C, *spatial), pasted into a background output.

        Raises:
            ValueError: from :func:`foreground_box`; whatever ``inferer`` raises.
        """
        box = foreground_box(inputs, self.margin)
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        if box is not None and all(b.stop - b.start == n for b, n in zip(box, plain.shape[2:])):
            return self.inferer(inputs, network, *args, **kwargs)  # nothing to crop
        if box is None:
            channels = int(getattr(network, "out_channels", 2))
            out = self._background(plain.shape[0], channels, plain.shape[2:], torch.float32, plain.device)
        else:
            cropped = self.inferer(plain[(slice(None), slice(None), *box)].contiguous(), network, *args, **kwargs)
            cropped = torch.as_tensor(cropped)
            out = self._background(plain.shape[0], cropped.shape[1], plain.shape[2:], cropped.dtype, cropped.device)
            out[(slice(None), slice(None), *box)] = cropped
        if isinstance(inputs, MetaTensor):
            out = MetaTensor(out, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return out

    @staticmethod
    def _background(batch: int, channels: int, spatial: Sequence[int], dtype: torch.dtype,
                    device: torch.device) -> torch.Tensor:
        out = torch.full((batch, channels, *spatial), BACKGROUND_LOGIT_GAP, dtype=dtype, device=device)
        if channels > 1:
            out[:, 0] = 0.0
        return out
