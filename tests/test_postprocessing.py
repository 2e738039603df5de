"""Post-processing fitted on the validation folds: the mask rule, the fit, the file, and predict using it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.postprocessing import DEFAULT_POSTPROCESSING, LesionPostprocessing, lesion_mask
from pipeline.postprocessing.fitting import ValidationCase, fit_postprocessing
from pipeline.postprocessing.lesion_mask import voxel_volume_ml
from pipeline.postprocessing.store import POSTPROCESSING_NAME, postprocessing_for, read_postprocessing, write_postprocessing


def _cube(shape, corner, size, value):
    out = np.zeros(shape, np.float32)
    x, y, z = corner
    out[x:x + size, y:y + size, z:z + size] = value
    return out


def test_the_default_mask_is_the_argmax_of_two_classes():
    rng = np.random.default_rng(0)
    foreground = rng.random((16, 16, 4)).astype(np.float32)
    assert np.array_equal(lesion_mask(foreground, 1.0), (foreground > 0.5).astype(np.uint8))
    assert lesion_mask(foreground, 1.0).dtype == np.uint8


def test_components_below_the_volume_are_removed_and_larger_ones_kept_whole():
    foreground = _cube((20, 20, 6), (1, 1, 1), 2, 0.9) + _cube((20, 20, 6), (10, 10, 1), 4, 0.8)  # 8 and 64 voxels
    mask = lesion_mask(foreground, 0.01, LesionPostprocessing(0.5, 0.1))  # 0.08 mL and 0.64 mL components
    assert mask.sum() == 64 and mask[10:14, 10:14, 1:5].all()
    assert lesion_mask(foreground, 0.01, LesionPostprocessing(0.5, 0.05)).sum() == 72
    # diagonal neighbours are one component (26-connectivity), as MONAI's connected-component transforms count them
    diagonal = np.zeros((4, 4, 4), np.float32)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 1.0
    assert lesion_mask(diagonal, 1.0, LesionPostprocessing(0.5, 1.5)).sum() == 2


def test_invalid_settings_and_grids_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        LesionPostprocessing(1.0, 0.0)
    with pytest.raises(ValueError, match="component"):
        LesionPostprocessing(0.5, -1.0)
    with pytest.raises(ValueError, match="singular"):
        voxel_volume_ml(np.zeros((4, 4)))
    assert voxel_volume_ml(np.diag([2.0, 2.0, 5.0, 1.0])) == pytest.approx(0.02)


def _case(i, truth_size, spurious, over):
    shape = (24, 24, 4)
    label = _cube(shape, (4, 4, 0), truth_size, 1.0) > 0
    foreground = np.where(label, 0.9, 0.05).astype(np.float32)
    foreground += _cube(shape, (3, 3, 0), truth_size + 2, over) * ~label  # a rim of lower confidence
    foreground += _cube(shape, (18, 18, 1), 1, 0.95)  # one spurious voxel far away
    return ValidationCase(f"case_{i}", np.clip(foreground, 0, 1), label, 0.5 if spurious else 0.001)


def test_the_fit_finds_the_threshold_and_component_size_that_the_validation_cases_support():
    cases = [_case(i, 4, True, 0.6) for i in range(3)]  # rims at 0.65 over-segment; spurious voxels of 0.5 mL
    fitted = fit_postprocessing(cases)
    assert fitted.setting.threshold > 0.65 and fitted.setting.min_component_ml > 0.5
    assert fitted.chosen_dice == pytest.approx(1.0) and fitted.default_dice < 0.8
    assert len(fitted.table) == 11 * 8 and fitted.cases == 3


def test_the_default_stays_unless_a_setting_beats_it():
    label = _cube((12, 12, 2), (2, 2, 0), 4, 1.0) > 0
    cases = [ValidationCase("c", np.where(label, 0.9, 0.1).astype(np.float32), label, 0.01)]
    fitted = fit_postprocessing(cases)
    assert fitted.setting == DEFAULT_POSTPROCESSING and fitted.chosen_dice == fitted.default_dice == 1.0
    with pytest.raises(ValueError, match="no validation cases"):
        fit_postprocessing([])
    with pytest.raises(ValueError, match="shape"):
        fit_postprocessing([ValidationCase("c", np.zeros((2, 2, 2)), np.zeros((2, 2, 3), bool), 1.0)])


def test_the_file_round_trips_and_is_found_beside_the_model(tmp_path):
    fitted = fit_postprocessing([_case(0, 4, True, 0.6)])
    path = write_postprocessing(tmp_path, fitted, [0])
    data = json.loads(path.read_text())
    assert data["validation"]["cases"] == 1 and data["validation"]["folds"] == [0] and len(data["tried"]) == 88
    assert read_postprocessing(path) == fitted.setting
    assert postprocessing_for([tmp_path / "missing", tmp_path]) == tmp_path / POSTPROCESSING_NAME
    assert postprocessing_for([tmp_path / "missing"]) is None
    (tmp_path / "bad.json").write_text('{"threshold": 2}')
    with pytest.raises(ValueError, match="postprocess"):
        read_postprocessing(tmp_path / "bad.json")


def test_a_threshold_that_buys_dice_with_a_larger_volume_error_is_not_chosen():
    def case(name, confident, unsure_in_label, unsure_outside):
        foreground = np.zeros(1024, np.float32)
        label = np.zeros(1024, bool)
        foreground[:confident] = 0.9
        label[:confident + unsure_in_label] = True
        foreground[confident:confident + unsure_in_label + unsure_outside] = 0.4
        return ValidationCase(name, foreground.reshape(32, 32, 1), label.reshape(32, 32, 1), 0.01)

    # threshold 0.35 raises the mean Dice (0.48 -> 0.68) but triples the mean volume error
    cases = [case("a", 8, 0, 400), case("b", 8, 56, 0), case("c", 8, 56, 0)]
    fitted = fit_postprocessing(cases)
    lower = next(r for r in fitted.table if r["threshold"] == 0.35 and r["min_component_ml"] == 0.0)
    assert lower["mean_dice"] > fitted.default_dice + 0.1 and lower["mean_avd_ml"] > 2 * fitted.default_avd_ml
    assert fitted.setting == DEFAULT_POSTPROCESSING
