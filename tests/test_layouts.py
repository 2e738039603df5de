"""Layout readers and detection: what each real dataset layout looks like and what is read from it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.data import isles2018, isles2022, isles2024, msd, nnunet
from pipeline.data.layouts import LAYOUTS, detect_layout, discover_cases
from pipeline.data.profiles import load_profile
from pipeline.errors import CaseError, LayoutError

CT_MAPS = ("CT", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "CT_4DPWI")
MR_MAPS = ("CT", "MR_CBF", "MR_CBV", "MR_MTT", "MR_Tmax", "MR_4DPWI")


def write_nifti(path: Path, value: float = 0.0, shape=(8, 8, 2)) -> Path:
    """Write a tiny NIfTI image filled with ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.full(shape, value, dtype=np.float32), np.eye(4)).to_filename(str(path))
    return path


def write_isles2018_case(
    root: Path,
    case: str,
    split: str = "TRAINING",
    mods=CT_MAPS,
    first_id: int = 345560,
    label: bool = True,
    ext: str = ".nii",
    description: str | None = None,
) -> Path:
    """Write one ISLES 2018 case folder; modality folders get consecutive SMIR ids from ``first_id``."""
    case_dir = root / split / case
    for offset, mod in enumerate(list(mods) + (["OT"] if label else [])):
        name = f"SMIR.Brain.XX.O.{mod}.{first_id + offset}"
        write_nifti(case_dir / name / f"{name}{ext}", value=offset)
        if mod == "OT" and description is not None:
            (case_dir / name / f"{name}.json").write_text(json.dumps({"description": description}))
    return case_dir


@pytest.fixture
def profile2018():
    return load_profile("isles2018")


@pytest.fixture
def profile2022():
    return load_profile("isles2022")


# ISLES 2018 -----------------------------------------------------------------------------------------


def test_isles2018_reads_ct_named_folders(tmp_path, profile2018):
    case_dir = write_isles2018_case(tmp_path, "case_1", first_id=100)
    (record,) = isles2018.discover(tmp_path, profile2018)
    assert record.case_id == "case_1"
    assert record.split == "training"
    assert set(record.modalities) == {"CT", "CBF", "CBV", "MTT", "Tmax", "4DPWI"}
    assert record.modalities["Tmax"].endswith("SMIR.Brain.XX.O.CT_Tmax.104.nii")
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in record.modalities.values())
    assert record.label.endswith("SMIR.Brain.XX.O.OT.106.nii")
    assert record.smir_id == "103"  # the CT_MTT folder's id
    assert record.folder == str(case_dir.resolve())


def test_isles2018_reads_mr_named_maps_with_other_ids(tmp_path, profile2018):
    write_isles2018_case(tmp_path, "case_1", mods=MR_MAPS, first_id=900001)
    (record,) = isles2018.discover(tmp_path, profile2018)
    assert set(record.modalities) == {"CT", "CBF", "CBV", "MTT", "Tmax", "4DPWI"}
    assert "MR_Tmax" in record.modalities["Tmax"]
    assert record.smir_id == "900004"  # the MR_MTT folder's id


def test_isles2018_reads_compressed_files(tmp_path, profile2018):
    write_isles2018_case(tmp_path, "case_1", ext=".nii.gz")
    (record,) = isles2018.discover(tmp_path, profile2018)
    assert record.modalities["CBF"].endswith(".nii.gz")
    assert record.label.endswith(".nii.gz")


def test_isles2018_testing_cases_have_no_label(tmp_path, profile2018):
    write_isles2018_case(tmp_path, "case_1")
    write_isles2018_case(tmp_path, "case_1", split="TESTING", label=False, first_id=500)
    training, testing = isles2018.discover(tmp_path, profile2018)
    assert (training.split, testing.split) == ("training", "testing")
    assert testing.label is None and testing.smir_id == "503"


def test_isles2018_sorts_cases_naturally(tmp_path, profile2018):
    for case in ("case_10", "case_2", "case_1"):
        write_isles2018_case(tmp_path, case)
    assert [r.case_id for r in isles2018.discover(tmp_path, profile2018)] == ["case_1", "case_2", "case_10"]


def test_isles2018_ignores_stray_files_and_folders(tmp_path, profile2018):
    case_dir = write_isles2018_case(tmp_path, "case_1")
    (case_dir / ".DS_Store").write_bytes(b"\0\1")
    (case_dir / "notes").mkdir()
    (tmp_path / "TRAINING" / "README.txt").write_text("hello")
    (tmp_path / "TRAINING" / ".DS_Store").write_bytes(b"\0")
    mtt = next(case_dir.glob("*CT_MTT*"))
    (mtt / "._hidden.nii").write_bytes(b"")  # macOS resource fork
    (record,) = isles2018.discover(tmp_path, profile2018)
    assert len(record.modalities) == 6


