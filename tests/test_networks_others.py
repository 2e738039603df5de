"""U-Net (DynUNet), valid-convolution U-Net, FCN-32s/16s/8s and build(): shapes, contracts, sizes, export, paper counts."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet

from pipeline.networks import (
    FCN8s,
    FCN16s,
    FCN32s,
    NETWORKS,
    UNet,
    UNetPlusPlus,
    ValidUNet,
    build,
    count_parameters,
)

SLAB_STRIDES = [[2, 2, 1]] * 4


pytestmark = pytest.mark.usefixtures("seeded_single_thread")


def tiny_unet(**kwargs) -> UNet:
    options = dict(spatial_dims=3, in_channels=4, out_channels=2, strides=SLAB_STRIDES, features=[4, 6, 8, 10, 12])
    options.update(kwargs)
    return UNet(**options)


# U-Net (MONAI DynUNet behind the UNet++ signature)


def test_unet_parameter_count_matches_the_paper():
    # DynUNet's 3x3 convolutions have no bias: 2,944 fewer than the paper's Keras U-Net (7,759,521).
    assert count_parameters(UNet(spatial_dims=2, in_channels=1, out_channels=1, norm=None)) == 7_756_577
    wide = UNet(spatial_dims=2, in_channels=1, out_channels=1, norm=None, features=[35, 70, 140, 280, 560])
    assert count_parameters(wide) / 1e6 == pytest.approx(9.13, rel=0.05)  # the paper's code has 9,282,246


def test_unet_odd_sizes_and_two_slice_slabs():
    net = tiny_unet().eval()
    with torch.no_grad():
        assert net(torch.randn(1, 4, 48, 40, 2)).shape == (1, 2, 48, 40, 2)
        assert net(torch.randn(1, 4, 37, 29, 2)).shape == (1, 2, 37, 29, 2)
    net2d = UNet(spatial_dims=2, in_channels=1, out_channels=3, features=[4, 6, 8, 10, 12]).eval()
    with torch.no_grad():
        assert net2d(torch.randn(2, 1, 37, 29)).shape == (2, 3, 37, 29)


def test_unet_equals_dynunet_on_the_same_weights():
    net = tiny_unet(deep_supervision=True, norm="instance").train()
    reference = DynUNet(3, 4, 2, kernel_size=[3] * 5, strides=[1] + SLAB_STRIDES, upsample_kernel_size=SLAB_STRIDES,
                        filters=[4, 6, 8, 10, 12], norm_name="instance", act_name="relu", deep_supervision=True,
                        deep_supr_num=3, trans_bias=True).train()
    state = {k.replace("deep_supervision_heads", "supervision_heads"): v
             for k, v in reference.state_dict().items() if not k.startswith("skip_layers")}
    net.load_state_dict(state)
    x = torch.randn(2, 4, 32, 32, 2)
    assert torch.allclose(net(x), reference(x), atol=1e-6)
    net.eval(), reference.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), reference(x), atol=1e-6)


def test_unet_deep_supervision_order_main_output_first():
    net = tiny_unet(deep_supervision=True, norm=None).train()  # no batch statistics: train == eval numerically
    x = torch.randn(2, 4, 32, 32, 2)
    stacked = net(x)
    assert stacked.shape == (2, 4, 2, 32, 32, 2)  # main output + depth-1 heads, like UNet++'s depth heads
    net.eval()
    with torch.no_grad():
        main = net(x)
    assert torch.allclose(stacked[:, 0], main, atol=1e-6)


def test_unet_and_unetpp_swap_with_one_line():
    shared = dict(spatial_dims=3, in_channels=4, out_channels=2, strides=SLAB_STRIDES, kernel_sizes=3,
                  features=[4, 6, 8, 10, 12], norm="instance", act="relu", dropout=0.1, deep_supervision=True)
    x = torch.randn(1, 4, 16, 16, 2)
    for cls in (UNet, UNetPlusPlus):
        net = cls(**shared)
        assert net.train()(x).shape == (1, 4, 2, 16, 16, 2)
        with torch.no_grad():
            assert net.eval()(x).shape == (1, 2, 16, 16, 2)


def test_unet_torchscript_export_with_deep_supervision():
    net = tiny_unet(deep_supervision=True).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 4, 21, 18, 2)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)


def test_unet_of_depth_one_has_the_blocks_of_dynunet_first_and_last_levels():
    # DynUNet needs two downsamplings; depth 1 (the UNet++ paper's U-Net L1) keeps the blocks a depth-1 one would have
    net = UNet(spatial_dims=3, in_channels=4, out_channels=2, strides=[[2, 2, 1]], kernel_sizes=[[3, 3, 1]] * 2,
               features=[4, 6], norm="instance", deep_supervision=True)
    donor = DynUNet(3, 4, 2, kernel_size=[[3, 3, 1]] * 3, strides=[[1, 1, 1]] + [[2, 2, 1]] * 2,
                    upsample_kernel_size=[[2, 2, 1]] * 2, filters=[4, 6, 6], norm_name="instance", trans_bias=True)
    kept = (donor.input_block, donor.downsamples[0], donor.upsamples[-1], donor.output_block)
    assert count_parameters(net) == sum(count_parameters(block) for block in kept)
    x = torch.randn(2, 4, 21, 18, 2)
    assert net.train()(x).shape == (2, 1, 2, 21, 18, 2)  # deep supervision: the main output alone
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(net.eval())(x), net(x), atol=1e-6)
    with pytest.raises(ValueError, match="deep_supervision_heads must be between 0 and depth-1=0"):
        UNet(spatial_dims=2, depth=1, deep_supervision=True, deep_supervision_heads=1)


def test_unet_rejects_what_dynunet_cannot_do():
    with pytest.raises(ValueError, match="only upsample='deconv'"):
        tiny_unet(upsample="nontrainable")
    with pytest.raises(ValueError, match="depth must be between 1 and 6"):
        UNet(spatial_dims=2, depth=7)
    with pytest.raises(ValueError, match="deep_supervision_heads"):
        tiny_unet(deep_supervision=True, deep_supervision_heads=4)


# Valid-convolution U-Net


def test_valid_unet_paper_tile_and_parameters():
    net = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2)
    assert net.output_size(572) == (388, 388)
    assert net.input_size_for((388, 388)) == (572, 572)
    assert net.margin == (92, 92)
    assert count_parameters(net) / 1e6 == pytest.approx(31.0, rel=0.01)
    assert count_parameters(ValidUNet(features=(32, 64, 128, 256, 512))) / 1e6 == pytest.approx(7.75, rel=0.01)
    assert count_parameters(ValidUNet(features=(16, 32, 64, 128, 256))) < 2_000_000


def test_valid_unet_forward_gives_the_computed_output_size():
    net = ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(2, 4, 6, 8, 10)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 188, 204))
    assert out.shape[2:] == net.output_size((188, 204)) == (4, 20)


def test_valid_unet_3d_slab_keeps_its_slices():
    net = ValidUNet(spatial_dims=3, in_channels=4, out_channels=2, features=(2, 4, 6),
                    strides=[[2, 2, 1]] * 2, kernel_sizes=[[3, 3, 1]] * 3).eval()
    assert net.margin == (20, 20, 0)
    assert net.input_size_for((4, 8, 2)) == (44, 48, 2)
    with torch.no_grad():
        assert net(torch.randn(1, 4, 44, 48, 2)).shape == (1, 2, 4, 8, 2)


@pytest.mark.parametrize(
    "size, message",
    [
        (573, "before pooling at level 0 is not divisible by 2; nearest valid input sizes: 572 and 588"),
        (570, "nearest valid input sizes: 556 and 572"),
        (0, "sizes must be positive; nearest valid input sizes: 188"),
        (-4, "sizes must be positive"),
    ],
)
def test_valid_unet_rejects_sizes_it_cannot_take(size, message):
    with pytest.raises(ValueError, match=message):
        ValidUNet(features=(1, 1, 1, 1, 1)).output_size(size)  # sizes depend on kernels and pooling only


def test_valid_unet_rejects_unreachable_output_sizes():
    with pytest.raises(ValueError, match="nearest valid output sizes: 388 and 404"):
        ValidUNet(features=(1, 1, 1, 1, 1)).input_size_for(390)


def test_valid_unet_forward_rejects_a_bad_tile():
    net = ValidUNet(features=(2, 4, 6, 8, 10))
    with pytest.raises(ValueError, match="nearest valid input sizes"):
        net(torch.randn(1, 1, 190, 188))


def test_valid_unet_torchscript_export():
    net = ValidUNet(features=(2, 4, 6, 8, 10)).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 188, 188)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)


# FCN


@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s])
def test_fcn_odd_2d_and_slab_3d_shapes(cls):
    with torch.no_grad():
        assert cls(2, 1, 2).eval()(torch.randn(1, 1, 37, 29)).shape == (1, 2, 37, 29)
        slab = cls(3, 4, 2, strides=[[2, 2, 1]] * 5, features=(4, 6, 8, 8, 8), fc_features=8).eval()
        assert slab(torch.randn(1, 4, 48, 40, 2)).shape == (1, 2, 48, 40, 2)


def test_fcn_variants_add_score_layers():
    names = {cls: {n.split(".")[0] for n, _ in cls(2, 1, 2).named_parameters()} for cls in (FCN32s, FCN16s, FCN8s)}
    assert not {"score_pool4", "score_pool3"} & names[FCN32s]
    assert "score_pool4" in names[FCN16s] and "score_pool3" not in names[FCN16s]
    assert {"score_pool4", "score_pool3", "upscore_pool4"} <= names[FCN8s]


def test_fcn8s_fuses_pool3_scores_by_addition():
    net = FCN8s(2, 1, 1, dropout=0.0).eval()
    with torch.no_grad():
        net.score_pool3.conv.bias.fill_(1.0)  # every other score layer starts at zero
        out = net(torch.zeros(1, 1, 64, 64))
    # A constant 1 at 1/8 resolution, bilinearly upsampled: 1 away from the zero-padded border.
    assert torch.allclose(out[0, 0, 8:-8, 8:-8], torch.ones(48, 48), atol=1e-5)


def test_fcn_with_in_plane_kernels_computes_each_slice_on_its_own():
    net = FCN8s(3, 4, 2, strides=[[2, 2, 1]] * 5, kernel_sizes=[[3, 3, 1]] * 5, fc_kernel_size=[3, 3, 1],
                features=(4, 6, 8, 8, 8), fc_features=8).eval()
    for score in (net.score_fr, net.score_pool4, net.score_pool3):  # zero at start: give the scores some weight
        torch.nn.init.normal_(score.conv.weight)
    x = torch.randn(1, 4, 32, 32, 3)
    with torch.no_grad():
        whole = net(x)
        for k in range(3):
            assert torch.allclose(whole[..., k : k + 1], net(x[..., k : k + 1]), atol=1e-5)


def test_fcn_torchscript_export():
    net = FCN8s(3, 4, 2, strides=[[2, 2, 1]] * 5, features=(4, 6, 8, 8, 8), fc_features=8).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 4, 37, 29, 2)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)


# build()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_build_every_name_gives_one_tensor_in_eval_mode(name):
    small = {
        "unet": dict(features=[2, 4, 4, 4, 4]),
        "unetpp": dict(features=[2, 4, 4, 4, 4]),
        "valid_unet": dict(features=(2, 4, 4, 4, 4)),
        "fcn8s": dict(features=(2, 4, 4, 4, 4), fc_features=4),
        "fcn16s": dict(features=(2, 4, 4, 4, 4), fc_features=4),
        "fcn32s": dict(features=(2, 4, 4, 4, 4), fc_features=4),
    }[name]
    net = build(name, spatial_dims=2, in_channels=3, out_channels=2, **small).eval()
    size = 188 if name == "valid_unet" else 64
    with torch.no_grad():
        out = net(torch.randn(1, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape[:2] == (1, 2)


def test_build_rejects_an_unknown_name_and_lists_the_names():
    with pytest.raises(ValueError, match="unet, unetpp, valid_unet, fcn8s, fcn16s, fcn32s"):
        build("segnet", spatial_dims=2, in_channels=1, out_channels=2)


def test_classes_are_importable_for_bundle_targets():
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network_def": {"_target_": "pipeline.networks.UNetPlusPlus", "spatial_dims": 3,
                                           "in_channels": 4, "out_channels": 2, "strides": SLAB_STRIDES,
                                           "features": [2, 4, 4, 4, 4]}})
    assert isinstance(parser.get_parsed_content("network_def"), UNetPlusPlus)
