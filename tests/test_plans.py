"""Plans derived from a fingerprint: spacing, configuration, patch, per-level strides and kernels, batch, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.__main__ import main
from pipeline.planning.plans import derive_plans, estimate_training_memory_mb, load_plans, write_plans
from pipeline.networks import UNetPlusPlus

CTP = ["CBF", "CBV", "MTT", "Tmax"]
# ISLES 2018 training slabs: (slices, thickness mm) -> count.
ISLES2018_SLABS = {(2, 12.0): 46, (16, 10.0): 13, (4, 6.0): 11, (8, 5.0): 9, (4, 5.0): 8, (2, 10.0): 5, (22, 4.0): 2}


def fingerprint(cases, channels=CTP, **summary):
    """A fingerprint dict as ``prepare`` writes it, from (shape, spacing) pairs."""
    rows = [
        {"case_id": f"case_{i}", "split": "training",
         **{f"shape_{a}": n for a, n in zip("xyz", shape)}, **{f"spacing_{a}": s for a, s in zip("xyz", spacing)}}
        for i, (shape, spacing) in enumerate(cases)
    ]
    return {"summary": {"channels": list(channels), **summary}, "cases": rows}


def slab_dataset(n=20):
    return fingerprint([((256, 256, 2), (0.9, 0.9, 12.0))] * n)


def thin_dataset(n=10):
    return fingerprint([((192, 224, 160), (1.0, 1.0, 1.0))] * n, channels=["DWI", "ADC", "FLAIR"])


def isles2018_dataset():
    cases = [((256, 256, z), (0.9, 0.9, t)) for (z, t), n in ISLES2018_SLABS.items() for _ in range(n)]
    return fingerprint(cases)


def level_geometry(plans):
    """Per level: (patch extent, spacing) per network axis, following the plan's strides."""
    axes = [a for a in range(3) if plans["spatial_dims"] == 3 or a != plans["slice_axis"]]
    size = list(plans["patch_size"])
    spacing = [plans["target_spacing"][a] for a in axes]
    levels = [(size, spacing)]
    for stride in plans["strides"]:
        size = [n // s for n, s in zip(size, stride)]
        spacing = [sp * s for sp, s in zip(spacing, stride)]
        levels.append((size, spacing))
    return levels


def assert_pooling_rule(plans, min_size=8, max_depth=5):
    """Every pooled axis was at most twice the finest spacing and at least ``min_size`` voxels;
    the last level stops because nothing may pool or the depth limit is reached."""
    levels = level_geometry(plans)
    for (size, spacing), stride in zip(levels, plans["strides"]):
        for n, sp, s in zip(size, spacing, stride):
            poolable = sp <= 2 * min(spacing) and n >= min_size
            assert s == (2 if poolable else 1)
    size, spacing = levels[-1]
    assert plans["depth"] == max_depth or not any(
        sp <= 2 * min(spacing) and n >= min_size for n, sp in zip(size, spacing)
    )


def assert_consistent(plans):
    depth = plans["depth"]
    assert len(plans["strides"]) == depth
    assert len(plans["kernel_sizes"]) == depth + 1
    assert len(plans["features"]) == depth + 1
    for n, axis in zip(plans["patch_size"], range(plans["spatial_dims"])):
        assert n % math.prod(s[axis] for s in plans["strides"]) == 0
    assert plans["batch_size"] >= 2
    json.dumps(plans)


def test_two_slice_slab_is_taken_whole_and_pooled_in_plane_only():
    plans = derive_plans(slab_dataset(), configuration="3d_anisotropic")
    assert_consistent(plans)
    assert_pooling_rule(plans)
    assert plans["configuration"] == "3d_anisotropic" and plans["spatial_dims"] == 3
    assert plans["patch_size"][2] == 2
    assert all(s[2] == 1 for s in plans["strides"])
    in_plane_pools = sum(s[0] == 2 for s in plans["strides"])
    assert 4 <= in_plane_pools <= 5 and all(s[0] == s[1] for s in plans["strides"])
    # Kernel 1 across the 12 mm slices while the in-plane voxels are finer than 6 mm (levels 0-2:
    # 0.9, 1.8, 3.6 mm); from 7.2 mm on the slices are within 2x and get 3, as in nnU-Net.
    assert [k[2] for k in plans["kernel_sizes"][:3]] == [1, 1, 1]
    assert all(k[:2] == [3, 3] for k in plans["kernel_sizes"])
    assert plans["patch_size"][0] <= 256 and plans["patch_size"][0] == plans["patch_size"][1]
    assert plans["target_spacing"] == [0.9, 0.9, 12.0] and plans["resample"] is False


def test_thin_isotropic_volume_pools_every_axis_with_3d_kernels():
    plans = derive_plans(thin_dataset())
    assert_consistent(plans)
    assert_pooling_rule(plans)
    assert plans["configuration"] == "3d_fullres"
    assert all(n >= 32 for n in plans["patch_size"])
    for axis in range(3):
        assert sum(s[axis] == 2 for s in plans["strides"]) >= 3
    assert all(k == [3, 3, 3] for k in plans["kernel_sizes"])
    assert plans["in_channels"] == 3 and plans["channels"] == ["DWI", "ADC", "FLAIR"]


def test_isles2018_slab_histogram_gives_sensible_plans():
    # Sensible: a 3D anisotropic network whose patch takes the median (2-slice) slab whole; the
    # slice axis is never resampled and pooled at most once; in-plane pooled at least 4 times on a
    # patch no larger than the 256x256 maps; every slab has at least as many slices as the patch.
    plans = derive_plans(isles2018_dataset(), configuration="3d_anisotropic")
    assert_consistent(plans)
    assert_pooling_rule(plans)
    assert plans["configuration"] == "3d_anisotropic"
    assert plans["patch_size"][2] == 2 == plans["fingerprint_summary"]["median_slices"]
    assert min(z for z, _ in ISLES2018_SLABS) >= plans["patch_size"][2]
    assert sum(s[2] == 2 for s in plans["strides"]) <= 1
    assert sum(s[0] == 2 for s in plans["strides"]) >= 4
    assert 64 <= plans["patch_size"][0] <= 256
    assert plans["target_spacing"][2] == 10.0  # the median slab thickness, kept native
    assert plans["resample_pixdim"][2] == 0.0
    assert plans["fingerprint_summary"]["two_slice_fraction"] == pytest.approx(51 / 94, abs=1e-3)


def test_an_axis_stops_pooling_once_it_is_smaller_than_min_size():
    small_maps = derive_plans(fingerprint([((40, 40, 2), (0.9, 0.9, 12.0))] * 4), configuration="3d_anisotropic")
    assert_consistent(small_maps)
    assert_pooling_rule(small_maps)
    assert small_maps["patch_size"] == [40, 40, 2]
    assert small_maps["strides"] == [[2, 2, 1]] * 3  # 40 -> 20 -> 10 -> 5; 5 < 8 stops
    lenient = derive_plans(fingerprint([((40, 40, 2), (0.9, 0.9, 12.0))] * 4), min_size=4)
    assert_pooling_rule(lenient, min_size=4)
    assert lenient["strides"] == [[2, 2, 1]] * 4  # ... -> 5 -> 2

    short_volume = derive_plans(fingerprint([((64, 64, 12), (1.0, 1.0, 1.0))] * 4))
    assert_consistent(short_volume)
    assert_pooling_rule(short_volume)
    assert short_volume["patch_size"] == [64, 64, 12]
    assert [s[2] for s in short_volume["strides"]] == [2] + [1] * (short_volume["depth"] - 1)  # 12 -> 6


def test_depth_is_capped_at_max_depth():
    plans = derive_plans(slab_dataset(), max_depth=3)
    assert plans["depth"] == 3 and len(plans["kernel_sizes"]) == 4 and plans["features"] == [16, 32, 64, 128]


def test_features_double_per_level_up_to_the_cap():
    plans = derive_plans(slab_dataset(), base_features=32, max_features=320, memory_budget_mb=20000)
    assert plans["features"] == [32, 64, 128, 256, 320, 320]


def test_batch_size_grows_with_the_memory_budget_and_is_at_least_two():
    data = slab_dataset(200)
    budgets = [256, 2048, 8192, 32768]
    plans = [derive_plans(data, memory_budget_mb=b, max_dataset_fraction=None, configuration="3d_anisotropic") for b in budgets]
    batches = [p["batch_size"] for p in plans]
    assert min(batches) >= 2
    assert batches == sorted(batches) and batches[-1] > batches[1]
    for p, budget in zip(plans[1:], budgets[1:]):
        assert p["memory_estimate_mb"] <= budget


def test_a_small_budget_keeps_batch_two_and_shrinks_the_in_plane_patch():
    roomy = derive_plans(slab_dataset(), memory_budget_mb=8192, max_dataset_fraction=None, configuration="3d_anisotropic")
    tight = derive_plans(slab_dataset(), memory_budget_mb=300, max_dataset_fraction=None, configuration="3d_anisotropic")
    assert tight["batch_size"] == 2
    assert tight["patch_size"][0] < roomy["patch_size"][0] and tight["patch_size"][2] == 2
    assert tight["memory_estimate_mb"] <= 300


def test_a_batch_covers_at_most_five_percent_of_the_training_voxels():
    plans = derive_plans(slab_dataset(400), memory_budget_mb=65536)
    voxels = 400 * 256 * 256 * 2
    assert plans["batch_size"] * math.prod(plans["patch_size"]) <= 0.05 * voxels
    assert plans["batch_size"] < derive_plans(slab_dataset(400), memory_budget_mb=65536,
                                              max_dataset_fraction=None)["batch_size"]


def test_max_patch_voxels_caps_the_patch():
    plans = derive_plans(slab_dataset(), max_patch_voxels=128 * 128 * 2, configuration="3d_anisotropic")
    assert math.prod(plans["patch_size"]) <= 128 * 128 * 2 and plans["patch_size"][2] == 2


def test_small_in_plane_spacing_differences_are_left_native():
    cases = [((256, 256, 2), (s, s, 12.0)) for s in (0.86, 0.9, 0.94)]
    plans = derive_plans(fingerprint(cases))
    assert plans["resample"] is False and plans["resample_pixdim"] == [0.0, 0.0, 0.0]


def test_large_in_plane_differences_are_resampled_but_thick_slices_are_not():
    cases = [((256, 256, 2), (s, s, t)) for s, t in ((0.8, 12.0), (0.9, 10.0), (1.04, 5.0))]
    plans = derive_plans(fingerprint(cases))
    assert plans["resample"] is True
    assert plans["resample_pixdim"] == [0.9, 0.9, 0.0]
    assert plans["target_spacing"] == [0.9, 0.9, 10.0]


def test_isotropic_data_with_spread_spacing_is_resampled_on_every_axis():
    cases = [((160, 160, 160), (s, s, s)) for s in (0.8, 1.0, 1.2)]
    plans = derive_plans(fingerprint(cases))
    assert plans["configuration"] == "3d_fullres" and plans["resample_pixdim"] == [1.0, 1.0, 1.0]


def test_single_slice_data_gets_a_2d_configuration_the_3d_bundles_run():
    plans = derive_plans(fingerprint([((256, 256, 1), (0.9, 0.9, 5.0))] * 5))
    assert plans["configuration"] == "2d" and plans["spatial_dims"] == 3 and list(plans["configurations"]) == ["2d"]
    assert plans["patch_size"] == [256, 256, 1]
    assert all(s[2] == 1 for s in plans["strides"]) and all(k[2] == 1 for k in plans["kernel_sizes"])
    assert_consistent(plans)


def test_slab_data_default_to_2d_with_the_anisotropic_3d_configuration_beside_it(tmp_path):
    plans = derive_plans(slab_dataset(), configuration="3d_anisotropic")
    assert plans["configuration"] == "3d_anisotropic"
    assert list(plans["configurations"]) == ["2d", "3d_anisotropic"]
    assert plans["configurations"]["3d_anisotropic"]["patch_size"] == plans["patch_size"]
    flat = derive_plans(slab_dataset())  # anisotropic slabs: 2d by default
    assert flat["configuration"] == "2d" and flat["patch_size"] == [256, 256, 1]  # a whole slice
    assert all(k == [3, 3, 1] for k in flat["kernel_sizes"]) and all(s == [2, 2, 1] for s in flat["strides"])
    assert_consistent(flat)
    path = write_plans(plans, tmp_path / "plans.json")
    chosen = load_plans(path, "2d")
    for key in ("configuration", "patch_size", "strides", "kernel_sizes", "features", "batch_size"):
        assert chosen[key] == flat[key]
    assert chosen["target_spacing"] == plans["target_spacing"]  # what the configurations share stays
    assert load_plans(path)["patch_size"] == plans["patch_size"] and load_plans(path, "3d_anisotropic") == load_plans(path)
    with pytest.raises(ValueError, match="no '3d_fullres' configuration; they hold 2d, 3d_anisotropic"):
        load_plans(path, "3d_fullres")
    with pytest.raises(ValueError, match="does not fit"):
        derive_plans(fingerprint([((256, 256, 1), (0.9, 0.9, 5.0))] * 5), configuration="3d_anisotropic")


def test_a_2d_plan_builds_a_network_that_maps_a_slice_to_a_slice():
    plans = derive_plans(slab_dataset(), configuration="2d", base_features=4, max_features=8, max_patch_voxels=64 * 64)
    net = UNetPlusPlus(3, plans["in_channels"], 2, strides=plans["strides"], kernel_sizes=plans["kernel_sizes"],
                       features=plans["features"]).eval()
    with torch.no_grad():
        assert tuple(net(torch.zeros(1, plans["in_channels"], 64, 64, 2)).shape) == (1, 2, 64, 64, 2)


def test_channels_and_normalization_come_from_the_summary():
    norm = {"CBF": {"method": "percentile", "lower": 0.5, "upper": 99.5}}
    data = fingerprint([((256, 256, 2), (0.9, 0.9, 12.0))] * 3, normalization=norm, profile="isles2018")
    plans = derive_plans(data)
    assert plans["channels"] == CTP and plans["in_channels"] == 4
    assert plans["normalization"] == norm and plans["profile"] == "isles2018"
    assert plans["version"] == 1 and plans["fingerprint_summary"]["training_cases"] == 3


def test_only_training_cases_are_planned_for():
    data = slab_dataset(5)
    data["cases"].append({"case_id": "t", "split": "testing", "shape_x": 256, "shape_y": 256, "shape_z": 200,
                          "spacing_x": 0.9, "spacing_y": 0.9, "spacing_z": 1.0})
    plans = derive_plans(data)
    assert plans["target_spacing"][2] == 12.0 and plans["fingerprint_summary"]["training_cases"] == 5


def test_the_plan_builds_a_network_that_maps_a_patch_to_a_patch():
    plans = derive_plans(slab_dataset(), max_patch_voxels=64 * 64 * 2, base_features=4, max_features=16)
    net = UNetPlusPlus(plans["spatial_dims"], plans["in_channels"], 2, strides=plans["strides"],
                       kernel_sizes=plans["kernel_sizes"], features=plans["features"]).eval()
    assert net.size_divisor[2] == 1
    with torch.no_grad():
        out = net(torch.zeros(1, plans["in_channels"], *plans["patch_size"]))
    assert tuple(out.shape[2:]) == tuple(plans["patch_size"])


def test_memory_estimate_covers_the_activations_autograd_keeps():
    plans = derive_plans(slab_dataset(), max_patch_voxels=96 * 96 * 2, base_features=8, max_features=64)
    net = UNetPlusPlus(3, 4, 2, strides=plans["strides"], kernel_sizes=plans["kernel_sizes"],
                       features=plans["features"], norm="instance", deep_supervision=True).train()
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(torch.zeros(1, 4, *plans["patch_size"]))
    saved_mb = sum(saved.values()) / 2**20
    estimate = estimate_training_memory_mb(plans["patch_size"], plans["strides"], plans["kernel_sizes"],
                                           plans["features"], 4, batch_size=1)
    assert saved_mb <= estimate <= 2.5 * saved_mb


def test_plans_round_trip_through_their_file(tmp_path):
    plans = derive_plans(isles2018_dataset())
    path = write_plans(plans, tmp_path / "sub" / "plans.json")
    assert load_plans(path) == plans
    assert [p.name for p in path.parent.iterdir()] == ["plans.json"]


def test_derive_plans_reads_a_fingerprint_file(tmp_path):
    path = tmp_path / "fingerprint.json"
    path.write_text(json.dumps(slab_dataset()))
    assert derive_plans(path) == derive_plans(slab_dataset())


def test_load_plans_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="plans.json does not exist"):
        load_plans(tmp_path / "plans.json")


