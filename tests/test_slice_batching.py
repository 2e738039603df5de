"""Slice batching: a slice-wise network run on its slices as a batch gives the network's output, and the runtimes
export it that way."""

import collections
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import pipeline.runtimes.network

from pipeline.networks import UNet, UNetPlusPlus
from pipeline.networks.slice_batching import SliceBatchedNetwork, SliceGroupInstanceNorm, slice_axis_of, slice_batched
from pipeline.networks.unit_axis import UnitAxisConv3d, fold_unit_axes
from pipeline.runtimes import SLICE_BATCHED, CompiledNetwork, export_onnx, onnx_file_name, weights_digest


def slice_wise(network=UNetPlusPlus, axis=2, norm="instance", seed=0, **kwargs):
    torch.manual_seed(seed)
    kernel, stride = [3, 3, 3], [2, 2, 2]
    kernel[axis], stride[axis] = 1, 1
    return network(spatial_dims=3, in_channels=3, out_channels=2, strides=[stride] * 3, kernel_sizes=[kernel] * 4,
                   features=[4, 8, 8, 16], norm=norm, **kwargs).eval()


def _randomise_affine(net):
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.InstanceNorm3d) and module.affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return net


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("network", [UNetPlusPlus, UNet])
def test_a_slice_batched_network_gives_the_network_output_along_any_axis(network, axis):
    net = slice_wise(network, axis)
    assert slice_axis_of(net) == axis
    batched = slice_batched(net)
    assert batched is not None and batched.axis == axis
    assert any(isinstance(m, SliceGroupInstanceNorm) for m in batched.modules())
    for slices in (1, 2, 5):
        shape = [16, 16, 16]
        shape[axis] = slices
        x = torch.randn(3, 3, *shape)
        with torch.no_grad():
            torch.testing.assert_close(batched(x), net(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm", [("instance", {"affine": True}), "batch", "channel_layer"])
def test_other_normalisations_are_batched_too(norm):
    net = _randomise_affine(slice_wise(norm=norm))
    batched = slice_batched(net)
    assert batched is not None
    x = torch.randn(2, 3, 16, 16, 4)
    with torch.no_grad():
        torch.testing.assert_close(batched(x), net(x), atol=1e-5, rtol=1e-4)


def test_networks_whose_slices_meet_elsewhere_are_not_batched():
    torch.manual_seed(0)
    anisotropic = UNetPlusPlus(spatial_dims=3, in_channels=3, out_channels=2, strides=[[2, 2, 1]] * 3,
                               kernel_sizes=[[3, 3, 1]] * 2 + [[3, 3, 3]] * 2, features=[4, 8, 8, 16]).eval()
    assert slice_axis_of(anisotropic) is None and slice_batched(anisotropic) is None
    assert slice_axis_of(slice_wise(norm=("group", {"num_groups": 2}))) is None  # statistics over the slices
    # a depth divisor of 2 pads the slices, and the padding enters the instance norms
    assert slice_axis_of(slice_wise(size_divisor=[8, 8, 2])) is None
    assert slice_axis_of(slice_wise(size_divisor=[8, 8, 1])) == 2
    training_batch_norm = slice_wise(norm="batch").train()
    assert slice_axis_of(training_batch_norm) is None  # batch statistics would pool the moved slices
    unknown = nn.Sequential(nn.Conv3d(2, 2, (3, 3, 1), padding=(1, 1, 0)), nn.Linear(4, 4))
    assert slice_axis_of(unknown) is None  # a layer of unknown reach with weights
    assert slice_axis_of(nn.Sequential(nn.ReLU())) is None  # nothing to batch


def test_a_single_slice_folds_without_a_copy():
    conv = fold_unit_axes(nn.Sequential(nn.Conv3d(2, 3, (3, 3, 1), padding=(1, 1, 0))))[0]
    assert isinstance(conv, UnitAxisConv3d)
    x = torch.randn(4, 2, 8, 8, 1)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), nn.functional.conv3d(x, conv.weight, conv.bias, padding=(1, 1, 0)))


def _op_counts(path):
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_the_slice_batched_export_moves_the_slices_once_and_keeps_a_dynamic_batch(tmp_path):
    net = slice_wise()
    sample = torch.randn(1, 3, 32, 32, 4)
    plain = export_onnx(net, sample, tmp_path / "plain.onnx")
    batched = export_onnx(slice_batched(net), sample, tmp_path / "batched.onnx")
    assert _op_counts(plain)["Transpose"] > 10  # two per convolution
    assert _op_counts(batched)["Transpose"] == 2  # in and out
    session = ort.InferenceSession(str(batched), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32, 4)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4, rtol=1e-4)


