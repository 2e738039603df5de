"""Overlap-tile inference: tiled == whole volume, seamless stitching, blending, TTA, ensembles, cost, bundle use."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from torch import nn

from pipeline.inferers import (
    DEFAULT_MAX_TILE_VOXELS,
    MeanEnsemble,
    OverlapTileInferer,
    WindowBudgetInferer,
    mirror_pad,
    segmentation_inferer,
    size_divisor_of,
    sliding_window_roi,
    tile_independent,
)
from pipeline.precision import AutocastInferer
from pipeline.networks import UNetPlusPlus, ValidUNet

pytestmark = pytest.mark.usefixtures("seeded_single_thread")


SLAB_STRIDES = [[2, 2, 1]] * 4


def tiny_unetpp(**kwargs) -> UNetPlusPlus:
    """A 3D UNet++ of depth 4 that pools only in-plane, with tiny widths, in eval mode."""
    options = dict(spatial_dims=3, in_channels=4, out_channels=2, strides=SLAB_STRIDES, features=[4, 6, 8, 10, 12])
    options.update(kwargs)
    return UNetPlusPlus(**options).eval()


def integer_conv(conv: nn.Module) -> nn.Module:
    """Give ``conv`` small integer weights, so float sums are exact whatever order the backend adds in."""
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-3, 4, conv.weight.shape).float())
        conv.bias.copy_(torch.randint(-3, 4, conv.bias.shape).float())
    return conv.eval()


class CountingNetwork(nn.Module):
    """Wraps a network and counts its forward calls."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.network(x)


# ---------------------------------------------------------------- valid convolutions: tiled == whole volume


@pytest.mark.parametrize("blend_mode", ["constant", "gaussian"])
def test_valid_unet_2d_tiles_equal_the_whole_volume(blend_mode):
    net = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 8, 16]).eval()
    x = torch.randn(2, 1, 52, 44)  # valid output sizes; 5 x 4 tiles of 12 x 12
    inferer = OverlapTileInferer(roi_size=12, blend_mode=blend_mode, sw_batch_size=3)
    with torch.no_grad():
        whole = net(F.pad(x, [net.margin[1]] * 2 + [net.margin[0]] * 2, mode="reflect"))
        tiled = inferer(x, net)
    assert inferer.plan(x.shape[2:], net).grid == (5, 4)
    assert tiled.shape == whole.shape == (2, 2, 52, 44)
    assert (tiled - whole).abs().max() < 1e-5


def test_valid_unet_3d_tiles_equal_the_whole_volume_with_a_whole_slice_axis():
    net = ValidUNet(spatial_dims=3, in_channels=2, out_channels=2, features=[4, 8], strides=[[2, 2, 1]],
                    kernel_sizes=[[3, 3, 1], [3, 3, 3]]).eval()
    assert net.margin == (8, 8, 2)
    x = torch.randn(1, 2, 30, 26, 6)
    inferer = OverlapTileInferer(roi_size=[8, 8, -1])
    with torch.no_grad():
        whole = net(F.pad(x, [2, 2, 8, 8, 8, 8], mode="reflect"))
        tiled = inferer(x, net)
    assert inferer.plan(x.shape[2:], net).grid == (4, 4, 1)
    assert (tiled - whole).abs().max() < 1e-5


def test_valid_unet_odd_volume_matches_the_whole_volume_extended_to_a_valid_size():
    net = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 8, 16]).eval()
    x = torch.randn(1, 1, 50, 41)  # not valid output sizes: the last tiles reach past the volume
    with torch.no_grad():
        tiled = OverlapTileInferer(roi_size=16)(x, net)
        # Outputs inside the volume see only the mirrored margin, so a larger valid extension gives the same.
        whole = net(mirror_pad(x, [(20, 22), (20, 23)]))[..., :50, :41]
    assert tiled.shape == (1, 2, 50, 41)
    assert (tiled - whole).abs().max() < 1e-5


def test_valid_unet_roi_is_rounded_down_to_a_valid_tile_on_the_pooling_grid():
    net = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 8, 16])
    plan = OverlapTileInferer(roi_size=14).plan((52, 44), net)
    assert plan.valid_conv and plan.tile_size == (12, 12) and plan.margin == (20, 20)
    assert plan.input_size == net.input_size_for(12)
    assert all(start % 4 == 0 for axis in plan.axes for start in axis.starts)  # two poolings by 2


