"""Loading and preprocessing transforms: stacking, geometry checks, the header quirk, normalization, spacing,
Invertd, the U-Net border weight map."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, Invertd, LoadImaged

from pipeline.data.profiles import load_profile
from pipeline.errors import CaseError, GeometryError
from pipeline.io import image_readers, read_geometry
from pipeline.transforms import (
    BorderWeightd,
    LoadModalitiesd,
    NormalizeModalitiesd,
    border_weight_map,
    check_case_geometry,
    normalize_channel,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "isles_unetplusplus"  # tests/test_bundles.py checks that both bundles hold the same chains
PROFILE = ROOT / "configs" / "datasets" / "isles2018.yaml"

# An oblique-free but non-RAS grid (x and y flipped, as scanner exports usually are).
AFFINE = np.array([[-0.9, 0, 0, 115.0], [0, -0.9, 0, 110.0], [0, 0, 5.0, -20.0], [0, 0, 0, 1]])


def write_nifti(path, data, affine=AFFINE, dtype=None):
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype or np.asarray(data).dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return str(path)


def make_case(tmp_path, shape=(12, 10, 3), names=("CBF", "CBV", "MTT", "Tmax"), seed=0):
    """Write one case: a channel per name whose value is (index + 1) * 10 inside a box, and a label."""
    rng = np.random.default_rng(seed)
    paths = {}
    for i, name in enumerate(names):
        data = np.zeros(shape, np.float64)
        data[2:-2, 2:-2, :] = (i + 1) * 10 + rng.random((shape[0] - 4, shape[1] - 4, shape[2]))
        paths[name] = write_nifti(tmp_path / f"{name}.nii", data)
    label = np.zeros(shape, np.uint8)
    label[3:6, 4:8, 1] = 1
    paths["label"] = write_nifti(tmp_path / "OT.nii", label)
    return paths


def bundle_chain(channels, orientation="RAS", pixdim=None):
    """The bundles' own loading and preprocessing chain: ``loading``, ``resampling`` and ``normalization`` of
    ``train.json`` (what training and validation run before padding and typing), parsed with the dataset profile
    the bundles run with, for ``channels``, reoriented to ``orientation`` and resampled to ``pixdim`` (the bundle's
    default, all zeros, keeps the native spacing)."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(PROFILE)])
    parser["channels"] = list(channels)
    parser["resampling#1#axcodes"] = orientation  # the bundle's Orientationd
    if pixdim is not None:
        parser["pixdim"] = list(pixdim)
    return Compose([t for part in ("loading", "resampling", "normalization") for t in parser.get_parsed_content(part)])


def record(paths, names):
    return {"case_id": "case_1", "image": [paths[n] for n in names], "label": paths["label"], "reference": paths[names[0]]}


def test_stacking_follows_the_channel_list_not_file_order(tmp_path):
    paths = make_case(tmp_path)
    order = ["Tmax", "CBF", "MTT", "CBV"]
    out = LoadModalitiesd("image", channels=order)(record(paths, order))
    means = [float(out["image"][c][out["image"][c] > 0].mean()) for c in range(4)]
    assert [round(m, -1) for m in means] == [40, 10, 30, 20]
    assert out["image"].shape == (4, 12, 10, 3)
    np.testing.assert_allclose(out["image"].affine.numpy(), AFFINE)


def test_shape_mismatch_names_both_files(tmp_path):
    paths = make_case(tmp_path)
    paths["CBV"] = write_nifti(tmp_path / "CBV_small.nii", np.zeros((12, 10, 2)))
    with pytest.raises(GeometryError) as err:
        LoadModalitiesd("image", channels=["CBF", "CBV"])(record(paths, ["CBF", "CBV"]))
    message = str(err.value)
    assert "case_1" in message and "CBV_small.nii" in message and "CBF.nii" in message
    assert "(12, 10, 2)" in message


def test_affine_mismatch_beyond_tolerance_is_an_error(tmp_path):
    paths = make_case(tmp_path)
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    paths["MTT"] = write_nifti(tmp_path / "MTT_shifted.nii", np.ones((12, 10, 3)), shifted)
    with pytest.raises(GeometryError, match="origin"):
        check_case_geometry("case_1", [("CBF", paths["CBF"]), ("MTT", paths["MTT"])])
    # within tolerance it passes
    check_case_geometry("case_1", [("CBF", paths["CBF"]), ("MTT", paths["MTT"])], tolerance_mm=1.0)


