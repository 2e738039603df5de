"""The foreground crop at inference: the box, what the wrapped inferer sees, and what lies outside the box."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from torch import nn

from pipeline.inferers import (ForegroundCropInferer, FlipTTAInferer, foreground_box, inferer_chain,
                               segmentation_inferer)


def head(shape=(1, 3, 40, 36, 4), box=(slice(7, 30), slice(5, 21), slice(1, 4))) -> torch.Tensor:
    """Noise inside ``box`` (one channel may be 0 where the others are not), zero outside it."""
    torch.manual_seed(0)
    x = torch.zeros(shape)
    inside = torch.randn(shape[0], shape[1], *[b.stop - b.start for b in box])
    x[(slice(None), slice(None), *box)] = inside
    x[:, 1] = 0.0  # a channel that is zero everywhere does not shrink the box
    return x


class Recorder(nn.Module):
    """A 1x1 convolution that records the shapes it is called with."""

    def __init__(self, channels: int = 3, out_channels: int = 2) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv3d(channels, out_channels, 1)
        self.out_channels = out_channels
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.conv(x)


def test_the_box_is_where_any_channel_is_non_zero():
    x = head()
    assert foreground_box(x) == (slice(7, 30), slice(5, 21), slice(1, 4))
    # a margin is clipped to the volume
    assert foreground_box(x, margin=[8, 2, 3]) == (slice(0, 38), slice(3, 23), slice(0, 4))
    # negative values count (z-scored channels), and a voxel in the second batch item widens the box
    y = torch.cat([x, torch.zeros_like(x)])
    y[1, 2, 39, 0, 0] = -0.5
    assert foreground_box(y) == (slice(7, 40), slice(0, 21), slice(0, 4))
    assert foreground_box(torch.zeros(1, 2, 8, 8, 2)) is None


@pytest.mark.parametrize("margin", [-1, [1, 1]])
def test_a_bad_margin_is_refused(margin):
    with pytest.raises(ValueError, match="margin"):
        foreground_box(head(), margin)


def test_the_network_sees_the_box_and_the_rest_is_background():
    x, net = head(), Recorder()
    inner = SlidingWindowInferer(roi_size=[16, 16, -1], overlap=0.5, mode="gaussian", sw_batch_size=64)
    with torch.no_grad():
        out = ForegroundCropInferer(inner)(x, net)
        expected_inside = inner(x[:, :, 7:30, 5:21, 1:4], net)
    assert out.shape == (1, 2, 40, 36, 4)
    assert {s[2:] for s in net.shapes} == {(16, 16, 3)}  # windows of the box's depth only
    torch.testing.assert_close(out[:, :, 7:30, 5:21, 1:4], expected_inside)
    probabilities = torch.softmax(out, 1)
    outside = torch.ones(40, 36, 4, dtype=torch.bool)
    outside[7:30, 5:21, 1:4] = False
    assert torch.equal(probabilities[0, 1][outside], torch.zeros(int(outside.sum())))
    assert torch.equal(probabilities[0, 0][outside], torch.ones(int(outside.sum())))


def test_fewer_windows_run_than_on_the_whole_volume():
    x = torch.zeros(1, 3, 96, 96, 2)
    x[:, :, 30:70, 28:66] = torch.rand(1, 3, 40, 38, 2) + 0.1
    inner = SlidingWindowInferer(roi_size=[32, 32, -1], overlap=0.5, mode="gaussian")
    cropped, whole = Recorder(), Recorder()
    with torch.no_grad():
        ForegroundCropInferer(inner)(x, cropped)
        inner(x, whole)
    assert len(cropped.shapes) == 4 and len(whole.shapes) == 25


def test_an_empty_input_is_background_without_calling_the_network():
    net = Recorder(out_channels=3)
    x = MetaTensor(torch.zeros(1, 3, 8, 8, 2), affine=torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0])))
    out = ForegroundCropInferer(SlidingWindowInferer(roi_size=[4, 4, -1]))(x, net)
    assert net.shapes == []
    assert out.shape == (1, 3, 8, 8, 2) and isinstance(out, MetaTensor)
    assert torch.equal(torch.softmax(out, 1).argmax(1), torch.zeros(1, 8, 8, 2, dtype=torch.long))
    # a one-channel (sigmoid) output is 0 after the sigmoid
    single = ForegroundCropInferer(SlidingWindowInferer(roi_size=[4, 4, -1]))(x, Recorder(out_channels=1))
    assert float(torch.sigmoid(single).max()) == 0.0


def test_the_output_keeps_the_inputs_metadata_and_a_full_box_is_left_alone():
    affine = torch.diag(torch.tensor([0.9, 0.9, 12.0, 1.0]))
    x = MetaTensor(head(), affine=affine)
    out = ForegroundCropInferer(SlidingWindowInferer(roi_size=[16, 16, -1]))(x, Recorder())
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, affine.to(out.affine.dtype))
    full = torch.rand(1, 3, 20, 20, 2) + 0.5
    inner = SlidingWindowInferer(roi_size=[16, 16, -1])
    net = Recorder()
    with torch.no_grad():
        torch.testing.assert_close(ForegroundCropInferer(inner)(full, net), inner(full, net))


def test_the_bundles_inferer_crops_around_tta_unless_told_not_to():
    net = Recorder()
    chosen = segmentation_inferer(net, [16, 16, -1], tta=True)
    assert isinstance(chosen, ForegroundCropInferer) and isinstance(chosen.inferer, FlipTTAInferer)
    assert [type(i).__name__ for i in inferer_chain(chosen)] == [
        "ForegroundCropInferer", "FlipTTAInferer", "AutocastInferer", "WindowBudgetInferer"]
    plain = segmentation_inferer(net, [16, 16, -1], tta=True, crop_foreground=False)
    assert isinstance(plain, FlipTTAInferer)
    x = head()
    with torch.no_grad():
        cropped, uncropped = chosen(x, net), plain(x, net)
    # inside the box TTA ran on the box; outside, background (the uncropped run predicts something else there)
    inside = (slice(None), slice(None), slice(7, 30), slice(5, 21), slice(1, 4))
    assert cropped[inside].shape == uncropped[inside].shape
    assert torch.softmax(cropped, 1)[0, 1, 0, 0, 0] == 0