def test_valid_network_refuses_another_margin():
    net = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 8, 16])
    with pytest.raises(ValueError, match="fixes its own margin"):
        OverlapTileInferer(roi_size=12, margin=3).plan((52, 44), net)


# ---------------------------------------------------------------- same-padded networks


def test_unetpp_keeps_odd_sizes():
    net = tiny_unetpp()
    x = torch.randn(1, 4, 45, 37, 3)
    with torch.no_grad():
        out = OverlapTileInferer(roi_size=[16, 16, -1])(x, net)
    assert out.shape == (1, 2, 45, 37, 3)


def test_unetpp_on_a_two_slice_slab_sees_both_slices_in_one_tile():
    net = tiny_unetpp()
    x = torch.randn(2, 4, 40, 36, 2)
    inferer = OverlapTileInferer(roi_size=[16, 16, -1], sw_batch_size=4, max_tile_voxels=None)  # tiles of roi_size
    plan = inferer.plan(x.shape[2:], net, batch_size=2)
    with torch.no_grad():
        out = inferer(x, net)
    assert out.shape == (2, 2, 40, 36, 2)
    assert plan.grid == (3, 3, 1)
    assert plan.margin == (3, 3, 0)  # auto margin: 3/16 of a tile in-plane, none on the axis one tile spans
    assert plan.input_size == (22, 22, 2)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_translation_equivariant_network_is_stitched_without_seams(spatial_dims):
    conv_type = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    conv = integer_conv(conv_type(2, 3, kernel_size=3, padding=1))
    shape = (37, 29) if spatial_dims == 2 else (19, 17, 6)
    x = torch.randint(-5, 6, (2, 2, *shape)).float()
    with torch.no_grad():
        inner = (slice(None), slice(None)) + (slice(1, -1),) * spatial_dims
        whole = conv(mirror_pad(x, 1))[inner]
        for margin in (1, 2):
            tiled = OverlapTileInferer(roi_size=5, margin=margin)(x, conv)
            assert torch.equal(tiled, whole)


@pytest.mark.parametrize("blend_mode", ["constant", "gaussian"])
def test_blending_is_close_to_monai_sliding_window_on_a_smooth_network(blend_mode):
    # Replicate padding everywhere, so the volume borders agree and only the tile borders differ.
    smooth = nn.Sequential(nn.Conv2d(1, 2, 5, padding=2, padding_mode="replicate"), nn.Tanh()).eval()
    yy, xx = torch.meshgrid(torch.linspace(0, 3, 64), torch.linspace(0, 2, 56), indexing="ij")
    x = (torch.sin(yy) * torch.cos(xx))[None, None]
    with torch.no_grad():
        whole = smooth(x)
        monai = SlidingWindowInferer(roi_size=16, overlap=0.5, mode="gaussian")(x, smooth)
        ours = OverlapTileInferer(roi_size=16, margin=2, blend_mode=blend_mode, padding_mode="replicate")(x, smooth)
    assert (ours - monai).abs().max() < 0.02
    # a margin covering the receptive field leaves no tile-border error at all
    assert (ours - whole).abs().max() < 1e-5 < (monai - whole).abs().max()


def test_zero_padding_mode_reproduces_the_network_on_the_whole_volume():
    conv = integer_conv(nn.Conv2d(2, 3, kernel_size=3, padding=1))  # pads with zeros itself
    x = torch.randint(-5, 6, (1, 2, 23, 19)).float()
    with torch.no_grad():
        tiled = OverlapTileInferer(roi_size=6, margin=1, padding_mode="constant")(x, conv)
        assert torch.equal(tiled, conv(x))


def test_gaussian_blending_with_half_overlap_and_no_margin_reproduces_monai():
    # sigma_scale 0.5 keeps MONAI's weights above its 1e-3 floor, which it applies to the N-D product.
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 6, 8, 10, 12]).eval()
    x = torch.randn(1, 1, 48, 40)
    with torch.no_grad():
        monai = SlidingWindowInferer(roi_size=16, overlap=0.5, mode="gaussian", sigma_scale=0.5)(x, net)
        ours = OverlapTileInferer(roi_size=16, margin=0, overlap=0.5, blend_mode="gaussian", sigma_scale=0.5,
                                  max_tile_voxels=None)(x, net)
    assert (ours - monai).abs().max() < 1e-5