def test_label_on_another_grid_is_an_error(tmp_path):
    paths = make_case(tmp_path)
    paths["label"] = write_nifti(tmp_path / "OT_other.nii", np.zeros((12, 10, 4), np.uint8))
    with pytest.raises(GeometryError, match="OT_other.nii"):
        LoadModalitiesd("image", channels=["CBF"])(record(paths, ["CBF"]))


def test_a_4d_file_offered_as_a_channel_is_refused(tmp_path):
    paths = make_case(tmp_path)
    paths["PWI"] = write_nifti(tmp_path / "CT_4DPWI.nii", np.zeros((12, 10, 3, 5), np.int16))
    with pytest.raises(CaseError, match="4D"):
        LoadModalitiesd("image", channels=["CBF", "PWI"])(record(paths, ["CBF", "PWI"]))


def test_missing_file_names_case_and_file(tmp_path):
    paths = make_case(tmp_path)
    paths["CBV"] = str(tmp_path / "nowhere.nii")
    with pytest.raises(CaseError, match="case_1.*nowhere.nii"):
        LoadModalitiesd("image", channels=["CBF", "CBV"])(record(paths, ["CBF", "CBV"]))


def test_non_finite_values_are_zeroed_with_a_warning(tmp_path):
    paths = make_case(tmp_path)
    data = nib.load(paths["MTT"]).get_fdata()
    data[3, 3, 0] = np.nan
    data[4, 4, 1] = np.inf
    paths["MTT"] = write_nifti(tmp_path / "MTT_nan.nii", data)
    with pytest.warns(UserWarning, match=r"2 non-finite value\(s\) in MTT"):
        out = LoadModalitiesd("image", channels=["CBF", "MTT"])(record(paths, ["CBF", "MTT"]))
    assert torch.isfinite(out["image"]).all()
    assert float(out["image"][1, 3, 3, 0]) == 0.0


def quirk_nifti(path, data, spacing=(0.9, 0.9, 5.0)):
    """The ISLES header quirk: true spacing in pixdim, sform_code=2 with an identity srow."""
    img = nib.Nifti1Image(np.asarray(data), np.eye(4))
    img.set_sform(np.eye(4), code=2)
    img.set_qform(np.eye(4), code=0)
    img.header.set_zooms(spacing)
    nib.save(img, str(path))
    return str(path)


def test_header_quirk_is_detected_warned_and_pixdim_spacing_used(tmp_path):
    path = quirk_nifti(tmp_path / "CT_MTT.nii", np.ones((8, 8, 2), np.float64))
    assert np.allclose(nib.load(path).affine, np.eye(4))  # what an affine-based reader sees
    geometry = read_geometry(path)
    assert np.allclose(geometry.spacing, (0.9, 0.9, 5.0))
    assert "pixdim" in geometry.spacing_note and "CT_MTT.nii" in geometry.spacing_note
    with pytest.warns(UserWarning, match=r"CT_MTT.nii.*using the pixdim spacing \(0.9, 0.9, 5\)"):
        out = LoadModalitiesd("image", channels=["MTT"], label_key=None)({"case_id": "c", "image": [path]})
    assert np.allclose(out["image"].pixdim.numpy(), (0.9, 0.9, 5.0))


def test_header_quirk_prefers_a_valid_qform(tmp_path):
    img = nib.Nifti1Image(np.ones((8, 8, 2), np.float32), AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(np.eye(4), code=2)
    nib.save(img, str(tmp_path / "q.nii"))
    geometry = read_geometry(tmp_path / "q.nii")
    assert "qform" in geometry.spacing_note
    np.testing.assert_allclose(geometry.affine, AFFINE, atol=1e-5)


def test_mha_loads_like_the_same_nifti(tmp_path):
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    nifti = write_nifti(tmp_path / "a.nii.gz", data)
    image = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0)))
    image.SetSpacing((0.9, 0.9, 5.0))
    # LPS origin/direction equivalent to AFFINE's RAS ones
    image.SetOrigin((-115.0, -110.0, -20.0))
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "a.mha"))
    loader = LoadModalitiesd("image", channels=["x"], label_key=None)
    a = loader({"image": [nifti]})["image"]
    b = loader({"image": [str(tmp_path / "a.mha")]})["image"]
    np.testing.assert_allclose(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-5)
    assert len(image_readers()) == 2