def _assert_compiled_gives_the_network_output(net, x, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fall-back to torch
        got = CompiledNetwork(net, "onnxruntime", folder)(x)
    with torch.no_grad():
        torch.testing.assert_close(got, net(x), atol=1e-4, rtol=1e-4)


def test_a_compiled_slice_wise_network_is_exported_slice_batched(tmp_path):
    net = slice_wise()
    _assert_compiled_gives_the_network_output(net, torch.randn(2, 3, 32, 32, 3), tmp_path)
    names = [p.name for p in tmp_path.glob("*.onnx")]
    assert names == [onnx_file_name(weights_digest(net), (3, 32, 32, None), SLICE_BATCHED)]


def test_a_slice_batched_export_with_an_open_slice_axis_takes_any_depth_and_batch(tmp_path):
    net = slice_wise()
    path = export_onnx(slice_batched(net), torch.randn(1, 3, 32, 32, 4), tmp_path / "open.onnx",
                       dynamic_spatial_axes=(2,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, slices in ((1, 1), (3, 2), (2, 5), (1, 7)):
        x = torch.randn(batch, 3, 32, 32, slices)
        with torch.no_grad():
            expected = net(x).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4, rtol=1e-4)


def test_windows_of_every_depth_share_one_export_and_one_loaded_model(tmp_path, monkeypatch):
    loads = []
    load = pipeline.runtimes.network.load_runtime_model
    monkeypatch.setattr("pipeline.runtimes.network.load_runtime_model",
                        lambda *args, **kwargs: loads.append(args[1]) or load(*args, **kwargs))
    net = slice_wise()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fall-back to torch
        compiled = CompiledNetwork(net, "onnxruntime", tmp_path)
        for slices in (2, 5, 1, 3, 5):
            x = torch.randn(2, 3, 32, 32, slices)
            with torch.no_grad():
                torch.testing.assert_close(compiled(x), net(x), atol=1e-4, rtol=1e-4)
    assert [p.name for p in tmp_path.glob("*.onnx")] == [onnx_file_name(weights_digest(net), (3, 32, 32, None),
                                                                        SLICE_BATCHED)]
    assert len(loads) == 1


class _FixedDepthSliceBatchedNetwork(SliceBatchedNetwork):
    """Takes the depth as a Python number, as a careless edit would: the export then works for its own depth only."""

    def forward(self, x):
        return super().forward(x.reshape(x.shape[0], x.shape[1], x.shape[2], x.shape[3], int(x.shape[4])))


def test_an_export_whose_depth_is_not_open_is_caught_and_exported_per_shape(tmp_path, monkeypatch):
    exported = []
    export = pipeline.runtimes.network.export_onnx
    monkeypatch.setattr("pipeline.runtimes.network.export_onnx",
                        lambda network, *args: exported.append(type(network).__name__) or export(network, *args))
    monkeypatch.setattr("pipeline.runtimes.network.SliceBatchedNetwork", _FixedDepthSliceBatchedNetwork)
    net = slice_wise()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fall-back to torch
        compiled = CompiledNetwork(net, "onnxruntime", tmp_path)
        for slices in (4, 2):
            x = torch.randn(1, 3, 32, 32, slices)
            with torch.no_grad():
                torch.testing.assert_close(compiled(x), net(x), atol=1e-4, rtol=1e-4)
    names = [p.name for p in tmp_path.glob("*.onnx")]
    assert {onnx_file_name(weights_digest(net), (3, 32, 32, s)) for s in (4, 2)} <= set(names)
    # the slice-batched export is tried once, not again for the second depth
    assert exported == ["_FixedDepthSliceBatchedNetwork", "UNetPlusPlus", "UNetPlusPlus"]


def test_a_slice_batched_export_that_disagrees_gives_way_to_the_network_as_it_is(tmp_path, monkeypatch):
    net = slice_wise()
    other = slice_wise(seed=1)
    # a slice-batched copy of other weights: it loads, but its output is not the network's
    monkeypatch.setattr("pipeline.runtimes.network.SliceBatchedNetwork",
                        lambda network, axis: SliceBatchedNetwork(other, axis))
    _assert_compiled_gives_the_network_output(net, torch.randn(1, 3, 32, 32, 2), tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert onnx_file_name(weights_digest(net), (3, 32, 32, 2)) in names
