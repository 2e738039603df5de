"""Folds, channel selection and the datalist file (MSD style, read by MONAI and read back by `prepare`)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from pipeline.data.datalist import (
    assign_folds,
    build_datalist,
    load_datalist,
    select_channels,
    write_datalist,
)
from pipeline.data.layouts import discover_cases
from pipeline.data.profiles import load_profile
from pipeline.data.records import CaseRecord
from pipeline.errors import MissingModalityError

MAPS = ("CT", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax")


def write_nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.zeros((8, 8, 2), dtype=np.float32), np.eye(4)).to_filename(str(path))
    return path


def write_case(root: Path, case: str, mods=MAPS, split="TRAINING", description: str | None = None,
               first_id: int = 1000) -> Path:
    """Write one ISLES 2018 case; modality folders are created in the order given."""
    case_dir = root / split / case
    for offset, mod in enumerate(list(mods) + (["OT"] if split == "TRAINING" else [])):
        name = f"SMIR.Brain.XX.O.{mod}.{first_id + offset}"
        write_nifti(case_dir / name / f"{name}.nii")
        if mod == "OT" and description:
            (case_dir / name / f"{name}.json").write_text(json.dumps({"description": description}))
    return case_dir


def records_for(n: int, patients: dict[str, str] | None = None) -> list[CaseRecord]:
    """In-memory training records ``case_1..case_n``; ``patients`` maps case id -> patient id."""
    patients = patients or {}
    return [
        CaseRecord(case_id=f"case_{i}", split="training", modalities={}, patient_id=patients.get(f"case_{i}"))
        for i in range(1, n + 1)
    ]


@pytest.fixture
def profile():
    return load_profile("isles2018")


# Folds ----------------------------------------------------------------------------------------------


def test_slabs_of_one_patient_share_a_fold_for_any_seed(tmp_path, profile):
    for i in range(1, 13):
        patient, slab = divmod(i - 1, 2)
        write_case(tmp_path, f"case_{i}", description=f"Train_{patient + 1}_{'AB'[slab]}")
    _, _, records = discover_cases(tmp_path, profile=profile)
    for seed in range(5):
        folds = assign_folds(records, n_folds=3, seed=seed)
        for patient in {r.patient_id for r in records}:
            assert len({folds[r.case_id] for r in records if r.patient_id == patient}) == 1


def test_folds_are_deterministic_for_a_seed_and_independent_of_record_order():
    records = records_for(23)
    assert assign_folds(records, 5, seed=3) == assign_folds(list(reversed(records)), 5, seed=3)
    assert len({tuple(sorted(assign_folds(records, 5, seed=s).items())) for s in range(4)}) > 1


def test_folds_are_balanced():
    records = records_for(23)
    counts = Counter(assign_folds(records, 5, seed=0).values())
    assert sorted(counts) == [0, 1, 2, 3, 4]
    assert max(counts.values()) - min(counts.values()) <= 1


def test_folds_balance_patients_with_two_slabs():
    patients = {f"case_{i}": f"P{(i + 1) // 2}" for i in range(1, 15)}  # 7 patients with 2 slabs
    records = records_for(20, patients)  # plus 6 single-slab cases
    counts = Counter(assign_folds(records, 4, seed=1).values())
    assert max(counts.values()) - min(counts.values()) <= 1


def test_more_folds_than_patients_is_an_error():
    with pytest.raises(ValueError, match="3 patient"):
        assign_folds(records_for(6, {f"case_{i}": f"P{i % 3}" for i in range(1, 7)}), n_folds=5)


def test_one_fold_holds_every_case():
    assert set(assign_folds(records_for(4), n_folds=1).values()) == {0}


def test_testing_records_get_no_fold():
    records = records_for(3) + [CaseRecord(case_id="case_9", split="testing", modalities={})]
    assert set(assign_folds(records, n_folds=2)) == {"case_1", "case_2", "case_3"}


# Channel selection ----------------------------------------------------------------------------------


def test_missing_modality_names_the_case_and_the_modality(tmp_path, profile):
    write_case(tmp_path, "case_1")
    write_case(tmp_path, "case_2", mods=("CT", "CT_CBF", "CT_MTT", "CT_Tmax"))
    _, _, records = discover_cases(tmp_path, profile=profile)
    with pytest.raises(MissingModalityError) as err:
        select_channels(records, profile)
    assert err.value.case_id == "case_2" and err.value.modality == "CBV"
    assert "case_2" in str(err.value) and "CBV" in str(err.value)


def test_every_incomplete_case_is_listed(tmp_path, profile):
    write_case(tmp_path, "case_1", mods=("CT", "CT_CBF", "CT_CBV", "CT_MTT"))
    write_case(tmp_path, "case_2", mods=("CT", "CT_CBF", "CT_MTT", "CT_Tmax"))
    _, _, records = discover_cases(tmp_path, profile=profile)
    with pytest.raises(MissingModalityError) as err:
        select_channels(records, profile)
    assert "case_1" in str(err.value) and "Tmax" in str(err.value)
    assert "case_2" in str(err.value) and "CBV" in str(err.value)


def test_skip_incomplete_leaves_the_case_out_and_lists_it(tmp_path, profile):
    write_case(tmp_path, "case_1")
    write_case(tmp_path, "case_2", mods=("CT", "CT_CBF", "CT_MTT", "CT_Tmax"))
    _, _, records = discover_cases(tmp_path, profile=profile)
    kept, skipped = select_channels(records, profile, skip_incomplete=True)
    assert [r.case_id for r in kept] == ["case_1"]
    assert skipped == [{"case_id": "case_2", "split": "training", "missing": ["CBV"]}]


def test_training_case_without_label_is_incomplete(tmp_path, profile):
    case_dir = write_case(tmp_path, "case_1")
    for f in next(case_dir.glob("*.OT.*")).iterdir():
        f.unlink()
    next(case_dir.glob("*.OT.*")).rmdir()
    _, _, records = discover_cases(tmp_path, profile=profile)
    with pytest.raises(MissingModalityError, match="'OT'"):
        select_channels(records, profile)


def test_nnunet_missing_channel_names_the_expected_file(tmp_path):
    channels = {"0": "CBF", "1": "CBV", "2": "MTT", "3": "Tmax"}
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": channels}))
    for case in ("c_001", "c_002"):
        for idx in range(4):
            if (case, idx) != ("c_002", 1):
                write_nifti(tmp_path / "imagesTr" / f"{case}_{idx:04d}.nii.gz")
        write_nifti(tmp_path / "labelsTr" / f"{case}.nii.gz")
    _, profile, records = discover_cases(tmp_path)
    with pytest.raises(MissingModalityError) as err:
        select_channels(records, profile)
    assert err.value.case_id == "c_002" and err.value.modality == "CBV"
    assert err.value.path.endswith("imagesTr/c_002_0001.nii.gz")


# The datalist file ----------------------------------------------------------------------------------


def prepare(root: Path, out: Path, profile, n_folds=2, seed=0) -> dict:
    layout, profile, records = discover_cases(root, profile=profile)
    datalist = build_datalist(records, profile, layout, root, out, n_folds=n_folds, seed=seed)
    write_datalist(datalist, out)
    return datalist


def test_channel_order_follows_the_profile_not_the_file_order(tmp_path, profile):
    write_case(tmp_path, "case_1", mods=("CT_Tmax", "CT_MTT", "CT", "CT_CBV", "CT_CBF"))
    datalist = prepare(tmp_path, tmp_path / "datalist.json", profile, n_folds=1)
    image = datalist["training"][0]["image"]
    assert [p.split(".")[-3] for p in image] == ["CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax"]
    assert datalist["channels"] == ["CBF", "CBV", "MTT", "Tmax"]
    assert datalist["modality"] == {"0": "CBF", "1": "CBV", "2": "MTT", "3": "Tmax"}


def test_channel_order_follows_a_profile_copy_with_other_channels(tmp_path, profile):
    write_case(tmp_path, "case_1")
    custom = profile.with_channels(["tmax", "CT", "CBF"])
    datalist = prepare(tmp_path, tmp_path / "datalist.json", custom, n_folds=1)
    assert [p.split(".")[-3] for p in datalist["training"][0]["image"]] == ["CT_Tmax", "CT", "CT_CBF"]
    assert datalist["channels"] == ["Tmax", "CT", "CBF"]


def test_monai_reads_the_written_datalist_and_the_paths_exist(tmp_path, profile):
    for i in range(1, 5):
        write_case(tmp_path / "data", f"case_{i}")
    write_case(tmp_path / "data", "case_1", split="TESTING", first_id=2000)
    out = tmp_path / "lists" / "datalist.json"
    prepare(tmp_path / "data", out, profile)
    training = load_decathlon_datalist(out, True, "training")
    assert len(training) == 4
    for item in training:
        assert len(item["image"]) == 4 and all(os.path.isfile(p) for p in item["image"])
        assert os.path.isfile(item["label"]) and os.path.isfile(item["reference"])
        assert item["fold"] in (0, 1)
    testing = load_decathlon_datalist(out, False, "testing")
    assert len(testing) == 1 and "fold" not in testing[0] and "label" not in testing[0]


def test_datalist_paths_are_relative_to_its_folder(tmp_path, profile):
    write_case(tmp_path / "data", "case_1")
    out = tmp_path / "lists" / "datalist.json"
    prepare(tmp_path / "data", out, profile, n_folds=1)
    raw = json.loads(out.read_text())["training"][0]
    assert all(not os.path.isabs(p) for p in raw["image"] + [raw["label"], raw["reference"]])
    assert raw["image"][0].startswith(os.path.join("..", "data", "TRAINING", "case_1"))


def test_datalist_records_carry_ids_reference_and_every_modality(tmp_path, profile):
    write_case(tmp_path, "case_1", description="Train_3_B", first_id=500)
    write_case(tmp_path, "case_2", mods=MAPS[1:], first_id=600)  # no CT
    datalist = prepare(tmp_path, tmp_path / "datalist.json", profile)
    first, second = datalist["training"]
    assert (first["patient_id"], first["slab_id"], first["smir_id"]) == ("Train_3", "B", "503")
    assert first["extra"]["description"] == "Train_3_B"
    assert set(first["modalities"]) == {"CT", "CBF", "CBV", "MTT", "Tmax"}
    assert first["reference"].endswith("SMIR.Brain.XX.O.CT.500.nii")
    assert second["reference"] == second["image"][0]  # no CT: the first channel
    assert "patient_id" not in second
    assert (datalist["numTraining"], datalist["numTest"], datalist["folds"]) == (2, 0, 2)
    assert (datalist["layout"], datalist["profile"], datalist["reference_modality"]) == ("isles2018", "isles2018", "CT")


def test_load_datalist_makes_paths_absolute_and_filters_folds(tmp_path, profile):
    for i in range(1, 7):
        write_case(tmp_path / "data", f"case_{i}")
    out = tmp_path / "datalist.json"
    datalist = prepare(tmp_path / "data", out, profile, n_folds=3)
    everything = load_datalist(out)
    assert len(everything) == 6
    for item in everything:
        paths = item["image"] + [item["label"], item["reference"]] + list(item["modalities"].values())
        assert all(os.path.isabs(p) and os.path.isfile(p) for p in paths)
    fold1 = load_datalist(out, fold=1)
    assert {r["case_id"] for r in fold1} == {r["case_id"] for r in datalist["training"] if r["fold"] == 1}
    with pytest.raises(ValueError, match="fold"):
        load_datalist(out, fold=3)
    others = load_datalist(out, exclude_fold=1)
    assert {r["case_id"] for r in others} == {r["case_id"] for r in everything} - {r["case_id"] for r in fold1}
    # nnU-Net's "fold all": a config passes its fold to both filters and gets every training record
    assert load_datalist(out, exclude_fold="all") == everything == load_datalist(out, fold="all")
    with pytest.raises(ValueError, match="whole number"):
        load_datalist(out, fold="1")


def test_our_datalist_reads_back_as_an_msd_layout(tmp_path, profile):
    for i in range(1, 9):
        write_case(tmp_path / "data", f"case_{i}", description=f"Train_{(i + 1) // 2}_{'AB'[(i + 1) % 2]}")
    write_case(tmp_path / "data", "case_1", split="TESTING", first_id=2000)
    custom = profile.with_channels(["CBF", "Tmax", "CT"])
    out = tmp_path / "lists" / "datalist.json"
    first = prepare(tmp_path / "data", out, custom, n_folds=4, seed=7)
    layout, reread_profile, records = discover_cases(out)
    assert layout == "msd"
    assert (reread_profile.name, reread_profile.channels) == ("isles2018", ["CBF", "Tmax", "CT"])
    again = build_datalist(records, reread_profile, layout, out, tmp_path / "again.json", n_folds=4, seed=7)
    write_datalist(again, tmp_path / "again.json")
    assert [r["fold"] for r in again["training"]] == [r["fold"] for r in first["training"]]
    assert [r["patient_id"] for r in again["training"]] == [r["patient_id"] for r in first["training"]]
    assert load_datalist(tmp_path / "again.json") == load_datalist(out)
    assert load_datalist(tmp_path / "again.json", "testing") == load_datalist(out, "testing")


def test_fold_and_exclude_fold_split_training_records_into_validation_and_training(tmp_path):
    import json

    from pipeline.data.datalist import load_datalist

    path = tmp_path / "d.json"
    records = [{"case_id": f"c{i}", "image": [f"c{i}.nii"], "label": f"l{i}.nii", "fold": i % 3} for i in range(6)]
    path.write_text(json.dumps({"folds": 3, "training": records, "testing": []}))
    validation = {r["case_id"] for r in load_datalist(path, "training", fold=1)}
    training = {r["case_id"] for r in load_datalist(path, "training", exclude_fold=1)}
    assert validation == {"c1", "c4"} and training == {"c0", "c2", "c3", "c5"}


def test_datalist_channels_are_the_ones_prepare_wrote_else_the_default(tmp_path):
    from pipeline.data.datalist import datalist_channels

    named = tmp_path / "named.json"
    named.write_text(json.dumps({"channels": ["Tmax", "CT"], "training": []}))
    msd = tmp_path / "msd.json"
    msd.write_text(json.dumps({"training": []}))
    assert datalist_channels(named, ["CBF"]) == ["Tmax", "CT"]
    assert datalist_channels(msd, ["CBF"]) == ["CBF"]
    assert datalist_channels(tmp_path / "absent.json", ["CBF"]) == ["CBF"]


@pytest.mark.parametrize("channels", ["CBF", [], ["CBF", "CBF"], ["CBF", 3]])
def test_malformed_datalist_channels_name_the_file(tmp_path, channels):
    from pipeline.data.datalist import datalist_channels

    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"channels": channels, "training": []}))
    with pytest.raises(ValueError, match="datalist.json.*'channels' must be a list of distinct modality names"):
        datalist_channels(path, ["CBF"])



@pytest.mark.parametrize("lines,message", [
    ("channels: [CBF]\nmodalities: {CBF: {}}\n", "rename 'channels' to 'default_channels'"),
    ("default_channels: [CBF]\noptional_channels: [CBF]\nmodalities: {CBF: {}}\n", "optional channel 'CBF'"),
    ("default_channels: [CBF]\noptional_channels: [CT]\nmodalities: {CBF: {}}\n", "optional channel 'CT'"),
])
def test_a_profile_that_would_pin_or_repeat_channels_is_refused(tmp_path, lines, message):
    path = tmp_path / "mine.yaml"
    path.write_text(lines)
    with pytest.raises(ValueError, match=f"profile {path}.*{message}"):
        load_profile(path)