# ---------------------------------------------------------------- grown tiles (same-padded networks with a size divisor)


def test_unetpp_tiles_grow_to_one_whole_volume_pass_within_the_budget():
    net = tiny_unetpp()
    x = torch.randn(2, 4, 40, 36, 2)
    inferer = OverlapTileInferer(roi_size=[16, 16, -1], sw_batch_size=2, max_tile_voxels=DEFAULT_MAX_TILE_VOXELS)
    plan = inferer.plan(x.shape[2:], net, batch_size=2)
    assert plan.grid == (1, 1, 1) and plan.margin == (0, 0, 0) and plan.input_size == (40, 36, 2)
    with torch.no_grad():
        assert torch.equal(inferer(x, net), net(x))


def test_grown_tiles_keep_to_the_budget_and_the_networks_multiple():
    net = tiny_unetpp()  # size_divisor 16 x 16 x 1
    budget = 64 * 64 * 4
    plan = OverlapTileInferer(roi_size=[16, 16, -1], max_tile_voxels=budget).plan((150, 130, 4), net)
    assert math.prod(plan.input_size) <= budget
    assert all(size % 16 == 0 for size in plan.input_size[:2])  # real context where the network would pad zeros
    assert min(plan.tile_size[:2]) >= 16 and plan.margin == (3, 3, 0)  # at least roi_size, with its margin
    fixed = OverlapTileInferer(roi_size=[16, 16, -1], max_tile_voxels=None).plan((150, 130, 4), net)
    assert plan.num_tiles < fixed.num_tiles and plan.network_voxels < fixed.network_voxels


