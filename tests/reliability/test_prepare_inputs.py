"""`prepare` on hostile but realistic case files: labels that are not 0/1, empty or constant maps, empty modality
folders, unsupported NIfTI data types, unreadable files, in every layout reader.

The rule these tests state: every such problem belongs to one case. Without ``--skip-incomplete`` prepare fails
(exit 2) with a message naming the case, the file and what is wrong, and writes nothing; with it the case is
left out and listed in ``skipped_cases.csv`` (case, split, file, reason) and the other cases are prepared. An
empty or constant channel is only a warning: the case is kept, and named with its file and channel in the
printed summary, ``case_notes.csv`` and ``fingerprint.json``.

Datasets are real NIfTI files in the ISLES 2018 layout
``TRAINING/case_N/SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii``, small enough to be quick.
"""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.data.fingerprint import compute_fingerprint
from pipeline.data.layouts import discover_cases
from pipeline.data.profiles import PROFILES_DIR, load_profile
from pipeline.errors import CaseError
from pipeline.io import check_image_dtype

SHAPE = (24, 24, 2)
AFFINE = np.diag([-0.9, -0.9, 10.0, 1.0])
# The ISLES 2018 modalities (the 4D perfusion series left out) and their real data types.
MODALITIES = {"CT": np.int32, "CT_CBF": np.uint16, "CT_CBV": np.uint16, "CT_MTT": np.float64, "CT_Tmax": np.float64}


def write_image(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def write_case(root: Path, n: int, split: str = "TRAINING") -> dict[str, Path]:
    """One case with maps that are 0 outside a square 'brain' and noisy inside, and a binary lesion label."""
    rng = np.random.default_rng(n)
    brain = np.zeros(SHAPE, bool)
    brain[4:20, 4:20, :] = True
    files = {}
    mods = list(MODALITIES) + (["OT"] if split == "TRAINING" else [])
    for offset, mod in enumerate(mods):
        name = f"SMIR.Brain.XX.O.{mod}.{100 * n + 10 * (split == 'TESTING') + offset}"
        if mod == "OT":
            data = np.zeros(SHAPE, np.uint8)
            data[8:12, 8:12, :] = 1
        else:
            data = np.where(brain, rng.uniform(1.0, 80.0, SHAPE), 0.0).astype(MODALITIES[mod])
        files[mod] = write_image(root / split / f"case_{n}" / name / f"{name}.nii", data)
    return files


def write_dataset(root: Path, cases: int = 3) -> dict[int, dict[str, Path]]:
    """``cases`` training cases and one test case; returns the training cases' files by case number."""
    files = {n: write_case(root, n) for n in range(1, cases + 1)}
    write_case(root, 1, "TESTING")
    return files


def set_nifti_datatype(path: Path, code: int, bitpix: int) -> None:
    """Rewrite a NIfTI-1 header's datatype and bitpix fields (bytes 70-73), as another tool would have written them.

    nibabel refuses to write a bool (DT_BINARY, code 1) image itself; other software writes such files.
    """
    raw = bytearray(path.read_bytes())
    raw[70:74] = struct.pack("<hh", code, bitpix)
    path.write_bytes(bytes(raw))


def prepare(root: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "--root", str(root), "--out", str(out), "--folds", "1", *extra])


def skipped_rows(out: Path) -> list[dict[str, str]]:
    with open(out.parent / "skipped_cases.csv", newline="") as f:
        return list(csv.DictReader(f))


def training_ids(out: Path) -> list[str]:
    return [r["case_id"] for r in json.loads(out.read_text())["training"]]