def test_load_plans_rejects_broken_or_foreign_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_plans(broken)
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"version": 1, "patch_size": [64, 64, 2]}))
    with pytest.raises(ValueError, match="lacks strides"):
        load_plans(incomplete)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**derive_plans(slab_dataset()), "version": 2}))
    with pytest.raises(ValueError, match="version 2"):
        load_plans(future)


def test_bad_fingerprints_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare"):
        derive_plans(tmp_path / "fingerprint.json")
    with pytest.raises(ValueError, match="no 'cases'"):
        derive_plans({"summary": {}, "cases": []})
    with pytest.raises(ValueError, match="case_0"):
        derive_plans({"cases": [{"case_id": "case_0", "shape_x": 256}]})
    with pytest.raises(ValueError, match="max_depth"):
        derive_plans(slab_dataset(), max_depth=7)
    with pytest.raises(ValueError, match="too small"):
        derive_plans(fingerprint([((6, 6, 6), (1.0, 1.0, 1.0))]))


def test_plans_from_a_prepared_synthetic_dataset(tmp_path):
    root = tmp_path / "synth"
    assert main(["synth", str(root), "--cases", "3", "--test-cases", "1", "--seed", "0"]) == 0
    assert main(["prepare", "--root", str(root), "--out", str(root / "datalist.json"), "--folds", "2"]) == 0
    plans = derive_plans(root / "fingerprint.json", configuration="3d_anisotropic")
    assert_consistent(plans)
    assert_pooling_rule(plans)
    assert derive_plans(root / "fingerprint.json")["configuration"] == "2d"  # the default for the slabs
    assert plans["channels"] == [*CTP, "CT"] and plans["profile"] == "isles2018"
    assert plans["resample_pixdim"][2] == 0.0
    assert plans["patch_size"][2] == plans["fingerprint_summary"]["median_slices"]
    assert plans["fingerprint_summary"]["training_cases"] == 3