def test_flair_on_its_own_grid_is_resampled_onto_dwi(tmp_path):
    dwi_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    flair_affine = np.diag([1.0, 1.0, 4.0, 1.0])
    dwi = write_nifti(tmp_path / "dwi.nii.gz", np.ones((10, 10, 8), np.float32), dwi_affine)
    flair = np.zeros((20, 20, 4), np.float32)
    flair[:, :10, :] = 5.0  # y < 10 mm is bright
    flair = write_nifti(tmp_path / "flair.nii.gz", flair, flair_affine)
    data = {"case_id": "sub-1", "image": [dwi, flair]}
    with pytest.raises(GeometryError):
        LoadModalitiesd("image", channels=["DWI", "FLAIR"], label_key=None)(data)
    out = LoadModalitiesd("image", channels=["DWI", "FLAIR"], label_key=None, resample_to_reference=["FLAIR"])(data)
    assert out["image"].shape == (2, 10, 10, 8)
    np.testing.assert_allclose(out["image"].affine.numpy(), dwi_affine)
    assert float(out["image"][1, 5, 2, 4]) == pytest.approx(5.0)  # y = 4 mm
    assert float(out["image"][1, 5, 7, 4]) == pytest.approx(0.0)  # y = 14 mm


def test_percentile_normalization_is_unit_free_and_zero_outside_the_brain():
    x = torch.zeros(20, 20, 2)
    x[5:15, 5:15] = torch.linspace(1, 100, 200).reshape(10, 10, 2)
    settings = {"method": "percentile", "lower": 0.0, "upper": 100.0, "mask": "nonzero"}
    a = normalize_channel(x, settings)
    b = normalize_channel(x * 37.5, settings)  # the same map in other units
    torch.testing.assert_close(a, b)
    assert float(a[x > 0].min()) == pytest.approx(0.0) and float(a[x > 0].max()) == pytest.approx(1.0)
    assert float(a[x == 0].abs().max()) == 0.0