def nothing_written(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# Labels: only 0 and 1, or mapped by the profile ------------------------------------------------------------

NOT_BINARY = {
    "value 2": (np.uint8, lambda m: m * 2, "2"),
    "value 255": (np.uint8, lambda m: m * 255, "255"),
    "soft mask 0.5": (np.float32, lambda m: m * 0.5, "0.5"),
    "several classes": (np.uint8, lambda m: m + np.arange(m.size, dtype=np.uint8).reshape(m.shape) % 3 * m, "3"),
}


@pytest.mark.parametrize("kind", list(NOT_BINARY))
def test_a_label_that_is_not_0_1_fails_prepare_with_the_values_the_case_and_the_file(tmp_path, capsys, kind):
    dtype, make, shown = NOT_BINARY[kind]
    files = write_dataset(tmp_path / "data")
    label = files[2]["OT"]
    mask = np.asanyarray(nib.load(label).dataobj).astype(dtype)
    write_image(label, make(mask).astype(dtype))
    out = tmp_path / "out" / "datalist.json"
    assert prepare(tmp_path / "data", out) == 2
    message = capsys.readouterr().err
    assert "case_2" in message and label.name in message and shown in message and "0 and 1" in message
    assert nothing_written(out.parent)


def test_a_non_binary_label_is_left_out_and_listed_with_skip_incomplete(tmp_path, capsys):
    files = write_dataset(tmp_path / "data")
    label = files[2]["OT"]
    write_image(label, np.asanyarray(nib.load(label).dataobj) * np.uint8(255))
    out = tmp_path / "datalist.json"
    assert prepare(tmp_path / "data", out, "--skip-incomplete") == 0
    assert "case_2" in capsys.readouterr().out
    assert training_ids(out) == ["case_1", "case_3"]
    (row,) = skipped_rows(out)
    assert row["case_id"] == "case_2" and row["split"] == "training"
    assert Path(row["file"]).name == label.name and "255" in row["reason"]


def test_a_profile_maps_255_to_lesion_with_label_values(tmp_path):
    files = write_dataset(tmp_path / "data")
    for case in files.values():
        write_image(case["OT"], np.asanyarray(nib.load(case["OT"]).dataobj) * np.uint8(255))
    profile = tmp_path / "isles2018_255.yaml"
    profile.write_text((PROFILES_DIR / "isles2018.yaml").read_text() + "label_values: {255: 1}\n")
    assert load_profile(profile).label_values == {255: 1}
    out = tmp_path / "datalist.json"
    assert prepare(tmp_path / "data", out, "--profile", str(profile)) == 0
    assert training_ids(out) == ["case_1", "case_2", "case_3"]
    cases = json.loads((tmp_path / "fingerprint.json").read_text())["cases"]
    lesion_ml = 4 * 4 * 2 * 0.9 * 0.9 * 10.0 / 1000
    assert [c["lesion_ml"] for c in cases if c["split"] == "training"] == pytest.approx([lesion_ml] * 3)


@pytest.mark.parametrize("entry", ["label_values: {255: 2}", "label_values: {lesion: 1}", "label_values: [255]"])
def test_a_profile_with_malformed_label_values_is_refused_when_it_loads(tmp_path, entry):
    profile = tmp_path / "bad.yaml"
    profile.write_text((PROFILES_DIR / "isles2018.yaml").read_text() + entry + "\n")
    with pytest.raises(ValueError, match="label_values") as err:
        load_profile(profile)
    assert str(profile) in str(err.value)


def test_profiles_declare_no_label_mapping_by_default():
    assert load_profile("isles2018").label_values is None and load_profile("isles2022").label_values is None


# Empty or constant maps: a warning naming the case, the file and the channel -------------------------------

@pytest.mark.parametrize("mod, channel, value",
                         [("CT_CBF", "CBF", 0), ("CT_Tmax", "Tmax", 0), ("CT_Tmax", "Tmax", 7.5)])
def test_an_empty_or_constant_map_is_reported_and_the_case_kept(tmp_path, capsys, mod, channel, value):
    files = write_dataset(tmp_path / "data")
    brain = np.zeros(SHAPE, bool)
    brain[4:20, 4:20, :] = True
    bad = write_image(files[3][mod], np.where(brain, value, 0).astype(MODALITIES[mod]))
    out = tmp_path / "datalist.json"
    assert prepare(tmp_path / "data", out) == 0
    printed = capsys.readouterr().out
    warning = next(line for line in printed.splitlines() if "warning" in line and bad.name in line)
    assert "case_3" in warning and f"channel {channel}" in warning
    assert ("empty" if value == 0 else "constant") in warning
    assert training_ids(out) == ["case_1", "case_2", "case_3"]  # kept: a warning, not a failure
    with open(tmp_path / "case_notes.csv", newline="") as f:
        (note,) = list(csv.DictReader(f))
    assert (note["case_id"], note["channel"], Path(note["file"]).name) == ("case_3", channel, bad.name)
    summary = json.loads((tmp_path / "fingerprint.json").read_text())["summary"]
    assert summary["constant_channel_cases"] == 1
    assert [(n["case_id"], n["channel"]) for n in summary["channel_notes"]] == [("case_3", channel)]
    assert not (tmp_path / "skipped_cases.csv").exists()


def test_strict_fingerprint_fails_a_case_with_an_empty_map(tmp_path):
    files = write_dataset(tmp_path / "data")
    write_image(files[1]["CT_CBF"], np.zeros(SHAPE, np.uint16))
    _, profile, records = discover_cases(tmp_path / "data")
    notes: list[dict] = []
    table, failures = compute_fingerprint(records, profile, notes=notes)
    assert failures == [] and [n["case_id"] for n in notes] == ["case_1"]
    table, failures = compute_fingerprint(records, profile, strict=True)
    assert [f["case_id"] for f in failures] == ["case_1"] and "CBF" in failures[0]["reason"]
    assert Path(failures[0]["file"]) == files[1]["CT_CBF"]
    assert list(table[table.split == "training"].case_id) == ["case_2", "case_3"]


def test_a_clean_rerun_removes_the_lists_of_an_earlier_run(tmp_path):
    files = write_dataset(tmp_path / "data")
    cbf = files[2]["CT_CBF"]
    good = np.asanyarray(nib.load(cbf).dataobj).copy()
    write_image(cbf, np.zeros(SHAPE, np.uint16))
    write_image(files[3]["OT"], np.full(SHAPE, 2, np.uint8))
    out = tmp_path / "datalist.json"
    assert prepare(tmp_path / "data", out, "--skip-incomplete") == 0
    assert (tmp_path / "case_notes.csv").exists() and (tmp_path / "skipped_cases.csv").exists()
    write_image(cbf, good)
    write_image(files[3]["OT"], np.zeros(SHAPE, np.uint8))
    assert prepare(tmp_path / "data", out) == 0
    assert not (tmp_path / "case_notes.csv").exists() and not (tmp_path / "skipped_cases.csv").exists()


# Empty modality folders, unsupported data types, unreadable files ------------------------------------------

def empty_the_folder(path: Path) -> Path:
    path.unlink()
    return path.parent


def to_complex(path: Path) -> Path:
    image = nib.load(path)
    header = image.header.copy()
    header.set_data_dtype(np.complex64)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj).astype(np.complex64), image.affine, header), str(path))
    return path


