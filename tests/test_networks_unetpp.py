"""UNet++: nested nodes, sizes (odd sizes, 2-slice slabs), deep supervision order, pruning, export, paper parameter counts."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import verify_net_in_out
from monai.inferers import sliding_window_inference

from pipeline.networks import UNetPlusPlus, count_parameters

SLAB_STRIDES = [[2, 2, 1]] * 4
TINY = dict(features=[4, 6, 8, 10, 12])


pytestmark = pytest.mark.usefixtures("seeded_single_thread")


def tiny_slab_net(**kwargs) -> UNetPlusPlus:
    """A 3D UNet++ of depth 4 that pools only in-plane, with tiny widths."""
    options = dict(spatial_dims=3, in_channels=4, out_channels=2, strides=SLAB_STRIDES, **TINY)
    options.update(kwargs)
    return UNetPlusPlus(**options)


# Paper numbers (2D, k = 32 * 2**i, depth 4, one input channel, one class), in millions.
PAPER_PRUNED = {1: 0.1, 2: 0.5, 3: 2.2, 4: 9.04}


def test_parameter_count_matches_the_paper_unetpp():
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1, norm=None, deep_supervision=True)
    assert count_parameters(net) == 9_041_700  # the paper: 9.04M (its Keras code: 9,041,601 without 3 of the heads)
    assert count_parameters(net) / 1e6 == pytest.approx(9.04, rel=0.01)


def test_batch_norm_adds_little_to_the_paper_count():
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1, norm="batch")
    assert count_parameters(net) / 1e6 == pytest.approx(9.04, rel=0.01)


def test_pruned_parameter_counts_match_the_paper():
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1, norm=None, deep_supervision=True)
    counts = {level: count_parameters(net.prune(level)) for level in range(1, 5)}
    assert counts == {1: 100_961, 2: 511_138, 3: 2_205_027, 4: 9_041_700}
    assert counts == net.parameter_counts()
    for level, millions in PAPER_PRUNED.items():
        assert counts[level] / 1e6 == pytest.approx(millions, rel=0.05)


def test_odd_3d_slab_size_keeps_its_shape():
    net = tiny_slab_net().eval()
    with torch.no_grad():
        out = net(torch.randn(1, 4, 48, 40, 2))
    assert out.shape == (1, 2, 48, 40, 2)


def test_odd_2d_size_is_padded_and_cropped_back():
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=3, **TINY).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 37, 29))
    assert out.shape == (2, 3, 37, 29)
    assert net.size_divisor == [16, 16]


def test_two_slice_slab_is_never_pooled_through_plane():
    net = tiny_slab_net().eval()
    with torch.no_grad():
        grid = net.compute_nodes(torch.randn(1, 4, 32, 32, 2))
    assert [grid[i][0].shape[2:] for i in range(5)] == [(32 >> i, 32 >> i, 2) for i in range(5)]
    assert net.size_divisor == [16, 16, 1]


def test_nodes_follow_the_nested_grid():
    net = tiny_slab_net(depth=3, strides=SLAB_STRIDES[:3], features=[4, 6, 8, 10]).eval()
    with torch.no_grad():
        grid = net.compute_nodes(torch.randn(1, 4, 16, 16, 2))
    assert [len(row) for row in grid] == [4, 3, 2, 1]  # X^{i,j} for i + j <= 3
    assert grid[1][2].shape == (1, 6, 8, 8, 2)


def test_deep_supervision_stacks_heads_deepest_first():
    net = tiny_slab_net(deep_supervision=True).train()
    x = torch.randn(2, 4, 16, 16, 2)
    out = net(x)
    assert out.shape == (2, 4, 2, 16, 16, 2)
    grid = net.compute_nodes(x)
    for k in range(4):
        level = 4 - k
        assert torch.allclose(out[:, k], net.head(level)(grid[0][level]), atol=1e-6)


def test_eval_mode_returns_one_tensor_the_deepest_head():
    net = tiny_slab_net(deep_supervision=True).eval()
    x = torch.randn(1, 4, 16, 16, 2)
    with torch.no_grad():
        out = net(x)
        heads = net.all_heads(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 16, 16, 2)
    assert torch.equal(out, heads[:, 0])


def test_eval_mode_mean_of_heads():
    net = tiny_slab_net(deep_supervision=True, inference_output="mean").eval()
    x = torch.randn(1, 4, 16, 16, 2)
    with torch.no_grad():
        assert torch.allclose(net(x), net.all_heads(x).mean(dim=1), atol=1e-6)


def test_inference_level_selects_a_shallower_head():
    net = tiny_slab_net(deep_supervision=True, inference_level=2).eval()
    x = torch.randn(1, 4, 16, 16, 2)
    with torch.no_grad():
        assert torch.equal(net(x), net.all_heads(x)[:, 4 - 2])


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_pruned_network_reproduces_its_head_exactly(level):
    net = tiny_slab_net(deep_supervision=True, norm="batch").eval()
    x = torch.randn(1, 4, 21, 18, 2)  # odd in-plane size: the pruned network must pad like the full one
    pruned = net.prune(level)
    with torch.no_grad():
        expected = net.all_heads(x)[:, 4 - level]
        got = pruned(x)
    assert not pruned.training
    assert torch.allclose(got, expected, atol=1e-6)
    assert pruned.depth == level and len(pruned.levels) == level


def test_pruning_removes_parameters_level_by_level():
    net = tiny_slab_net()
    counts = [count_parameters(net.prune(level)) for level in range(1, 5)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert counts[-1] == count_parameters(net)


def test_prune_shares_weights_unless_asked_to_copy():
    net = tiny_slab_net()
    shared, copied = net.prune(2), net.prune(2, copy_weights=True)
    assert shared.stem[0].conv.weight is net.stem[0].conv.weight
    assert copied.stem[0].conv.weight is not net.stem[0].conv.weight
    assert torch.equal(copied.stem[0].conv.weight, net.stem[0].conv.weight)


def test_prune_rejects_levels_outside_the_depth():
    net = tiny_slab_net()
    for level in (0, 5):
        with pytest.raises(ValueError, match="between 1 and the depth 4"):
            net.prune(level)


def test_gradients_reach_every_head_and_every_node():
    net = tiny_slab_net(deep_supervision=True, norm=None).train()
    out = net(torch.randn(2, 4, 16, 16, 2))
    (out * torch.randn_like(out)).sum().backward()
    modules = {"stem": net.stem}
    for stage in net.levels:
        modules[f"head {stage.level}"] = stage.head
        modules[f"X{stage.level},0"] = stage.encoder
        for node in stage.nodes:
            modules[f"X{node.row},{node.column}"] = node
    assert len(modules) == 1 + 4 + 4 + 10
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_torchscript_export_matches_eager_forward():
    net = tiny_slab_net(deep_supervision=True).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 4, 21, 18, 2)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)
        assert torch.allclose(scripted.all_heads(x), net.all_heads(x), atol=1e-6)


def test_torchscript_export_of_a_pruned_network(tmp_path):
    pruned = tiny_slab_net().eval().prune(3)
    path = tmp_path / "pruned.ts"
    torch.jit.save(torch.jit.script(pruned), str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(1, 4, 16, 16, 2)
    with torch.no_grad():
        assert torch.allclose(loaded(x), pruned(x), atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_trace_in_eval_mode():
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, **TINY).eval()
    x = torch.randn(1, 1, 32, 32)
    traced = torch.jit.trace(net, x)
    with torch.no_grad():
        assert torch.allclose(traced(x), net(x), atol=1e-6)


def test_sliding_window_inference_on_the_eval_network():
    net = tiny_slab_net(deep_supervision=True).eval()
    image = torch.randn(1, 4, 40, 36, 2)
    with torch.no_grad():
        out = sliding_window_inference(image, roi_size=(32, 32, 2), sw_batch_size=2, predictor=net, overlap=0.25)
    assert out.shape == (1, 2, 40, 36, 2)


def test_bundle_verify_net_in_out_accepts_the_deep_supervised_network(tmp_path):
    meta = {"network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": 4, "spatial_shape": [32, 32, 2],
                             "dtype": "float32", "value_range": [0, 1], "is_patch_data": True}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "spatial_shape": [32, 32, 2], "dtype": "float32", "value_range": [0, 1]}}}}
    config = {"network_def": {"_target_": "pipeline.networks.UNetPlusPlus", "spatial_dims": 3, "in_channels": 4,
                              "out_channels": 2, "strides": SLAB_STRIDES, "features": [2, 4, 4, 4, 4],
                              "deep_supervision": True}}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "inference.json").write_text(json.dumps(config))
    verify_net_in_out(net_id="network_def", meta_file=str(tmp_path / "metadata.json"),
                      config_file=str(tmp_path / "inference.json"), device="cpu")


def test_nontrainable_upsampling_prunes_exactly():
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, upsample="nontrainable", **TINY).eval()
    x = torch.randn(1, 1, 24, 20)
    with torch.no_grad():
        assert torch.allclose(net.prune(2)(x), net.all_heads(x)[:, 2], atol=1e-6)
    assert not any("deconv" in name for name, _ in net.named_parameters())


@pytest.mark.parametrize("depth", [1, 6])
def test_depth_range_ends(depth):
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, depth=depth, base_features=2,
                       deep_supervision=True).train()
    out = net(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, depth, 2, 64, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=7), "depth must be between 1 and 6"),
        (dict(strides=[2, 2, 2]), "features must give 4"),
        (dict(depth=4, strides=[2, 2, 2]), "strides must give 4 levels"),
        (dict(kernel_sizes=[3, 3]), "kernel_sizes must give 5 levels"),
        (dict(strides=[[2, 2]] * 4), "must have 3 values"),
        (dict(inference_level=5), "inference_level must be between 1 and depth=4"),
        (dict(upsample="pixelshuffle"), "upsample must be one of"),
        (dict(inference_output="max"), "inference_output must be one of"),
    ],
)
def test_constructor_rejects_inconsistent_arguments(kwargs, message):
    options = dict(spatial_dims=3, in_channels=1, out_channels=2, features=[2, 2, 2, 2, 2])
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        UNetPlusPlus(**options)