def test_train_runs_with_the_plans_prepare_wrote_beside_the_datalist_unless_plans_none(tmp_path):
    import argparse

    from pipeline.training.command import train_command
    from pipeline.planning.bundle_settings import trained_plans

    root = tmp_path / "synth"
    assert main(["synth", str(root), "--cases", "3", "--test-cases", "1", "--seed", "0"]) == 0
    assert main(["prepare", "--root", str(root), "--out", str(root / "datalist.json"), "--folds", "2"]) == 0
    plans = load_plans(root / "plans.json")
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "isles_unetplusplus"

    def command(plans_option):
        args = argparse.Namespace(bundle=str(bundle), datalist=str(root / "datalist.json"), fold=0, epochs=None,
                                  output=None, plans=plans_option, set=None, tracking=None, tracking_uri=None,
                                  experiment=None)
        return train_command(args), trained_plans(args)

    line, trained = command(None)
    planned = "[" + ",".join(str(v) for v in plans["patch_size"]) + "]"
    assert line[line.index("--patch_size") + 1] == planned and trained["patch_size"] == plans["patch_size"]
    line, trained = command("none")
    assert "--patch_size" not in line and "--features" not in line and trained is None
    (root / "plans.json").unlink()
    line, trained = command(None)
    assert "--patch_size" not in line and trained is None