@pytest.mark.parametrize("count", [0, 2])
def test_isles2018_folder_without_exactly_one_image_is_an_error(tmp_path, profile2018, count):
    case_dir = write_isles2018_case(tmp_path, "case_3")
    cbv = next(case_dir.glob("*CT_CBV*"))
    for f in cbv.iterdir():
        f.unlink()
    for i in range(count):
        write_nifti(cbv / f"image{i}.nii")
    with pytest.raises(CaseError) as err:
        isles2018.discover(tmp_path, profile2018)
    assert err.value.case_id == "case_3"
    assert cbv.name in str(err.value)


def test_isles2018_two_folders_of_one_modality_is_an_error(tmp_path, profile2018):
    case_dir = write_isles2018_case(tmp_path, "case_1")
    write_nifti(case_dir / "SMIR.Brain.XX.O.MR_Tmax.7" / "SMIR.Brain.XX.O.MR_Tmax.7.nii")
    with pytest.raises(CaseError, match="Tmax"):
        isles2018.discover(tmp_path, profile2018)


def test_isles2018_ot_json_gives_patient_and_slab(tmp_path, profile2018):
    write_isles2018_case(tmp_path, "case_1", description="Train_40_A")
    (record,) = isles2018.discover(tmp_path, profile2018)
    assert (record.patient_id, record.slab_id) == ("Train_40", "A")
    assert record.extra["description"] == "Train_40_A"
    assert record.group == "Train_40"


def test_isles2018_patient_id_found_in_another_json_field(tmp_path, profile2018):
    case_dir = write_isles2018_case(tmp_path, "case_1")
    ot = next(case_dir.glob("*.OT.*"))
    (ot / "meta.json").write_text(json.dumps({"description": "", "info": {"name": "Train_7_B"}}))
    (record,) = isles2018.discover(tmp_path, profile2018)
    assert (record.patient_id, record.slab_id) == ("Train_7", "B")


def test_isles2018_malformed_json_warns_and_continues(tmp_path, profile2018):
    case_dir = write_isles2018_case(tmp_path, "case_1")
    ot = next(case_dir.glob("*.OT.*"))
    (ot / "broken.json").write_text("{'description': __import__('os')}")
    with pytest.warns(UserWarning, match="broken.json"):
        (record,) = isles2018.discover(tmp_path, profile2018)
    assert record.patient_id is None and record.group == "case_1"


# ISLES 2022 -----------------------------------------------------------------------------------------


def write_isles2022_case(root: Path, n: int, subfolders: bool = False, flair: str = "flair", mask: bool = True,
                         session: str = "ses-0001") -> None:
    sub = f"sub-strokecase{n:04d}"
    folder = root / "rawdata" / sub / session
    stem = f"{sub}_{session}"
    write_nifti((folder / "dwi" if subfolders else folder) / f"{stem}_dwi.nii.gz")
    write_nifti((folder / "dwi" if subfolders else folder) / f"{stem}_adc.nii.gz")
    write_nifti((folder / "anat" if subfolders else folder) / f"{stem}_{flair}.nii.gz", shape=(16, 16, 1))
    (folder / f"{stem}_dwi.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}_dwi.json").write_text("{}")
    if mask:
        write_nifti(root / "derivatives" / sub / session / f"{stem}_msk.nii.gz")


def test_isles2022_flat_session_folder(tmp_path, profile2022):
    write_isles2022_case(tmp_path, 1)
    write_isles2022_case(tmp_path, 2, mask=False)
    first, second = isles2022.discover(tmp_path, profile2022)
    assert first.case_id == "sub-strokecase0001" and first.patient_id == "sub-strokecase0001"
    assert set(first.modalities) == {"DWI", "ADC", "FLAIR"}
    assert first.label.endswith("sub-strokecase0001_ses-0001_msk.nii.gz")
    assert first.split == "training"
    assert second.split == "testing" and second.label is None


def test_isles2022_subfolders_and_uppercase_flair(tmp_path, profile2022):
    write_isles2022_case(tmp_path, 3, subfolders=True, flair="FLAIR")
    (record,) = isles2022.discover(tmp_path, profile2022)
    assert record.modalities["FLAIR"].endswith("anat/sub-strokecase0003_ses-0001_FLAIR.nii.gz")
    assert record.modalities["DWI"].endswith("dwi/sub-strokecase0003_ses-0001_dwi.nii.gz")