def to_bool_coded(path: Path) -> Path:
    write_image(path, (np.asanyarray(nib.load(path).dataobj) > 0).astype(np.uint8))
    set_nifti_datatype(path, 1, 1)
    return path


def truncate(path: Path) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: 352 + (len(raw) - 352) // 3])
    return path


BREAKAGES = {
    "empty CBV folder": ("CT_CBV", empty_the_folder, "no image file"),
    "complex CBF": ("CT_CBF", to_complex, "complex"),
    "bool-coded label": ("OT", to_bool_coded, "bool"),
    "complex CT (the reference)": ("CT", to_complex, "complex"),
    "truncated label": ("OT", truncate, "cannot read"),
    "truncated Tmax": ("CT_Tmax", truncate, "cannot read"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_case_is_left_out_and_listed_with_skip_incomplete(tmp_path, capsys, breakage):
    mod, breaker, reason = BREAKAGES[breakage]
    files = write_dataset(tmp_path / "data")
    named = breaker(files[2][mod])
    out = tmp_path / "datalist.json"
    assert prepare(tmp_path / "data", out, "--skip-incomplete") == 0
    printed = capsys.readouterr().out
    assert "left out 1 case(s)" in printed and "case_2" in printed and named.name in printed
    assert training_ids(out) == ["case_1", "case_3"]
    (row,) = skipped_rows(out)
    assert (row["case_id"], row["split"], Path(row["file"]).name) == ("case_2", "training", named.name)
    assert reason in row["reason"]


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_case_fails_prepare_naming_the_case_and_the_file(tmp_path, capsys, breakage):
    mod, breaker, reason = BREAKAGES[breakage]
    files = write_dataset(tmp_path / "data")
    named = breaker(files[2][mod])
    out = tmp_path / "out" / "datalist.json"
    assert prepare(tmp_path / "data", out) == 2
    message = capsys.readouterr().err
    assert "case_2" in message and named.name in message and reason in message and "--skip-incomplete" in message
    assert "Traceback" not in message
    assert nothing_written(out.parent)


def test_every_broken_case_is_listed_at_once(tmp_path, capsys):
    files = write_dataset(tmp_path / "data", cases=4)
    empty_the_folder(files[1]["CT_MTT"])
    to_complex(files[2]["CT_CBF"])
    write_image(files[3]["OT"], np.full(SHAPE, 2, np.uint8))
    out = tmp_path / "out" / "datalist.json"
    assert prepare(tmp_path / "data", out) == 2
    message = capsys.readouterr().err
    assert "3 case(s) cannot be used" in message
    assert all(f"case 'case_{n}'" in message for n in (1, 2, 3)) and "case_4" not in message


@pytest.mark.parametrize("code, bitpix, kind", [(1, 1, "bool"), (32, 64, "complex"), (1792, 128, "complex"),
                                                (2048, 256, "complex")])
def test_check_image_dtype_refuses_bool_and_complex_naming_the_case_and_file(tmp_path, code, bitpix, kind):
    path = write_image(tmp_path / "map.nii", np.zeros(SHAPE, np.uint8))
    set_nifti_datatype(path, code, bitpix)
    with pytest.raises(CaseError) as err:
        check_image_dtype(path, "case_9")
    assert err.value.case_id == "case_9" and err.value.path == str(path) and kind in str(err.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_check_image_dtype_accepts_integer_and_float_images(tmp_path, dtype):
    path = write_image(tmp_path / "map.nii.gz", np.zeros(SHAPE, dtype))
    assert check_image_dtype(path, "case_9") == np.dtype(dtype).name


# The same for every layout reader: a case the reader cannot read is a problem of that case --------------------

def broken_isles2018(root: Path) -> str:
    files = write_dataset(root)
    empty_the_folder(files[2]["CT_CBV"])
    return "case_2"


def broken_isles2022(root: Path) -> str:
    for n in (1, 2):
        stem = f"sub-strokecase{n:04d}_ses-0001"
        folder = root / "rawdata" / f"sub-strokecase{n:04d}" / "ses-0001"
        for suffix in ("dwi", "adc", "flair"):
            write_image(folder / f"{stem}_{suffix}.nii.gz", np.ones(SHAPE, np.float32))
        write_image(root / "derivatives" / f"sub-strokecase{n:04d}" / "ses-0001" / f"{stem}_msk.nii.gz",
                    np.zeros(SHAPE, np.uint8))
    write_image(root / "rawdata" / "sub-strokecase0002" / "ses-0001" / "dwi" / "sub-strokecase0002_ses-0001_dwi.nii.gz",
                np.ones(SHAPE, np.float32))  # a second DWI for one session
    return "sub-strokecase0002"


def broken_nnunet(root: Path) -> str:
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CBF", "1": "CBV", "2": "MTT", "3": "Tmax"}, "labels": {"background": 0, "core": 1},
         "file_ending": ".nii.gz"}))
    for case in ("ISLES_001", "ISLES_002"):
        for index in range(4):
            write_image(root / "imagesTr" / f"{case}_{index:04d}.nii.gz", np.ones(SHAPE, np.float32))
        write_image(root / "labelsTr" / f"{case}.nii.gz", np.zeros(SHAPE, np.uint8))
    write_image(root / "imagesTr" / "ISLES_002_0007.nii.gz", np.ones(SHAPE, np.float32))  # no channel 7
    return "ISLES_002"