def test_resample_pixdim_is_what_spacingd_takes_a_zero_keeps_the_thick_slices():
    from monai.data import MetaTensor
    from monai.transforms import Spacingd

    cases = [((256, 256, 2), (s, s, t)) for s, t in ((0.8, 12.0), (0.9, 10.0), (1.04, 5.0))]
    pixdim = derive_plans(fingerprint(cases))["resample_pixdim"]
    slab = MetaTensor(torch.rand(1, 32, 32, 2), affine=torch.diag(torch.tensor([1.04, 1.04, 5.0, 1.0], dtype=torch.float64)))
    out = Spacingd("image", pixdim=pixdim, mode="bilinear")({"image": slab})["image"]
    assert out.shape[-1] == 2  # the slice axis is not resampled
    assert out.pixdim.tolist() == pytest.approx([0.9, 0.9, 5.0])
    assert out.shape[1:3] == (37, 37)  # 32 * 1.04 / 0.9 = 36.98
    # all zeros is the bundles' default: MONAI's Spacingd then leaves the data untouched
    kept = Spacingd("image", pixdim=[0.0, 0.0, 0.0])({"image": slab})["image"]
    assert torch.equal(kept.as_tensor(), slab.as_tensor())


def test_the_plans_depth_limit_is_the_networks():
    """Plans never ask for a deeper UNet++ than the network builds (the limit is written in both places)."""
    from pipeline.networks.unetpp import MAX_DEPTH as NETWORK_MAX_DEPTH
    from pipeline.planning.plans import MAX_DEPTH as PLANS_MAX_DEPTH

    assert PLANS_MAX_DEPTH == NETWORK_MAX_DEPTH



def test_the_cpu_budget_trains_128x128_crops_with_the_voxels_of_4_two_slice_slabs_per_step():
    from pipeline.planning.cpu_budget import cpu_budget_plans

    flat = {"strides": [[2, 2, 1]] * 5, "patch_size": [256, 256, 1], "batch_size": 3, "features": [32] * 6}
    sized = cpu_budget_plans(flat)
    assert (sized["patch_size"], sized["batch_size"]) == ([128, 128, 1], 8)
    assert sized["features"] == [8, 16, 32, 64, 128, 128] and flat["batch_size"] == 3  # the input is left as it was
    slab = cpu_budget_plans({**flat, "patch_size": [224, 224, 2]})
    assert (slab["patch_size"], slab["batch_size"]) == ([128, 128, 2], 4)