def test_isles2022_several_sessions_get_session_in_case_id(tmp_path, profile2022):
    write_isles2022_case(tmp_path, 4, session="ses-0001")
    write_isles2022_case(tmp_path, 4, session="ses-0002")
    records = isles2022.discover(tmp_path, profile2022)
    assert [r.case_id for r in records] == ["sub-strokecase0004_ses-0001", "sub-strokecase0004_ses-0002"]
    assert {r.patient_id for r in records} == {"sub-strokecase0004"}


# nnU-Net raw ----------------------------------------------------------------------------------------


def write_nnunet(root: Path, cases=("ISLES_001", "ISLES_002"), key="channel_names", skip=()) -> Path:
    names = {"0": "CBF", "1": "CBV", "2": "MTT", "3": "Tmax"}
    (root).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(
        {key: names, "labels": {"background": 0, "core": 1}, "numTraining": len(cases), "file_ending": ".nii.gz"}
    ))
    for case in cases:
        for idx in names:
            if (case, int(idx)) not in skip:
                write_nifti(root / "imagesTr" / f"{case}_{int(idx):04d}.nii.gz")
        write_nifti(root / "labelsTr" / f"{case}.nii.gz")
    for idx in names:
        write_nifti(root / "imagesTs" / f"ISLES_100_{int(idx):04d}.nii.gz")
    return root


@pytest.mark.parametrize("key", ["channel_names", "modality"])
def test_nnunet_reads_channels_labels_and_test_cases(tmp_path, profile2018, key):
    write_nnunet(tmp_path, key=key)
    records = nnunet.discover(tmp_path, profile2018)
    assert [(r.case_id, r.split) for r in records] == [
        ("ISLES_001", "training"), ("ISLES_002", "training"), ("ISLES_100", "testing")
    ]
    first = records[0]
    assert first.modalities["CBF"].endswith("ISLES_001_0000.nii.gz")
    assert first.modalities["Tmax"].endswith("ISLES_001_0003.nii.gz")
    assert first.label.endswith("labelsTr/ISLES_001.nii.gz")
    assert records[2].label is None


def test_nnunet_records_which_channel_file_is_missing(tmp_path, profile2018):
    write_nnunet(tmp_path, skip={("ISLES_002", 2)})
    record = nnunet.discover(tmp_path, profile2018)[1]
    assert "MTT" not in record.modalities
    assert record.extra["missing_files"]["MTT"].endswith("imagesTr/ISLES_002_0002.nii.gz")


def test_nnunet_default_profile_is_the_one_covering_its_channels(tmp_path):
    write_nnunet(tmp_path)
    layout, profile, records = discover_cases(tmp_path)
    assert layout == "nnunet" and profile.name == "isles2018" and len(records) == 3