class DivisibleConv(nn.Module):
    """A 3x3 convolution that declares a size divisor, as the networks of pipeline.networks do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = integer_conv(nn.Conv2d(2, 3, kernel_size=3, padding=1))
        self.size_divisor = [4, 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_grown_tiles_are_stitched_without_seams():
    net = DivisibleConv()
    x = torch.randint(-5, 6, (1, 2, 37, 29)).float()
    inferer = OverlapTileInferer(roi_size=6, margin=1, padding_mode="constant", max_tile_voxels=16 * 16)
    plan = inferer.plan(x.shape[2:], net)
    assert plan.num_tiles > 1 and min(plan.tile_size) > 6 and math.prod(plan.input_size) <= 16 * 16
    with torch.no_grad():
        assert torch.equal(inferer(x, net), net(x))


def test_roi_sized_tiles_are_used_when_even_they_exceed_the_budget():
    net = tiny_unetpp()
    plan = OverlapTileInferer(roi_size=[16, 16, -1], max_tile_voxels=10).plan((64, 64, 2), net)
    assert plan.tile_size[:2] == (26, 26) and plan.input_size == (32, 32, 2)  # 16 + 2 x 3, rounded up to 32


def test_networks_without_a_size_divisor_keep_tiles_of_roi_size():
    conv = nn.Conv3d(4, 2, 3, padding=1).eval()
    plan = OverlapTileInferer(roi_size=[16, 16, -1]).plan((40, 36, 2), conv)
    assert plan.grid == (3, 3, 1) and plan.tile_size == (16, 16, 2)


def test_an_ensemble_grows_its_tiles_by_the_common_multiple_of_its_members():
    a, b = tiny_unetpp(), tiny_unetpp(strides=[[2, 2, 1]] * 3, features=[4, 6, 8, 10])  # divisors 16 and 8
    assert MeanEnsemble([a, b]).size_divisor == [16, 16, 1]
    assert size_divisor_of([a, b], 3) == (16, 16, 1) and size_divisor_of([a, nn.Identity()], 3) is None
    plan = OverlapTileInferer(roi_size=[16, 16, -1], activation="softmax", max_tile_voxels=DEFAULT_MAX_TILE_VOXELS).plan((40, 36, 2), [a, b])
    assert plan.grid == (1, 1, 1)


# ---------------------------------------------------------------- TTA and ensembles


def flip_symmetric_conv() -> nn.Module:
    """A 3x3 convolution whose kernels are symmetric under flips of both axes (so it commutes with flips)."""
    conv = nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        w = conv.weight
        conv.weight.copy_((w + w.flip(2) + w.flip(3) + w.flip(2, 3)) / 4)
    return conv.eval()


def test_flip_tta_of_a_flip_equivariant_network_changes_nothing():
    net = flip_symmetric_conv()
    x = torch.randn(1, 2, 30, 26)
    with torch.no_grad():
        plain = OverlapTileInferer(roi_size=10, margin=1, activation="softmax")(x, net)
        tta = OverlapTileInferer(roi_size=10, margin=1, activation="softmax", tta_flips=[[0], [1], [0, 1]])(x, net)
    assert torch.allclose(tta, plain, atol=1e-6)


def test_flip_tta_averages_the_unflipped_probabilities():
    net = nn.Conv2d(2, 3, 3, padding=1).eval()
    x = torch.randn(1, 2, 30, 26)
    padded = mirror_pad(x, 1)
    with torch.no_grad():
        expected = sum(
            torch.softmax(net(padded.flip(dims) if dims else padded), 1).flip(dims)[..., 1:-1, 1:-1]
            for dims in ([], [2], [3])
        ) / 3
        tta = OverlapTileInferer(roi_size=10, margin=1, activation="softmax", tta_flips=[[0], [1]])(x, net)
    assert torch.allclose(tta, expected, atol=1e-6)


def test_ensemble_of_two_identical_networks_equals_one():
    net = tiny_unetpp()
    twin = copy.deepcopy(net)
    x = torch.randn(1, 4, 40, 36, 2)
    inferer = OverlapTileInferer(roi_size=[16, 16, -1], activation="softmax")
    with torch.no_grad():
        single = inferer(x, net)
        as_list = inferer(x, [net, twin])
        as_module = OverlapTileInferer(roi_size=[16, 16, -1])(x, MeanEnsemble([net, twin]))  # already softmax
    assert torch.allclose(as_list, single, atol=1e-6)
    assert torch.allclose(as_module, single, atol=1e-6)
    assert torch.allclose(single.sum(1), torch.ones(1, 40, 36, 2), atol=1e-5)


def test_mean_ensemble_averages_probabilities():
    a, b = tiny_unetpp(), tiny_unetpp()
    x = torch.randn(1, 4, 16, 16, 2)
    with torch.no_grad():
        expected = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
        assert torch.allclose(MeanEnsemble([a, b])(x), expected, atol=1e-6)


def test_mean_ensemble_of_valid_networks_keeps_their_geometry():
    a = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 8, 16]).eval()
    b = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 8, 16]).eval()
    x = torch.randn(1, 1, 44, 44)
    with torch.no_grad():
        whole = MeanEnsemble([a, b])(F.pad(x, [20] * 4, mode="reflect"))
        tiled = OverlapTileInferer(roi_size=12)(x, MeanEnsemble([a, b]))
    assert (tiled - whole).abs().max() < 1e-5


def test_mean_ensemble_refuses_to_mix_valid_and_same_padded_networks():
    valid = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 8])
    with pytest.raises(ValueError, match="mix"):
        MeanEnsemble([valid, nn.Conv2d(1, 2, 3, padding=1)])


def test_averaging_without_an_activation_is_refused():
    net = tiny_unetpp()
    x = torch.randn(1, 4, 16, 16, 2)
    with pytest.raises(ValueError, match="activation"):
        OverlapTileInferer(roi_size=[16, 16, -1], tta_flips=[[0]])(x, net)
    with pytest.raises(ValueError, match="activation"):
        OverlapTileInferer(roi_size=[16, 16, -1])(x, [net, net])


def test_without_tta_or_ensemble_the_raw_output_is_returned():
    net = tiny_unetpp()
    x = torch.randn(1, 4, 16, 16, 2)
    with torch.no_grad():
        assert torch.allclose(OverlapTileInferer(roi_size=-1)(x, net), net(x), atol=1e-6)
        probabilities = OverlapTileInferer(roi_size=-1, activation="softmax")(x, net)
        assert torch.allclose(probabilities, torch.softmax(net(x), 1), atol=1e-6)


def test_a_network_returning_a_tuple_is_a_type_error():
    with pytest.raises(TypeError, match="eval mode"):
        OverlapTileInferer(roi_size=[16, 16, -1])(torch.randn(1, 4, 16, 16, 2), lambda x: (x, x))


# ---------------------------------------------------------------- cost, batching, metadata, bundles


def test_plan_needs_fewer_network_calls_than_monai_half_overlap():
    net = tiny_unetpp(in_channels=1)
    x = torch.randn(1, 1, 96, 96, 4)
    monai_net, our_net = CountingNetwork(net), CountingNetwork(net)
    inferer = OverlapTileInferer(roi_size=[32, 32, -1], max_tile_voxels=None)  # tiles of roi_size, not grown
    with torch.no_grad():
        SlidingWindowInferer(roi_size=[32, 32, -1], overlap=0.5)(x, monai_net)
        inferer(x, our_net)
    plan = inferer.plan(x.shape[2:], net)
    assert monai_net.calls == 25 and our_net.calls == plan.network_calls == plan.num_tiles == 9
    assert plan.network_voxels < 25 * 32 * 32 * 4


def test_plan_counts_batches_flips_and_members():
    inferer = OverlapTileInferer(roi_size=[32, 32, -1], sw_batch_size=4, tta_flips=[[0], [1]], activation="softmax")
    plan = inferer.plan((96, 96, 4), [nn.Identity(), nn.Identity()], batch_size=2)
    assert plan.num_tiles == 9 and plan.passes == 6
    assert plan.network_calls == 5 * 6  # 18 tiles in batches of 4, x 2 members x 3 flips


def test_batches_of_tiles_give_the_same_result_as_one_tile_at_a_time():
    net = tiny_unetpp()
    x = torch.randn(3, 4, 40, 36, 2)
    fixed = dict(roi_size=[16, 16, -1], max_tile_voxels=None)  # 9 tiles per image
    with torch.no_grad():
        one = OverlapTileInferer(sw_batch_size=1, **fixed)(x, net)
        many = OverlapTileInferer(sw_batch_size=5, **fixed)(x, net)
        separately = torch.cat([OverlapTileInferer(**fixed)(x[i : i + 1], net) for i in range(3)])
    assert torch.allclose(one, many, atol=1e-5)
    assert torch.allclose(one, separately, atol=1e-5)


def test_metatensor_input_keeps_its_metadata():
    net = tiny_unetpp()
    affine = torch.diag(torch.tensor([0.9, 0.9, 12.0, 1.0], dtype=torch.float64))
    x = MetaTensor(torch.randn(1, 4, 32, 32, 2), affine=affine)
    with torch.no_grad():
        out = OverlapTileInferer(roi_size=[16, 16, -1], device="cpu", sw_device="cpu", progress=True)(x, net)
    assert isinstance(out, MetaTensor)
    assert torch.equal(out.affine, affine)


def test_inferer_from_a_bundle_config():
    parser = ConfigParser(
        {
            "network": {"_target_": "pipeline.networks.UNetPlusPlus", "spatial_dims": 3, "in_channels": 4,
                        "out_channels": 2, "strides": SLAB_STRIDES, "features": [4, 6, 8, 10, 12]},
            "inferer": {"_target_": "pipeline.inferers.OverlapTileInferer", "roi_size": [16, 16, -1],
                        "sw_batch_size": 2, "blend_mode": "gaussian", "overlap": 0.25},
        }
    )
    inferer = parser.get_parsed_content("inferer")
    net = parser.get_parsed_content("network").eval()
    assert isinstance(inferer, Inferer) and isinstance(inferer, OverlapTileInferer)
    with torch.no_grad():
        out = inferer(torch.randn(1, 4, 40, 36, 2), net)
    assert out.shape == (1, 2, 40, 36, 2)


@pytest.mark.parametrize(
    "options",
    [
        dict(roi_size=0),
        dict(roi_size=16, overlap=1.0),
        dict(roi_size=16, margin=-1),
        dict(roi_size=16, blend_mode="mean"),
        dict(roi_size=16, padding_mode="circular"),
        dict(roi_size=16, activation="relu"),
        dict(roi_size=16, sw_batch_size=0),
        dict(roi_size=16, tta_flips=[[-1]]),
        dict(roi_size=16, max_tile_voxels=0),
    ],
)
def test_bad_options_are_value_errors(options):
    with pytest.raises(ValueError):
        OverlapTileInferer(**options)


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize(
    "pad, mode, numpy_mode",
    [
        (1, "reflect", "reflect"),  # fits a 2-slice axis
        (2, "reflect", "symmetric"),  # reflect needs pad <= size - 1: falls back to symmetric
        (3, "reflect", "edge"),  # symmetric needs pad <= size: falls back to replicate
        (2, "symmetric", "symmetric"),
        (2, "replicate", "edge"),
        (2, "constant", "constant"),
    ],
)
def test_mirror_pad_on_a_two_slice_axis(pad, mode, numpy_mode):
    x = torch.randn(1, 1, 5, 2)
    padded = mirror_pad(x, [(0, 0), (pad, pad)], mode=mode)
    expected = np.pad(x.numpy(), [(0, 0), (0, 0), (0, 0), (pad, pad)], mode=numpy_mode)
    assert np.array_equal(padded.numpy(), expected)


def test_thin_axis_falls_back_inside_the_inferer_too():
    conv = integer_conv(nn.Conv3d(1, 1, kernel_size=5, padding=2))
    x = torch.randint(-5, 6, (1, 1, 12, 12, 2)).float()
    with torch.no_grad():
        whole = conv(mirror_pad(x, 2))[..., 2:-2, 2:-2, 2:-2]
        tiled = OverlapTileInferer(roi_size=[4, 4, -1], margin=2)(x, conv)
    assert torch.equal(tiled, whole)


# ---------------------------------------------------------------- memory


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import torch
    from torch import nn
    from pipeline.inferers import OverlapTileInferer

    torch.set_num_threads(2)
    net = nn.Conv3d(1, 2, kernel_size=3, padding=1).eval()
    x = torch.randn(1, 1, 512, 512, 320)
    with torch.no_grad():
        for blend_mode in ("constant", "gaussian"):
            out = OverlapTileInferer(roi_size=[128, 128, 64], blend_mode=blend_mode, sw_batch_size=2)(x, net)
            assert out.shape == (1, 2, 512, 512, 320)
            del out
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024))
    """
)


