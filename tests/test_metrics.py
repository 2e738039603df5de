"""Per-case metrics on hand-computed masks: Dice, HD95, ASSD, volumes in mL, lesion-wise F1 and counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice

from pipeline.metrics import (
    METRIC_NAMES,
    absolute_volume_difference_ml,
    average_surface_distance_mm,
    case_metrics,
    dice_score,
    hausdorff95_mm,
    label_lesions,
    lesion_count_difference,
    lesion_counts,
    lesion_f1,
    precision_recall,
    volume_ml,
)


def empty(shape=(12, 12, 6)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def test_dice_is_one_when_both_masks_are_empty_and_zero_when_one_is():
    mask = empty()
    mask[2:4, 2:4, 1] = 1
    assert dice_score(empty(), empty()) == 1.0
    assert dice_score(mask, empty()) == 0.0
    assert dice_score(empty(), mask) == 0.0


def test_dice_agrees_with_monai_compute_dice():
    rng = np.random.default_rng(0)
    pred, truth = rng.random((16, 16, 4)) > 0.6, rng.random((16, 16, 4)) > 0.5
    expected = compute_dice(torch.from_numpy(pred)[None, None].float(), torch.from_numpy(truth)[None, None].float(),
                            include_background=True, ignore_empty=False).item()
    assert dice_score(pred, truth) == pytest.approx(expected, abs=1e-6)


def test_hd95_and_assd_of_a_plate_shifted_by_three_anisotropic_voxels():
    pred, truth = empty((10, 8, 8)), empty((10, 8, 8))
    pred[2, 1:7, 1:7] = 1
    truth[5, 1:7, 1:7] = 1
    # every border voxel is 3 voxels of 2 mm from the other plate
    assert hausdorff95_mm(pred, truth, (2.0, 0.5, 0.5)) == pytest.approx(6.0)
    assert average_surface_distance_mm(pred, truth, (2.0, 0.5, 0.5)) == pytest.approx(6.0)


def test_hd95_and_assd_of_a_cube_shifted_by_two_voxels():
    pred, truth = empty((12, 12, 12)), empty((12, 12, 12))
    pred[2:6, 2:6, 2:6] = 1
    truth[4:8, 2:6, 2:6] = 1
    # 56 border voxels per cube: 16 at 2 voxels, 16 at 1 voxel, 24 on the other cube's border.
    assert hausdorff95_mm(pred, truth, 1.0) == pytest.approx(2.0)
    assert average_surface_distance_mm(pred, truth, 1.0) == pytest.approx(32 / 56 + 16 / 56, abs=1e-6)
    assert hausdorff95_mm(pred, truth, (2.0, 2.0, 2.0)) == pytest.approx(4.0)


def test_surface_distances_are_nan_when_either_mask_is_empty():
    mask = empty()
    mask[3:6, 3:6, 2:4] = 1
    for a, b in ((mask, empty()), (empty(), mask), (empty(), empty())):
        assert math.isnan(hausdorff95_mm(a, b, (1, 1, 1)))
        assert math.isnan(average_surface_distance_mm(a, b, (1, 1, 1)))


def test_volume_in_ml_with_anisotropic_spacing():
    pred, truth = empty(), empty()
    pred[0:5, 0:2, 0] = 1  # 10 voxels
    truth[0:5, 0:5, 1] = 1  # 25 voxels
    spacing = (0.5, 2.0, 4.0)  # 4 mm^3 per voxel
    assert volume_ml(pred, spacing) == pytest.approx(0.040)
    assert volume_ml(truth, spacing) == pytest.approx(0.100)
    assert absolute_volume_difference_ml(pred, truth, spacing) == pytest.approx(0.060)


def test_spacing_must_fit_the_mask():
    with pytest.raises(ValueError, match="spacing"):
        volume_ml(empty(), (1.0, 1.0))


def three_lesions() -> np.ndarray:
    truth = empty((20, 20, 4))
    truth[1:4, 1:4, 1] = 1
    truth[8:11, 8:11, 1] = 1
    truth[15:18, 15:18, 2] = 1
    return truth


def test_lesion_f1_with_two_of_three_lesions_found_and_one_spurious():
    truth = three_lesions()
    pred = empty((20, 20, 4))
    pred[2, 2, 1] = 1        # touches lesion 1
    pred[9:13, 9:13, 1] = 1  # overlaps lesion 2 and spills over
    pred[1:3, 17:19, 3] = 1  # no truth voxel: spurious
    counts = lesion_counts(pred, truth)
    assert (counts.tp, counts.fn, counts.fp) == (2, 1, 1)
    assert counts.f1 == pytest.approx(2 / (2 + (1 + 1) / 2))
    assert lesion_f1(pred, truth) == pytest.approx(2 / 3)
    assert lesion_count_difference(pred, truth) == 0


def test_one_predicted_lesion_bridging_two_truth_lesions():
    truth = empty((20, 20, 4))
    truth[1:4, 1:4, 1] = 1
    truth[6:9, 1:4, 1] = 1
    pred = empty((20, 20, 4))
    pred[2:8, 2, 1] = 1
    counts = lesion_counts(pred, truth)
    assert (counts.tp, counts.fn, counts.fp) == (2, 0, 0)
    assert counts.f1 == 1.0
    assert counts.count_difference == 1


def test_lesions_are_26_connected():
    mask = empty((6, 6, 6))
    mask[1, 1, 1] = 1
    mask[2, 2, 2] = 1  # touches the first voxel at a corner only
    assert label_lesions(mask)[1] == 1


def test_lesion_f1_and_count_with_empty_masks():
    truth = three_lesions()
    nothing = empty((20, 20, 4))
    assert lesion_f1(nothing, nothing) == 1.0
    assert lesion_count_difference(nothing, nothing) == 0
    assert lesion_f1(nothing, truth) == 0.0
    assert lesion_count_difference(nothing, truth) == 3
    assert lesion_f1(truth, nothing) == 0.0


def test_precision_and_recall():
    truth, pred = empty(), empty()
    truth[0:4, 0:2, 0] = 1           # 8 voxels
    pred[0:2, 0:2, 0] = 1            # 4 voxels, all inside
    pred[8, 8, 3] = 1                # 1 outside
    precision, recall = precision_recall(pred, truth)
    assert precision == pytest.approx(4 / 5) and recall == pytest.approx(4 / 8)
    assert precision_recall(empty(), empty()) == (1.0, 1.0)
    precision, recall = precision_recall(empty(), truth)
    assert math.isnan(precision) and recall == 0.0


def test_case_metrics_gives_every_metric_in_order():
    truth = three_lesions()
    values = case_metrics(truth, truth, (1.0, 1.0, 2.0))
    assert list(values) == list(METRIC_NAMES)
    assert values["dice"] == 1.0 and values["hd95_mm"] == 0.0 and values["lesion_f1"] == 1.0
    assert values["truth_volume_ml"] == pytest.approx(27 * 2 / 1000)


def test_masks_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(empty((4, 4, 4)), empty((4, 4, 5)))