def test_nnunet_unknown_channels_ask_for_a_profile(tmp_path):
    write_nnunet(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2", "1": "PD", "2": "x", "3": "y"}}))
    with pytest.raises(LayoutError, match="--profile"):
        discover_cases(tmp_path)


# MSD-style datalist ---------------------------------------------------------------------------------


def write_msd(root: Path) -> Path:
    for case in ("brain_1", "brain_2", "brain_9"):
        for mod in ("dwi", "adc", "flair"):
            write_nifti(root / "images" / f"{case}_{mod}.nii.gz")
        write_nifti(root / "labels" / f"{case}.nii.gz")
    data = {
        "name": "toy",
        "modality": {"0": "DWI", "1": "ADC", "2": "FLAIR"},
        "training": [
            {"image": [f"images/{c}_dwi.nii.gz", f"images/{c}_adc.nii.gz", f"images/{c}_flair.nii.gz"],
             "label": f"labels/{c}.nii.gz"}
            for c in ("brain_1", "brain_2")
        ],
        "test": [["images/brain_9_dwi.nii.gz", "images/brain_9_adc.nii.gz", "images/brain_9_flair.nii.gz"]],
    }
    (root / "dataset.json").write_text(json.dumps(data))
    return root / "dataset.json"


def test_msd_reads_per_channel_lists_relative_to_the_json(tmp_path, profile2022):
    write_msd(tmp_path)
    records = msd.discover(tmp_path, profile2022)
    assert [(r.case_id, r.split) for r in records] == [
        ("brain_1", "training"), ("brain_2", "training"), ("brain_9", "testing")
    ]
    assert records[0].modalities["FLAIR"] == str(tmp_path / "images" / "brain_1_flair.nii.gz")
    assert records[0].label == str(tmp_path / "labels" / "brain_1.nii.gz")


def test_msd_root_may_be_the_json_file_and_picks_the_covering_profile(tmp_path):
    json_path = write_msd(tmp_path)
    layout, profile, records = discover_cases(json_path)
    assert (layout, profile.name, len(records)) == ("msd", "isles2022", 3)


def test_msd_single_3d_file_for_one_channel(tmp_path, profile2022):
    write_nifti(tmp_path / "a.nii.gz")
    write_nifti(tmp_path / "a_seg.nii.gz")
    (tmp_path / "datalist.json").write_text(json.dumps(
        {"modality": {"0": "DWI"}, "training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}]}
    ))
    (record,) = msd.discover(tmp_path, profile2022)
    assert record.case_id == "a" and list(record.modalities) == ["DWI"]


def test_msd_multichannel_single_file_is_an_error(tmp_path, profile2022):
    write_nifti(tmp_path / "a.nii.gz")
    (tmp_path / "datalist.json").write_text(json.dumps(
        {"modality": {"0": "DWI", "1": "ADC"}, "training": [{"image": "a.nii.gz", "label": "a.nii.gz"}]}
    ))
    with pytest.raises(CaseError, match="one 3D file per channel"):
        msd.discover(tmp_path, profile2022)


# ISLES 2024 -----------------------------------------------------------------------------------------

ISLES2024_MAPS = ("cbf", "cbv", "mtt", "tmax")


def write_isles2024_case(root: Path, n: int, raw: str = "raw_data", mask: str | None = "lesion-msk",
                         cta: bool = True) -> None:
    """One subject as the ISLES 2024 archives hold it: raw NCCT, CTA, 4D CTP and CTP-grid maps; the maps, CTA and
    CTP co-registered to the NCCT under derivatives; the follow-up lesion mask named ``mask`` (None: none)."""
    sub = f"sub-stroke{n:04d}"
    acute = root / raw / sub / "ses-01"
    for suffix in ("ncct", "cta", "ctp"):
        write_nifti(acute / f"{sub}_ses-01_{suffix}.nii.gz", shape=(8, 8, 2, 3) if suffix == "ctp" else (8, 8, 2))
    for suffix in ISLES2024_MAPS:
        write_nifti(acute / "perfusion-maps" / f"{sub}_ses-01_{suffix}.nii.gz", shape=(4, 4, 2))
    derived = root / "derivatives" / sub
    for suffix in ISLES2024_MAPS:
        write_nifti(derived / "ses-01" / "perfusion-maps" / f"{sub}_ses-01_space-ncct_{suffix}.nii.gz")
    write_nifti(derived / "ses-01" / f"{sub}_ses-01_space-ncct_ctp.nii.gz", shape=(8, 8, 2, 3))
    if cta:
        write_nifti(derived / "ses-01" / f"{sub}_ses-01_space-ncct_cta.nii.gz")
    if mask:
        write_nifti(derived / "ses-02" / f"{sub}_ses-02_{mask}.nii.gz")


def test_isles2024_reads_the_ncct_and_the_derivatives_on_its_grid(tmp_path):
    write_isles2024_case(tmp_path, 1)
    write_isles2024_case(tmp_path, 3, mask="space-ncct_lesion-msk")  # the public release's name
    write_isles2024_case(tmp_path, 12, mask=None)
    first, second, third = isles2024.discover(tmp_path, load_profile("isles2024"))
    assert [r.case_id for r in (first, second, third)] == ["sub-stroke0001", "sub-stroke0003", "sub-stroke0012"]
    assert first.modalities["NCCT"].endswith("raw_data/sub-stroke0001/ses-01/sub-stroke0001_ses-01_ncct.nii.gz")
    for name in ("CBF", "CBV", "MTT", "Tmax"):
        assert first.modalities[name].endswith(
            f"derivatives/sub-stroke0001/ses-01/perfusion-maps/sub-stroke0001_ses-01_space-ncct_{name.lower()}.nii.gz")
    assert first.modalities["CTA"].endswith("derivatives/sub-stroke0001/ses-01/sub-stroke0001_ses-01_space-ncct_cta.nii.gz")
    assert first.label.endswith("derivatives/sub-stroke0001/ses-02/sub-stroke0001_ses-02_lesion-msk.nii.gz")
    assert second.label.endswith("sub-stroke0003_ses-02_space-ncct_lesion-msk.nii.gz")
    assert (first.split, second.split, third.split, third.label) == ("training", "training", "testing", None)


def test_isles2024_two_lesion_masks_name_the_subject_and_both_files(tmp_path):
    write_isles2024_case(tmp_path, 5)
    write_nifti(tmp_path / "derivatives" / "sub-stroke0005" / "ses-02" / "sub-stroke0005_ses-02_space-ncct_lesion-msk.nii.gz")
    with pytest.raises(CaseError, match="sub-stroke0005.*two lesion-msk files"):
        isles2024.discover(tmp_path, load_profile("isles2024"))
    problems: list = []
    assert isles2024.discover(tmp_path, load_profile("isles2024"), problems) == []
    assert problems[0]["case_id"] == "sub-stroke0005" and problems[0]["split"] == "training"


@pytest.mark.parametrize("raw", ["raw_data", "rawdata"])
def test_isles2024_is_detected_under_either_raw_folder_name_and_not_as_isles2022(tmp_path, raw):
    write_isles2024_case(tmp_path, 1, raw=raw)
    assert detect_layout(tmp_path) == "isles2024"
    layout, profile, records = discover_cases(tmp_path)
    assert (layout, profile.name, profile.reference_modality) == ("isles2024", "isles2024", "NCCT")


def test_prepare_stacks_the_ncct_and_the_maps_and_the_cta_when_every_case_has_it(tmp_path):
    from pipeline.__main__ import main

    for n in (1, 2, 3):
        write_isles2024_case(tmp_path / "data", n, mask=None if n == 3 else "lesion-msk")
    assert main(["prepare", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "datalist.json"),
                 "--folds", "2"]) == 0
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert datalist["channels"] == ["NCCT", "CBF", "CBV", "MTT", "Tmax", "CTA"]
    assert (datalist["layout"], datalist["numTraining"], datalist["numTest"]) == ("isles2024", 2, 1)
    (tmp_path / "data" / "derivatives" / "sub-stroke0002" / "ses-01" / "sub-stroke0002_ses-01_space-ncct_cta.nii.gz").unlink()
    assert main(["prepare", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "no_cta.json"),
                 "--folds", "2"]) == 0
    assert json.loads((tmp_path / "no_cta.json").read_text())["channels"] == ["NCCT", "CBF", "CBV", "MTT", "Tmax"]