@pytest.mark.slow
def test_large_volume_stays_within_memory():
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-c", MEMORY_SCRIPT]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr
    peak_bytes = int(result.stdout.strip().splitlines()[-1])
    # input 0.34 GB + output 0.67 GB + tiles; a padded copy or a weight volume would add more
    assert peak_bytes < 4 * 1024**3


def test_sliding_window_roi_is_the_training_patch_with_never_pooled_axes_whole():
    slab = [[2, 2, 1]] * 5  # thick 2-slice slabs: the slice axis is never downsampled
    assert sliding_window_roi([224, 224, 2], slab) == [224, 224, -1]
    thin = [[2, 2, 1], [2, 2, 2], [2, 2, 2]]  # thin 3D volume: every axis pooled, windows are whole patches
    assert sliding_window_roi([96, 96, 48], thin) == [96, 96, 48]
    assert sliding_window_roi([64, 64], [2, 2, 2]) == [64, 64]  # scalar strides
    with pytest.raises(ValueError, match="do not match"):
        sliding_window_roi([64, 64, 2], [[2, 2]])
    with pytest.raises(ValueError, match="positive"):
        sliding_window_roi([0, 64, 2], slab)


@pytest.mark.parametrize(
    "network,independent",
    [
        (tiny_unetpp(norm="instance"), False),  # instance norm without running statistics: normalises over the tile
        (tiny_unetpp(norm="batch"), True),  # running statistics in eval mode
        (nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.GroupNorm(2, 4)), False),
        (nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.InstanceNorm3d(4, track_running_stats=True)), True),
        (nn.Conv3d(4, 2, 3, padding=1), True),  # no normalisation at all
        (MeanEnsemble([tiny_unetpp(norm="batch"), tiny_unetpp(norm="instance")]), False),  # one tile-dependent member suffices
        (lambda x: x, False),  # not a module: nothing to inspect, so assumed tile-dependent
    ],
    ids=["instance", "batch", "group", "instance-running-stats", "none", "ensemble", "callable"],
)
def test_tile_independence_is_read_from_the_normalisation_layers(network, independent):
    assert tile_independent(network) is independent