def test_ct_window_clips_then_scales():
    x = torch.tensor([-1000.0, 0.0, 40.0, 80.0, 1500.0])
    out = normalize_channel(x, {"method": "ct_window", "window": [0, 80]})
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_zscore_uses_nonzero_voxels():
    x = torch.zeros(10)
    x[:4] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = normalize_channel(x, {"method": "zscore", "mask": "nonzero"})
    assert float(out[:4].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(out[4:].abs().max()) == 0.0


def test_normalize_modalities_applies_each_channels_method(tmp_path):
    image = torch.stack([torch.full((4, 4, 2), 40.0), torch.arange(32.0).reshape(4, 4, 2)])
    out = NormalizeModalitiesd(
        "image",
        channels=["CT", "CBF"],
        settings={"CT": {"normalization": {"method": "ct_window", "window": [0, 80]}},
                  "CBF": {"normalization": {"method": "percentile", "lower": 0, "upper": 100}}},
    )({"image": image})["image"]
    assert torch.allclose(out[0], torch.full((4, 4, 2), 0.5))
    assert float(out[1].max()) == pytest.approx(1.0)


def test_invertd_brings_a_prediction_back_to_the_native_grid(tmp_path):
    paths = make_case(tmp_path)
    profile = load_profile("isles2018")
    pre = bundle_chain(profile.channels, orientation="RAS")
    native = nib.load(paths["label"])
    data = pre(record(paths, profile.channels))
    assert not np.allclose(data["image"].affine.numpy(), AFFINE)  # reoriented to RAS
    data["pred"] = data["label"].clone()
    inverted = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert inverted.shape[1:] == native.shape
    np.testing.assert_allclose(inverted.affine.numpy(), native.affine, atol=1e-5)
    np.testing.assert_array_equal(inverted[0].numpy(), native.get_fdata())


def test_invertd_after_resampling_restores_the_native_shape_and_affine(tmp_path):
    paths = make_case(tmp_path, shape=(16, 14, 3))
    profile = load_profile("isles2018").with_channels(["CBF", "Tmax"])
    pre = bundle_chain(profile.channels, orientation="RAS", pixdim=(1.5, 1.5, 2.5))
    data = pre(record(paths, profile.channels))
    assert data["image"].shape[1:] != (16, 14, 3)
    data["pred"] = data["label"].clone()
    inverted = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert inverted.shape[1:] == (16, 14, 3)
    np.testing.assert_allclose(inverted.affine.numpy(), AFFINE, atol=1e-4)


def test_invertd_on_a_quirk_header_gives_the_pixdim_grid(tmp_path):
    cbf = quirk_nifti(tmp_path / "CBF.nii", np.ones((8, 8, 2)))
    label = quirk_nifti(tmp_path / "OT.nii", np.zeros((8, 8, 2), np.uint8))
    profile = load_profile("isles2018").with_channels(["CBF"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pre = bundle_chain(profile.channels, orientation="LPS")
        data = pre({"case_id": "c", "image": [cbf], "label": label})
        data["pred"] = data["label"].clone()
        inverted = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert inverted.shape[1:] == (8, 8, 2)
    np.testing.assert_allclose(inverted.affine.numpy(), np.diag([0.9, 0.9, 5.0, 1.0]), atol=1e-6)


def test_a_quirk_header_beside_sound_ones_is_compared_by_shape_and_spacing(tmp_path):
    sound = write_nifti(tmp_path / "CBF.nii", np.ones((8, 8, 2)), np.diag([-0.9, -0.9, 5.0, 1.0]))
    quirky = quirk_nifti(tmp_path / "MTT.nii", np.ones((8, 8, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = LoadModalitiesd("image", channels=["CBF", "MTT"], label_key=None)({"case_id": "c", "image": [sound, quirky]})
        assert out["image"].shape == (2, 8, 8, 2)
        wrong_spacing = quirk_nifti(tmp_path / "Tmax.nii", np.ones((8, 8, 2)), spacing=(1.0, 1.0, 5.0))
        with pytest.raises(GeometryError, match="spacing"):
            check_case_geometry("c", [("CBF", sound), ("Tmax", wrong_spacing)])


def write_dicom_series(folder, volume_zyx, spacing=(0.8, 0.8, 5.0), origin=(10.0, 20.0, 30.0)):
    """Write a volume as one DICOM file per slice, with the position tags a series reader needs."""
    folder.mkdir()
    image = sitk.GetImageFromArray(volume_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume_zyx.shape[0]):
        slice_ = image[:, :, z]
        slice_.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.42")
        slice_.SetMetaData("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, z))))
        slice_.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        slice_.SetMetaData("0020|0013", str(z))
        writer.SetFileName(str(folder / f"slice{z}.dcm"))
        writer.Execute(slice_)
    return str(folder)


def test_a_dicom_series_folder_loads_with_its_slice_spacing(tmp_path):
    volume = np.arange(3 * 5 * 4, dtype=np.int16).reshape(3, 5, 4)
    folder = write_dicom_series(tmp_path / "ct", volume)
    geometry = read_geometry(folder)
    assert geometry.shape == (4, 5, 3)
    assert np.allclose(geometry.spacing, (0.8, 0.8, 5.0))
    out = LoadModalitiesd("image", channels=["CT"], label_key=None)({"image": [folder]})["image"]
    np.testing.assert_array_equal(out[0].numpy(), np.transpose(volume, (2, 1, 0)))
    np.testing.assert_allclose(out.affine.numpy(), geometry.affine)


def test_spacing_from_the_plans_keeps_a_zero_axis_and_trusts_the_quirk_pixdim(tmp_path):
    # pixdim (0.9, 0.9, 5) in the header, identity srow: the reader's pixdim spacing is what Spacingd resamples
    rng = np.random.default_rng(0)
    cbf = quirk_nifti(tmp_path / "CBF.nii", rng.random((16, 12, 2)) + 1)
    label = np.zeros((16, 12, 2), np.uint8)
    label[4:10, 3:9, 1] = 1
    label = quirk_nifti(tmp_path / "OT.nii", label)
    profile = load_profile("isles2018").with_channels(["CBF"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pre = bundle_chain(profile.channels, orientation="RAS", pixdim=(1.8, 1.8, 0.0))
        data = pre({"case_id": "c", "image": [cbf], "label": label})
        assert data["image"].shape[1:] == (8, 6, 2)  # in-plane 0.9 -> 1.8 mm, the 2 slices kept
        np.testing.assert_allclose(data["image"].pixdim.numpy(), (1.8, 1.8, 5.0), atol=1e-6)
        assert set(data["label"].unique().tolist()) == {0.0, 1.0}
        data["pred"] = data["label"].clone()
        inverted = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert inverted.shape[1:] == (16, 12, 2)
    np.testing.assert_allclose(inverted.affine.numpy(), np.diag([0.9, 0.9, 5.0, 1.0]), atol=1e-6)


def two_lesions(tmp_path, gap=3):
    """A label NIfTI (1 mm grid, 2 slices) with two lesions on slice 0, x in [4, 14) and [14 + gap, 30)."""
    label = np.zeros((40, 30, 2), np.uint8)
    label[4:14, 5:25, 0] = 1
    label[14 + gap:30, 5:25, 0] = 1
    return write_nifti(tmp_path / "OT.nii.gz", label, np.diag([1.0, 1.0, 1.0, 1.0]))


def load_label(path):
    return LoadImaged("label", reader=image_readers(), image_only=True, ensure_channel_first=True)({"label": path})


def test_border_weight_peaks_in_the_gap_between_two_lesions(tmp_path):
    data = BorderWeightd("label", w0=10.0, sigma=5.0)(load_label(two_lesions(tmp_path, gap=3)))
    weight, label = data["weight"], data["label"]
    assert weight.shape == label.shape and weight.dtype == torch.float32
    n_fg = float(label.sum())
    w_bg, w_fg = label.numel() / (2 * (label.numel() - n_fg)), label.numel() / (2 * n_fg)
    # the middle of the gap (x = 15 between x = 13 and x = 17): d1 = d2 = 2 voxels -> w0 * exp(-16 / 50) on top of w_c
    assert float(weight[0, 15, 15, 0]) == pytest.approx(w_bg + 10 * np.exp(-16 / 50), rel=1e-5)
    assert float(weight[0, 15, 15, 0]) > 5 * float(weight[0, 37, 15, 0])  # far background
    assert float(weight[0, 37, 15, 0]) == pytest.approx(w_bg + 10 * np.exp(-(8 + 24) ** 2 / 50), rel=1e-4)
    assert float(weight[0, 8, 15, 0]) == pytest.approx(w_fg, rel=1e-5)  # inside a lesion: class weight only
    # the slice without lesions: background class weight only (no component there)
    assert torch.allclose(weight[0, :, :, 1], torch.full_like(weight[0, :, :, 1], w_bg))


def test_a_single_lesion_has_no_gap_peak(tmp_path):
    label = np.zeros((40, 30, 2), np.uint8)
    label[10:20, 5:25, 0] = 1
    path = write_nifti(tmp_path / "OT.nii.gz", label, np.eye(4))
    data = BorderWeightd("label")(load_label(path))
    assert len(torch.unique(data["weight"])) == 2  # w_c only: one value per class
    assert float((data["weight"] * (data["label"] == 0)).max()) < 1.0


def test_border_weight_is_in_plane_by_default_and_3d_on_request():
    # one lesion per slice, overlapping in x-y: separate in-plane, one 26-connected component in 3D,
    # and two 3D components when the second one moves away in-plane
    label = torch.zeros(1, 30, 30, 2)
    label[0, 5:12, 5:25, 0] = 1
    label[0, 16:25, 5:25, 1] = 1
    in_plane = border_weight_map(label, class_weights=None)
    assert torch.allclose(torch.as_tensor(in_plane), torch.ones_like(label))  # no gap within any slice
    in_3d = border_weight_map(label, class_weights=None, in_plane=False)
    assert float(in_3d.max()) > 5.0  # two 3D components with a gap between them
    with pytest.raises(ValueError):
        border_weight_map(torch.zeros(2, 8, 8, 2))
    with pytest.raises(ValueError):
        BorderWeightd("label", sigma=0.0)


def test_an_empty_label_gets_unit_weights():
    weight = border_weight_map(np.zeros((1, 16, 16, 2)))
    assert np.array_equal(weight, np.ones((1, 16, 16, 2), np.float32))
