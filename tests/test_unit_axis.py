"""Unit-axis convolutions: a 3D layer with kernel 1 on an axis, run as 2D over the slices, is the same layer."""

import copy

import pytest
import torch
from torch import nn

from pipeline.networks import UNet, UNetPlusPlus
from pipeline.networks.unit_axis import UnitAxisConv3d, UnitAxisConvTranspose3d, fold_unit_axes, unit_axis_of


def _layers(axis):
    kernel = [3, 3, 3]
    kernel[axis] = 1
    stride = [2, 2, 2]
    stride[axis] = 1
    padding = [0 if a == axis else 1 for a in range(3)]
    return nn.Sequential(nn.Conv3d(3, 4, kernel, padding=padding), nn.ReLU(),
                         nn.ConvTranspose3d(4, 2, stride, stride=stride))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_folded_layers_give_the_3d_output_and_gradients(axis):
    torch.manual_seed(axis)
    plain = _layers(axis).double()
    folded = fold_unit_axes(copy.deepcopy(plain))
    assert isinstance(folded[0], UnitAxisConv3d) and isinstance(folded[2], UnitAxisConvTranspose3d)
    assert folded[0].unit_axis == axis
    x = torch.randn(2, 3, 6, 5, 4, dtype=torch.double, requires_grad=True)
    x_folded = x.detach().clone().requires_grad_()
    out, out_folded = plain(x), folded(x_folded)
    assert out.shape == out_folded.shape
    torch.testing.assert_close(out_folded, out)
    out.square().sum().backward()
    out_folded.square().sum().backward()
    torch.testing.assert_close(x_folded.grad, x.grad)
    torch.testing.assert_close(folded[0].weight.grad, plain[0].weight.grad)
    torch.testing.assert_close(folded[2].weight.grad, plain[2].weight.grad)


def test_layers_that_mix_every_axis_are_left_alone():
    assert unit_axis_of(nn.Conv3d(2, 2, 3, padding=1)) is None
    assert unit_axis_of(nn.Conv3d(2, 2, (3, 3, 1), padding=(1, 1, 0), padding_mode="reflect")) is None
    assert unit_axis_of(nn.Conv3d(2, 2, (3, 3, 1), padding=(1, 1, 1))) is None  # pads the unit axis: not per slice
    assert unit_axis_of(nn.Conv2d(2, 2, 1)) is None
    assert unit_axis_of(nn.Conv3d(2, 2, (3, 3, 1), padding=(1, 1, 0))) == 2
    with pytest.raises(ValueError, match="kernel 1"):
        UnitAxisConv3d(2, 2, 3, padding=1, unit_axis=2)


@pytest.mark.parametrize("network", [UNetPlusPlus, UNet])
def test_anisotropic_networks_fold_their_slice_levels_with_the_same_weights(network):
    kwargs = dict(spatial_dims=3, in_channels=2, out_channels=2, strides=[[2, 2, 1]] * 3,
                  kernel_sizes=[[3, 3, 1]] * 2 + [[3, 3, 3]] * 2, features=[4, 8, 8, 8], norm="instance")
    net = network(**kwargs).eval()
    kinds = {type(m) for m in net.modules()}
    assert UnitAxisConv3d in kinds and nn.Conv3d in kinds  # the (3, 3, 3) levels stay 3D
    reference = copy.deepcopy(net)
    for name, module in list(reference.named_modules()):
        if isinstance(module, (UnitAxisConv3d, UnitAxisConvTranspose3d)):  # rebuild the unfolded network
            parent = reference.get_submodule(name.rpartition(".")[0]) if "." in name else reference
            base = nn.Conv3d if isinstance(module, UnitAxisConv3d) else nn.ConvTranspose3d
            plain = copy.deepcopy(module)
            plain.__class__ = base
            setattr(parent, name.rpartition(".")[2], plain)
    assert not any(isinstance(m, UnitAxisConv3d) for m in reference.modules())
    assert list(net.state_dict()) == list(reference.state_dict())
    x = torch.randn(1, 2, 32, 24, 2)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.jit.script(net)(x), reference(x), atol=1e-5, rtol=1e-4)
    fresh = network(**kwargs).eval()
    fresh.load_state_dict(reference.state_dict())  # checkpoints of either form load