def test_an_instance_normalised_network_gets_monai_windows_of_the_roi():
    inferer = segmentation_inferer(tiny_unetpp(norm="instance"), [16, 16, -1], "cpu", crop_foreground=False)
    assert isinstance(inferer, AutocastInferer) and not inferer.enabled
    windows = inferer.inferer
    assert isinstance(windows, SlidingWindowInferer)
    assert list(windows.roi_size) == [16, 16, -1] and windows.overlap == 0.5 and windows.mode == "gaussian"


def test_a_batch_normalised_network_gets_grown_tiles_equal_to_one_whole_pass():
    net = tiny_unetpp(norm="batch")
    inferer = segmentation_inferer(net, [16, 16, -1], "cpu", crop_foreground=False)
    assert isinstance(inferer.inferer, OverlapTileInferer)
    assert inferer.inferer.max_tile_voxels == DEFAULT_MAX_TILE_VOXELS
    x = torch.randn(1, 4, 48, 48, 2)
    with torch.no_grad():
        torch.testing.assert_close(inferer(x, net), net(x))  # 48x48x2 fits one tile: one pass


def test_segmentation_inferer_refuses_a_bad_roi():
    with pytest.raises(ValueError, match="roi_size"):
        segmentation_inferer(tiny_unetpp(norm="instance"), [0, 16, -1], "cpu")