def broken_msd(root: Path) -> str:
    for case in ("brain_1", "brain_2"):
        for mod in ("dwi", "adc", "flair"):
            write_image(root / "images" / f"{case}_{mod}.nii.gz", np.ones(SHAPE, np.float32))
    images = lambda c: [f"images/{c}_{m}.nii.gz" for m in ("dwi", "adc", "flair")]  # noqa: E731
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "DWI", "1": "ADC", "2": "FLAIR"},
        "training": [{"case_id": "brain_1", "image": images("brain_1")},
                     {"case_id": "brain_2", "image": images("brain_2")[:2]}],  # two files for three channels
    }))
    return "brain_2"


@pytest.mark.parametrize("layout, make", [("isles2018", broken_isles2018), ("isles2022", broken_isles2022),
                                          ("nnunet", broken_nnunet), ("msd", broken_msd)])
def test_every_layout_reader_reports_a_broken_case_instead_of_aborting(tmp_path, layout, make):
    root = tmp_path / "data"
    broken = make(root)
    with pytest.raises(CaseError) as err:
        discover_cases(root, layout)
    assert err.value.case_id == broken
    problems: list[dict] = []
    found, _, records = discover_cases(root, layout, problems=problems)
    assert found == layout and broken not in [r.case_id for r in records] and len(records) >= 1
    (problem,) = problems
    assert problem["case_id"] == broken and problem["split"] == "training"
    assert problem["file"] and problem["reason"]
