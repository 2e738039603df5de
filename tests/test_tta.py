"""Mirror test-time augmentation: the flips chosen and the averaging (``predict --tta``: test_predict_outputs.py)."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer
from torch import nn

from pipeline.inferers import FlipTTAInferer, default_tta_flips, segmentation_inferer


def test_the_flips_are_the_axes_the_network_pools():
    assert default_tta_flips([[2, 2, 1]] * 4) == [[0], [1], [0, 1]]
    assert default_tta_flips([[2, 2, 1], [2, 2, 2]]) == [[0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2]]
    assert default_tta_flips([2, 2]) == default_tta_flips(None)


class Shifted(nn.Module):
    """Logits that depend on the position along axis 0, so that a flip changes them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-2, 2, x.shape[2]).view(1, 1, -1, 1, 1)
        return torch.cat([x[:, :1] * 0, x[:, :1] + ramp], dim=1)


def test_the_output_is_the_log_of_the_mean_probabilities_over_the_flips():
    x = torch.rand(1, 1, 6, 5, 2)
    net = Shifted()
    out = FlipTTAInferer(SimpleInferer(), [[0], [1]])(x, net)
    expected = torch.softmax(net(x), 1)
    expected = expected + torch.flip(torch.softmax(net(torch.flip(x, [2])), 1), [2])
    expected = expected + torch.flip(torch.softmax(net(torch.flip(x, [3])), 1), [3])
    assert torch.allclose(torch.softmax(out, 1), expected / 3, atol=1e-6)
    assert not torch.allclose(torch.softmax(out, 1), torch.softmax(net(x), 1), atol=1e-3)


def test_a_mirror_symmetric_network_gives_the_same_probabilities_with_tta():
    x = torch.rand(1, 4, 32, 32, 2)
    net = nn.Conv3d(4, 2, 1)
    plain = torch.softmax(net(x), 1)
    inferer = segmentation_inferer(net, [16, 16, -1], tta=True, tta_flips=[[0], [1], [0, 1]], crop_foreground=False)
    assert isinstance(inferer, FlipTTAInferer)
    assert torch.allclose(torch.softmax(inferer(x, net), 1), plain, atol=1e-5)


def test_bad_flip_sets_are_refused():
    with pytest.raises(ValueError, match="flip set"):
        FlipTTAInferer(SimpleInferer(), [[]])
    with pytest.raises(ValueError, match="do not fit"):
        FlipTTAInferer(SimpleInferer(), [[3]])(torch.rand(1, 1, 4, 4, 2), nn.Identity())
