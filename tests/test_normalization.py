"""Tile-independent normalisations: channel-wise layer norm and batch renormalisation, by name in every network."""

from __future__ import annotations

import pytest
import torch
from monai.networks.layers.utils import get_norm_layer

from pipeline.inferers import OverlapTileInferer, segmentation_inferer, tile_independent
from pipeline.networks import UNet, UNetPlusPlus
from pipeline.networks.normalization import BatchRenorm, ChannelLayerNorm


def test_channel_layer_norm_normalises_each_voxel_over_its_channels_whatever_the_crop():
    torch.manual_seed(0)
    norm = ChannelLayerNorm(6)
    x = torch.randn(2, 6, 10, 12, 3) * 4 + 7
    y = norm(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 10, 12, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 10, 12, 3), atol=1e-3, rtol=0)
    torch.testing.assert_close(norm(x[..., 2:7, 3:9, :]), y[..., 2:7, 3:9, :])


def test_batch_renorm_is_batch_norm_during_warm_up_and_uses_running_statistics_at_inference():
    torch.manual_seed(0)
    renorm, batch = BatchRenorm(4, warmup_steps=3), torch.nn.BatchNorm3d(4)
    for _ in range(3):
        x = torch.randn(3, 4, 6, 6, 2) * 2 + 1
        torch.testing.assert_close(renorm(x), batch(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(renorm.running_mean, batch.running_mean)
    torch.testing.assert_close(renorm.running_var, batch.running_var)
    renorm.eval(), batch.eval()
    x = torch.randn(1, 4, 9, 5, 2)
    torch.testing.assert_close(renorm(x), batch(x), atol=1e-5, rtol=1e-5)


def test_batch_renorm_corrects_the_batch_statistics_towards_the_running_ones_after_warm_up():
    torch.manual_seed(0)
    renorm = BatchRenorm(2, warmup_steps=0, r_max=1.5, d_max=0.5)
    x = torch.randn(2, 2, 8, 8, 1) * 10 + 20  # far from the initial running mean 0 and variance 1
    y = renorm(x)
    mean, std = x.mean((0, 2, 3, 4)), torch.sqrt(x.var((0, 2, 3, 4), unbiased=False) + renorm.eps)
    expected = (x - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1) * 1.5 + 0.5  # r and d clipped
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("norm", ["channel_layer", "batch_renorm"])
def test_every_network_takes_them_by_name_and_inference_grows_tiles(norm):
    assert type(get_norm_layer(norm, 3, 8)).__name__ in ("ChannelLayerNorm", "BatchRenorm")
    for net in (UNetPlusPlus(spatial_dims=3, in_channels=2, out_channels=2, strides=[[2, 2, 1]] * 2,
                             kernel_sizes=[[3, 3, 1]] * 3, features=[4, 8, 8], norm=norm),
                UNet(spatial_dims=3, in_channels=2, out_channels=2, strides=[[2, 2, 1]] * 2, features=[4, 8, 8],
                     norm=norm)):
        loss = net(torch.randn(2, 2, 16, 16, 2))
        (loss[0] if isinstance(loss, (tuple, list)) else loss).mean().backward()
        net.eval()
        assert tile_independent(net)
        inferer = segmentation_inferer(net, [16, 16, -1], "cpu", crop_foreground=False)
        assert isinstance(inferer.inferer, OverlapTileInferer)
        with torch.no_grad():
            assert inferer(torch.randn(1, 2, 40, 40, 2), net).shape == (1, 2, 40, 40, 2)