# Detection ------------------------------------------------------------------------------------------


def test_detect_names_each_layout(tmp_path):
    write_isles2018_case(tmp_path / "a", "case_1")
    write_isles2022_case(tmp_path / "b", 1)
    write_nnunet(tmp_path / "c")
    write_msd(tmp_path / "d")
    assert [detect_layout(tmp_path / x) for x in "abcd"] == ["isles2018", "isles2022", "nnunet", "msd"]


def test_detect_on_an_empty_folder_names_the_root_and_what_was_looked_for(tmp_path):
    with pytest.raises(LayoutError) as err:
        detect_layout(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    for name in LAYOUTS:
        assert name in message
    assert "TRAINING" in message and "rawdata" in message and "dataset.json" in message


def test_detect_on_a_missing_root(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        detect_layout(tmp_path / "nowhere")


def test_detect_refuses_to_guess_between_two_layouts(tmp_path):
    write_isles2018_case(tmp_path, "case_1")
    write_isles2022_case(tmp_path, 1)
    with pytest.raises(LayoutError, match="--layout"):
        detect_layout(tmp_path)


def test_discover_cases_uses_the_layouts_default_profile(tmp_path):
    write_isles2018_case(tmp_path, "case_1")
    layout, profile, records = discover_cases(tmp_path)
    assert (layout, profile.name, [r.case_id for r in records]) == ("isles2018", "isles2018", ["case_1"])


def test_discover_cases_rejects_an_unknown_layout_and_a_wrong_one(tmp_path):
    write_isles2018_case(tmp_path, "case_1")
    with pytest.raises(LayoutError, match="unknown layout"):
        discover_cases(tmp_path, layout="bids")
    with pytest.raises(LayoutError, match="ISLES 2022"):
        discover_cases(tmp_path, layout="isles2022")


def test_a_datalist_written_beside_the_images_does_not_hide_their_layout(tmp_path):
    from pipeline.data.datalist import build_datalist, write_datalist

    write_isles2018_case(tmp_path, "case_1")
    layout, profile, records = discover_cases(tmp_path)
    out = tmp_path / "datalist.json"
    write_datalist(build_datalist(records, profile, layout, tmp_path, out, n_folds=1), out)
    assert detect_layout(tmp_path) == "isles2018"
