"""The clinical threshold rule and the Dice score, on small hand-made examples."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pipeline.baseline import threshold_rule, threshold_rule_case
from pipeline.metrics import dice_score

# Three normally perfused voxels (CBF 50, Tmax 1 s), a hypoperfused voxel with CBF 10 (20% of 50),
# a hypoperfused voxel with CBF 20 (40%), and a background voxel.
CBF = np.array([[[50.0, 50.0, 50.0, 10.0, 20.0, 0.0]]])
TMAX = np.array([[[1.0, 1.0, 1.0, 8.0, 8.0, 0.0]]])
EXPECTED_CORE = np.array([[[0, 0, 0, 1, 0, 0]]], dtype=np.uint8)


def test_threshold_rule_marks_low_flow_late_tissue():
    core = threshold_rule(CBF, TMAX)
    assert core.dtype == np.uint8
    assert np.array_equal(core, EXPECTED_CORE)


def test_threshold_rule_is_independent_of_cbf_units():
    assert np.array_equal(threshold_rule((CBF * 25).astype(np.uint16), TMAX), EXPECTED_CORE)


def test_threshold_rule_needs_both_low_flow_and_late_tmax():
    cbf = np.array([50.0, 50.0, 10.0, 10.0])
    tmax = np.array([1.0, 8.0, 1.0, 8.0])
    # Reference = mean CBF where Tmax <= 6 s: (50 + 10) / 2 = 30; 30% of it = 9.
    assert np.array_equal(threshold_rule(cbf, tmax), [0, 0, 0, 0])
    assert np.array_equal(threshold_rule(cbf, tmax, rcbf_threshold=0.4), [0, 0, 0, 1])


def test_threshold_rule_uses_the_given_brain_mask():
    mask = np.array([[[1, 0, 0, 1, 1, 0]]])
    cbf = CBF.copy()
    cbf[0, 0, 1:3] = 5.0  # outside the mask: must not lower the reference
    assert np.array_equal(threshold_rule(cbf, TMAX, brain_mask=mask), EXPECTED_CORE)


def test_threshold_rule_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        threshold_rule(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="mask"):
        threshold_rule(np.ones((2, 2)), np.ones((2, 2)), brain_mask=np.ones(4))


def test_threshold_rule_rejects_maps_without_normal_tissue():
    with pytest.raises(ValueError, match="normalise"):
        threshold_rule(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="normalise"):
        threshold_rule(np.full((3, 3), 10.0), np.full((3, 3), 9.0))


def test_threshold_rule_case_reads_nifti_files(tmp_path):
    affine = np.diag([-0.9, -0.9, 5.0, 1.0])
    cbf_path, tmax_path = tmp_path / "cbf.nii", tmp_path / "tmax.nii"
    nib.save(nib.Nifti1Image(CBF.astype(np.uint16), affine), str(cbf_path))
    nib.save(nib.Nifti1Image(TMAX, affine), str(tmax_path))
    assert np.array_equal(threshold_rule_case(cbf_path, tmax_path), EXPECTED_CORE)


def test_threshold_rule_case_names_both_files_on_shape_mismatch(tmp_path):
    affine = np.eye(4)
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.float32), affine), str(tmp_path / "a.nii"))
    nib.save(nib.Nifti1Image(np.ones((2, 2, 3), np.float32), affine), str(tmp_path / "b.nii"))
    with pytest.raises(ValueError, match=r"a\.nii.*b\.nii"):
        threshold_rule_case(tmp_path / "a.nii", tmp_path / "b.nii")


@pytest.mark.parametrize(
    "pred, truth, expected",
    [
        ([1, 1, 0, 0], [1, 0, 1, 0], 0.5),  # 2 * 1 / (2 + 2)
        ([1, 1, 1, 0], [1, 0, 0, 0], 0.5),  # 2 * 1 / (3 + 1)
        ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),
        ([1, 0, 0, 0], [0, 1, 0, 0], 0.0),
        ([0, 0, 0, 0], [0, 1, 1, 0], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),  # both empty: ISLES 2022 convention
        ([2, 0, 7, 0], [1, 0, 1, 1], 0.8),  # non-zero is foreground: 2 * 2 / (2 + 3)
    ],
)
def test_dice_score_hand_computed(pred, truth, expected):
    assert dice_score(np.array(pred), np.array(truth)) == pytest.approx(expected)


def test_dice_score_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        dice_score(np.zeros((2, 2)), np.zeros(4))
