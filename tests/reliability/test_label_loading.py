"""Training and validation labels are 0/1 masks on the image's grid: other values are refused, naming the
values, the case and the file, unless the dataset profile maps them (``label_values``)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pipeline.errors import CaseError
from pipeline.transforms import LoadLabeld, LoadModalitiesd

SHAPE = (10, 8, 2)
AFFINE = np.diag([-0.9, 0.9, 5.0, 1.0])


def write(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data), AFFINE), str(path))
    return str(path)


def loaded(tmp_path, label_data, label_values=None):
    rng = np.random.default_rng(0)
    image = write(tmp_path / "cbf.nii", 10 + rng.random(SHAPE))
    record = {"case_id": "case_7", "image": [image], "label": write(tmp_path / "ot.nii", label_data)}
    record = LoadModalitiesd("image", channels=["CBF"], label_key="label")(record)
    return LoadLabeld("label", label_values=label_values)(record)


@pytest.mark.parametrize("value, dtype", [(2, np.uint8), (255, np.uint8), (0.5, np.float32), (-1, np.int16)])
def test_a_label_that_is_not_0_1_is_refused_with_the_values_the_case_and_the_file(tmp_path, value, dtype):
    label = np.zeros(SHAPE, dtype)
    label[2:5, 2:5, 1] = value
    with pytest.raises(CaseError) as caught:
        loaded(tmp_path, label)
    message = str(caught.value)
    assert "case_7" in message and "ot.nii" in message and f"{value:g}" in message


def test_a_multi_class_label_is_refused(tmp_path):
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 1:3, 0], label[5:7, 5:7, 1] = 1, 2
    with pytest.raises(CaseError, match="0, 1, 2"):
        loaded(tmp_path, label)


def test_a_profile_mapping_turns_255_into_lesion(tmp_path):
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 2:5, 1] = 255
    out = loaded(tmp_path, label, label_values={255: 1})
    assert set(np.unique(out["label"].numpy())) == {0.0, 1.0}
    assert int(out["label"].sum()) == 9


def test_the_label_takes_the_image_geometry(tmp_path):
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 2:5, 1] = 1
    out = loaded(tmp_path, label)
    assert np.allclose(out["label"].affine, out["image"].affine)


def test_a_mask_stored_as_0_65535_with_a_header_slope_reads_as_0_1(tmp_path):
    """As some ISLES 2024 follow-up masks are stored: uint16 0/65535, scl_slope about 1/65535."""
    rng = np.random.default_rng(0)
    image = write(tmp_path / "cbf.nii", 10 + rng.random(SHAPE))
    stored = np.zeros(SHAPE, np.uint16)
    stored[2:5, 2:5, 1] = 65535
    scaled = nib.Nifti1Image(stored, AFFINE)
    scaled.header.set_slope_inter(1.526e-5, 0.0)
    nib.save(scaled, str(tmp_path / "msk.nii.gz"))
    assert not np.isin(np.unique(nib.load(tmp_path / "msk.nii.gz").get_fdata()), (0, 1)).all()
    record = {"case_id": "sub-stroke0158", "image": [image], "label": str(tmp_path / "msk.nii.gz")}
    out = LoadLabeld("label")(LoadModalitiesd("image", channels=["CBF"], label_key="label")(record))
    assert set(np.unique(out["label"].numpy())) == {0.0, 1.0} and int(out["label"].sum()) == 9


def test_a_soft_mask_near_but_not_at_1_is_still_refused(tmp_path):
    label = np.zeros(SHAPE, np.float32)
    label[2:5, 2:5, 1] = 0.98
    with pytest.raises(CaseError, match="0.98"):
        loaded(tmp_path, label)
