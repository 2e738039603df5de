"""A case is never mirrored: the stacked image and its label always carry the reference modality's geometry,
whichever channel (or the label) has the pixdim/sform header quirk, in training and in prediction.

The phantom is left-right asymmetric: the lesion (high Tmax, low CBF) lies at low voxel x only, on a grid whose
x axis points to the left (a scanner export's usual orientation), so any flip of one file against another moves
the lesion to the other side.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from pipeline.data.datalist import load_datalist
from pipeline.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "isles_unetplusplus"
PROFILE = ROOT / "configs" / "datasets" / "isles2018.yaml"
SHAPE = (32, 24, 2)
SPACING = (0.9, 0.9, 5.0)
AFFINE = np.array([[-0.9, 0, 0, 14.0], [0, 0.9, 0, -10.0], [0, 0, 5.0, -5.0], [0, 0, 0, 1]])
MODALITIES = ("CT", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "OT")
LESION = (slice(3, 11), slice(8, 16), slice(None))  # low voxel x only: one side of the brain


def phantom(modality: str) -> np.ndarray:
    """Maps with contrast everywhere (no constant channel) and the lesion at LESION."""
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in SHAPE], indexing="ij")
    lesion = np.zeros(SHAPE, bool)
    lesion[LESION] = True
    base = 1.0 + 0.01 * (x + y + z)
    if modality == "OT":
        return lesion.astype(np.uint8)
    values = {"CT": (35.0, 30.0), "CT_CBF": (50.0, 8.0), "CT_CBV": (4.0, 1.5), "CT_MTT": (5.0, 9.0), "CT_Tmax": (1.0, 12.0)}
    healthy, core = values[modality]
    return np.where(lesion, core, healthy) * base


def write(path: Path, data: np.ndarray, quirk: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if quirk:  # the ISLES quirk: true spacing in pixdim, sform_code=2 with an identity srow, no qform
        img = nib.Nifti1Image(data, np.eye(4))
        img.set_sform(np.eye(4), code=2)
        img.set_qform(np.eye(4), code=0)
        img.header.set_zooms(SPACING)
    else:
        img = nib.Nifti1Image(data, AFFINE)
        img.set_qform(AFFINE, code=1)
        img.set_sform(AFFINE, code=1)
    nib.save(img, str(path))


def write_case(root: Path, split: str, case: int, quirk_on: str | None) -> None:
    folder = root / split / f"case_{case}"
    for number, modality in enumerate(MODALITIES):
        if split == "TESTING" and modality == "OT":
            continue
        name = f"SMIR.Brain.XX.O.{modality}.{case * 100 + number}"
        write(folder / name / f"{name}.nii", phantom(modality), quirk=modality == quirk_on)


def prepared(tmp_path: Path, quirk_on: str | None) -> Path:
    root = tmp_path / "data"
    for case in (1, 2):
        write_case(root, "TRAINING", case, quirk_on)
    write_case(root, "TESTING", 3, quirk_on)
    datalist = tmp_path / "datalist.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["prepare", "--root", str(root), "--out", str(datalist), "--folds", "2"]) == 0
    return datalist


def lesion_side(volume: np.ndarray) -> np.ndarray:
    return np.asarray(volume) > 0.5


@pytest.mark.parametrize("quirk_on", [None, "CT", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "OT"])
def test_training_image_and_label_stay_aligned_and_unmirrored(tmp_path, quirk_on):
    datalist = prepared(tmp_path, quirk_on)
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(PROFILE)])
    parser.update({"bundle_root": str(BUNDLE), "datalist": str(datalist), "patch_size": [16, 16, 2]})
    chain = parser.get_parsed_content("validate#preprocessing")
    record = load_datalist(datalist, "training")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = chain(record)
    image, label = out["image"], out["label"]
    tmax = image[3].numpy()
    # In RAS (x flipped from the files' voxel x), the lesion lies at high x for every variant.
    expected = lesion_side(np.flip(phantom("OT"), 0))
    if quirk_on == "CT":  # the reference's own repaired (RAS-like) geometry is used: no reorientation
        expected = lesion_side(phantom("OT"))
    assert np.array_equal(label[0].numpy() > 0.5, expected)
    assert np.array_equal(tmax > 0.5, expected)  # the image's lesion sits under the label's


@pytest.mark.parametrize("quirk_on", [None, "CT", "CT_CBF", "CT_MTT", "CT_Tmax"])
def test_predicted_mask_lies_on_the_lesion_side(tmp_path, quirk_on):
    datalist = prepared(tmp_path, quirk_on)
    tmax_channel = json.loads(datalist.read_text())["channels"].index("Tmax")

    class TmaxThreshold(torch.nn.Module):
        """A 'network' that calls lesion where the normalised Tmax is high, in whatever orientation it is fed."""

        def forward(self, x):
            seen.append(x[0, tmax_channel].detach().numpy() > 0.5)
            logit = 20.0 * (x[:, tmax_channel : tmax_channel + 1] - 0.5)
            return torch.cat([-logit, logit], dim=1)

    seen: list[np.ndarray] = []
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": {}}, checkpoint)
    output = tmp_path / "predictions"
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "inference.json"), str(PROFILE)])
    parser.update({
        "bundle_root": str(BUNDLE), "datalist": str(datalist), "output_dir": str(output), "ckpt_path": str(checkpoint),
        "device": "$torch.device('cpu')", "amp": False, "patch_size": [32, 24, 2], "strides": [[2, 2, 1], [2, 2, 1]],
        "kernel_sizes": [[3, 3, 1], [3, 3, 1], [3, 3, 1]], "features": [4, 4, 4],
        "runtime": "torch",  # the probe records what its forward sees: it must run, not an export of it
    })
    parser["network_def"] = TmaxThreshold()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parser.get_parsed_content("evaluator").run()
    # the network sees the case in the orientation it was trained in (RAS, as the training test checks)
    expected_input = phantom("OT") > 0 if quirk_on == "CT" else np.flip(phantom("OT") > 0, 0)
    full = [window for window in seen if window.shape == SHAPE]
    assert full and all(np.array_equal(window, expected_input) for window in full)
    written = nib.load(str(output / "case_3.nii.gz"))
    assert np.array_equal(np.asarray(written.dataobj) > 0, phantom("OT") > 0)
    reference = next((tmp_path / "data" / "TESTING" / "case_3").glob("SMIR.Brain.XX.O.CT.*/*.nii"))
    assert np.allclose(written.affine, nib.load(str(reference)).affine)
