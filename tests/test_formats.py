"""The on-disk naming conventions: each name written reads back, and equals the name the pipeline writes today."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.errors import CaseError, LayoutError
from pipeline.formats import (
    GROUND_TRUTH_COLUMNS,
    GROUND_TRUTH_CSV,
    GROUND_TRUTH_FOLDER,
    ISLES2018_SPLIT_FOLDERS,
    SYNTHETIC_TABLE_CSV,
    case_file_name,
    ground_truth_row,
    isles2018_case_folder,
    isles2018_folder_name,
    isles2018_folder_pattern,
    isles2018_image_name,
    isles2018_submission_name,
    isles2022_mask_name,
    parse_case_file_name,
    parse_ground_truth_row,
    parse_isles2018_case_folder,
    parse_isles2018_folder_name,
    parse_isles2018_split_folder,
    parse_isles2018_submission_name,
    parse_isles2022_name,
    read_ground_truth_rows,
)


@pytest.fixture(scope="module")
def prediction_filename():
    from pipeline.predict import prediction_filename

    return prediction_filename


@pytest.mark.parametrize("case_id", ["case_1", "case_10", "sub-strokecase0001_ses-0001", "Patient 7"])
@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".mha"])
def test_the_plain_name_round_trips_and_is_predicts_name(prediction_filename, case_id, extension):
    name = case_file_name(case_id, extension)
    assert name == prediction_filename("nifti", case_id, extension=extension)
    assert parse_case_file_name(name) == case_id
    assert parse_case_file_name(Path("some/folder") / name) == case_id


def test_a_name_without_an_image_suffix_reads_as_itself():
    assert parse_case_file_name("notes.txt") == "notes.txt"
    assert parse_case_file_name("CASE_2.NII.GZ") == "CASE_2"


@pytest.mark.parametrize("case_id, smir_id, team", [
    ("case_1", "345563", "team"), ("case_12", "128990", "my-team_2"), ("case_3", "7", "T"),
])
def test_the_isles2018_submission_name_round_trips_and_is_predicts_name(prediction_filename, case_id, smir_id, team):
    name = isles2018_submission_name(team, smir_id, case_id)
    assert name == f"SMIR.{team}.{smir_id}.nii"
    assert name == prediction_filename("isles2018", case_id, "ref/CT_MTT.nii", smir_id, team, ".nii")
    assert parse_isles2018_submission_name(name) == smir_id
    assert parse_isles2018_submission_name(Path("out") / name.upper()) == smir_id


@pytest.mark.parametrize("name", ["case_1.nii.gz", "SMIR.team.nii", "SMIR.team.12a.nii", "sub-1_msk.nii.gz"])
def test_other_names_are_not_isles2018_submissions(name):
    assert parse_isles2018_submission_name(name) is None


@pytest.mark.parametrize("team, smir_id", [
    ("bad.team", "345563"), ("", "345563"), ("team", None), ("team", ""), ("team", "34.5"), ("team", "a/b"),
])
def test_a_bad_isles2018_name_is_refused_as_predict_refuses_it(prediction_filename, team, smir_id):
    with pytest.raises((ValueError, CaseError)) as expected:
        prediction_filename("isles2018", "case_1", "ref.nii", smir_id, team)
    with pytest.raises(type(expected.value)) as got:
        isles2018_submission_name(team, smir_id, "case_1", "ref.nii")
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("reference, case_id, subject, session", [
    ("raw/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz", "sub-strokecase0001",
     "sub-strokecase0001", "ses-0001"),
    ("sub-r001s001_ses-1_DWI.nii", "sub-r001s001_ses-1", "sub-r001s001", "ses-1"),
    ("sub-007_dwi.mha", "sub-007", "sub-007", None),
    (None, "sub-42", "sub-42", None),
])
@pytest.mark.parametrize("extension", [".nii.gz", ".nii"])
def test_the_isles2022_mask_name_round_trips_and_is_predicts_name(prediction_filename, reference, case_id, subject,
                                                                   session, extension):
    name = isles2022_mask_name(case_id, reference, extension)
    assert name == prediction_filename("isles2022", case_id, reference, None, "team", extension)
    assert parse_case_file_name(name).lower().endswith("_msk")
    assert parse_isles2022_name(name) == (subject, session)


def test_other_names_are_not_isles2022_names():
    assert parse_isles2022_name("case_1.nii.gz") is None
    assert parse_isles2022_name("SMIR.team.12.nii") is None


@pytest.mark.parametrize("modality, smir_id", [("CT", 100001), ("CT_Tmax", "345563"), ("OT", 822015)])
def test_the_isles2018_folder_name_round_trips(modality, smir_id):
    from pipeline.data.isles2018 import parse_smir_folder

    folder = isles2018_folder_name(modality, smir_id)
    assert folder == f"SMIR.Brain.XX.O.{modality}.{smir_id}"
    assert isles2018_image_name(modality, smir_id) == f"{folder}.nii"
    assert parse_isles2018_folder_name(folder) == (modality, str(smir_id)) == parse_smir_folder(folder)
    assert Path(folder).match(isles2018_folder_pattern(modality, str(smir_id)))
    assert Path(folder).match(isles2018_folder_pattern(modality))
    for name in ("SMIR.Brain.XX.O.CT_Tmax", "SMIR..12", "case_1", "SMIR.Brain.XX.O.CT.12a"):
        assert parse_isles2018_folder_name(name) is None is parse_smir_folder(name)


def test_the_isles2018_split_and_case_folders_round_trip():
    for split, folder in ISLES2018_SPLIT_FOLDERS.items():
        assert parse_isles2018_split_folder(folder) == split == parse_isles2018_split_folder(folder.lower())
    assert parse_isles2018_split_folder("TESTING_GROUND_TRUTH") is None
    for number in (1, 9, 10, 123):
        assert parse_isles2018_case_folder(isles2018_case_folder(number)) == number
        assert parse_isles2018_case_folder(isles2018_case_folder(number).upper()) == number
    for name in ("case_", "case_1a", "patient_1", "SMIR.Brain.XX.O.CT.1"):
        assert parse_isles2018_case_folder(name) is None


def test_the_ground_truth_table_round_trips(tmp_path):
    rows = [ground_truth_row("case_1", 822015, 822013, "Test_1"), ground_truth_row("case_2", "7", "8", "Test_1")]
    assert list(rows[0]) == list(GROUND_TRUTH_COLUMNS)
    table = tmp_path / GROUND_TRUTH_CSV
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(GROUND_TRUTH_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    read = read_ground_truth_rows(table)
    assert [parse_ground_truth_row(r) for r in read] == [("case_1", "822015", "822013"), ("case_2", "7", "8")]
    table.write_text("case,ot_id\ncase_1,1\n")
    with pytest.raises(LayoutError, match="expected a case_id column"):
        read_ground_truth_rows(table)


def test_parse_ground_truth_row_strips_and_defaults():
    assert parse_ground_truth_row({"case_id": " case_1 ", "ot_id": None}) == ("case_1", "", "")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from pipeline.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), cases=1, test_cases=1, seed=0)


def test_the_synthetic_dataset_is_written_in_these_conventions(synthetic):
    root = synthetic.root
    assert synthetic.table_csv == root / SYNTHETIC_TABLE_CSV
    assert synthetic.ground_truth_csv == root / GROUND_TRUTH_FOLDER / GROUND_TRUTH_CSV
    rows = read_ground_truth_rows(synthetic.ground_truth_csv)
    assert rows and list(rows[0]) == list(GROUND_TRUTH_COLUMNS)
    table = {c["case_id"]: c for c in synthetic.cases if c["split"] == "testing"}
    for row in rows:
        case_id, ot_id, mtt_id = parse_ground_truth_row(row)
        assert row == {k: str(v) for k, v in ground_truth_row(case_id, ot_id, mtt_id, row["patient_id"]).items()}
        assert (ot_id, mtt_id) == (str(table[case_id]["smir_OT"]), str(table[case_id]["smir_CT_MTT"]))
        folders = list((root / GROUND_TRUTH_FOLDER / case_id).glob(isles2018_folder_pattern("OT", ot_id)))
        assert [f.name for f in folders] == [isles2018_folder_name("OT", ot_id)]
        assert (folders[0] / isles2018_image_name("OT", ot_id)).is_file()
        mtt = root / "TESTING" / case_id / isles2018_folder_name("CT_MTT", mtt_id)
        assert (mtt / isles2018_image_name("CT_MTT", mtt_id)).is_file()
    numbers = {split: 0 for split in ISLES2018_SPLIT_FOLDERS}
    for case in synthetic.cases:
        numbers[case["split"]] += 1
        assert case["case_id"] == isles2018_case_folder(numbers[case["split"]])
        folder = root / ISLES2018_SPLIT_FOLDERS[case["split"]] / case["case_id"]
        assert parse_isles2018_split_folder(folder.parent.name) == case["split"]
        for modality in ("CT", "CT_CBF", "CT_Tmax"):
            smir_id = case[f"smir_{modality}"]
            image = folder / isles2018_folder_name(modality, smir_id) / isles2018_image_name(modality, smir_id)
            assert image.is_file()