def test_amp_runs_the_windows_in_bf16_and_returns_float32_close_to_float32_inference():
    net = tiny_unetpp(norm="instance")
    x = torch.randn(1, 4, 40, 36, 2)
    with torch.no_grad():
        full = segmentation_inferer(net, [16, 16, -1], "cpu", amp=False)(x, net)
        low = segmentation_inferer(net, [16, 16, -1], "cpu", amp=True)(x, net)
    assert full.dtype == low.dtype == torch.float32
    assert not torch.equal(full, low)  # the network did run in bf16
    # bf16 keeps 8 bits of mantissa; a random tiny network's 1-voxel-deep instance norms amplify that locally
    difference = (torch.softmax(low, 1) - torch.softmax(full, 1)).abs()
    assert difference.mean() < 0.02 and difference.max() < 0.25
    assert (low.argmax(1) == full.argmax(1)).float().mean() > 0.95


def test_overlap_tiles_accumulate_in_float32_under_autocast():
    net = tiny_unetpp(norm="batch")
    x = torch.randn(1, 4, 40, 36, 2)
    inferer = OverlapTileInferer([16, 16, -1], blend_mode="gaussian", overlap=0.5)
    with torch.no_grad():
        reference = inferer(x, net)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = inferer(x, net)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, reference, atol=0.1, rtol=0.05)


def test_window_budget_batches_as_many_windows_as_fit():
    inferer = WindowBudgetInferer([16, 16, -1], max_batch_voxels=1024)
    assert inferer.windows_per_call((40, 36, 2)) == 2  # 16x16x2 = 512 voxels a window
    assert inferer.windows_per_call((40, 36, 8)) == 1  # never fewer than one
    assert WindowBudgetInferer([64, 64, -1], max_batch_voxels=10**4).windows_per_call((40, 36, 2)) == 3  # clipped


def test_window_budget_gives_monai_s_result():
    net = tiny_unetpp(norm="instance")
    x = torch.randn(1, 4, 40, 36, 2)
    with torch.no_grad():
        batched = WindowBudgetInferer([16, 16, -1], overlap=0.5, mode="gaussian")(x, net)
        one_by_one = SlidingWindowInferer([16, 16, -1], sw_batch_size=1, overlap=0.5, mode="gaussian")(x, net)
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-5)


def test_window_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_batch_voxels"):
        WindowBudgetInferer([16, 16, -1], max_batch_voxels=0)
