"""Hospital DICOM: the ``dicom`` layout (series chosen by SeriesDescription), DICOM series read through the project's
readers, the DICOM Segmentation of a mask, and the clinical summary. Every test writes real DICOM series with pydicom
(CT Image Storage, 4 slices of 32x32) into tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

import nibabel as nib  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from pipeline.data.datalist import load_datalist  # noqa: E402
from pipeline.data.dicom import discover, looks_like  # noqa: E402
from pipeline.data.layouts import detect_layout  # noqa: E402
from pipeline.data.prepare import prepare_dataset  # noqa: E402
from pipeline.data.profiles import load_profile  # noqa: E402
from pipeline.dicom.seg import write_segmentation  # noqa: E402
from pipeline.dicom.series import reference_series_files  # noqa: E402
from pipeline.dicom.summary import (  # noqa: E402
    clinical_summary, key_slices, read_on_grid, write_summary_figure, write_summary_json,
)
from pipeline.errors import CaseError  # noqa: E402
from pipeline.io import is_partial_file, read_array, read_geometry  # noqa: E402
from pipeline.io.geometry import _sitk_affine, dicom_series_files  # noqa: E402
from pipeline.transforms import LoadModalitiesd  # noqa: E402

from dicom_studies import (  # noqa: E402
    AXIAL, OBLIQUE_FLIPPED, PERFUSION, SHAPE_ZYX, STUDY_UID, ct_values, tmax_values, uid_of, write_patient,
    write_series,
)


@pytest.fixture
def profile():
    return load_profile("dicom_ctp")


# --------------------------------------------------------------------------------------------------------------------
# The layout
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixed", [True, False], ids=["series mixed in one folder", "one folder per series"])
def test_discovery_takes_one_series_per_channel_and_not_the_thresholded_tmax(tmp_path, profile, mixed):
    written = write_patient(tmp_path / "patient01", mixed=mixed)
    (record,) = discover(tmp_path, profile)
    assert (record.case_id, record.split, record.patient_id) == ("patient01", "testing", "P001")
    assert set(record.modalities) == {"NCCT", "CBF", "CBV", "MTT", "Tmax"}
    for name, path in record.modalities.items():
        assert uid_of(path) == uid_of(written[name][0])
        assert record.extra["dicom"]["series"][name]["series_instance_uid"] == uid_of(written[name][0])
        assert record.extra["dicom"]["series"][name]["instances"] == SHAPE_ZYX[0]
    assert record.extra["dicom"]["series"]["Tmax"]["series_description"] == "Tmax"
    assert record.extra["dicom"]["reference"] == "NCCT"
    assert detect_layout(tmp_path) == "dicom"


def test_other_layouts_do_not_look_like_dicom(tmp_path):
    (tmp_path / "case_1").mkdir()
    (tmp_path / "case_1" / "CBF.nii.gz").write_bytes(b"\x1f\x8b" + bytes(300))
    (tmp_path / "case_1" / "IM0").write_bytes(bytes(300))  # no DICM marker
    assert not looks_like(tmp_path)


def test_a_missing_channel_names_the_patient_and_its_series(tmp_path, profile):
    written = write_patient(tmp_path / "patient07", mixed=True, skip=("CBV",))
    with pytest.raises(CaseError) as caught:
        discover(tmp_path, profile)
    message = str(caught.value)
    assert caught.value.case_id == "patient07" and "CBV" in message
    for name in ("NCCT", "CBF", "MTT", "Tmax", "mask"):
        assert uid_of(written[name][0]) in message
    assert "'Head 5mm NCCT'" in message and str(tmp_path / "patient07") in message
    problems = []
    assert discover(tmp_path, profile, problems) == []
    assert problems[0]["case_id"] == "patient07" and "CBV" in problems[0]["reason"]


def test_a_thresholded_tmax_mask_alone_is_not_the_tmax_map(tmp_path, profile):
    write_patient(tmp_path / "patient02", mixed=True, skip=("Tmax",))
    with pytest.raises(CaseError, match=r"Tmax channel.*'TMAX >6s'.*not taken: matches the exclusion"):
        discover(tmp_path, profile)


def test_two_series_matching_one_channel_name_both(tmp_path, profile):
    written = write_patient(tmp_path / "patient03", mixed=False, extra=[("thin", "Head 0.625mm NCCT")])
    with pytest.raises(CaseError) as caught:
        discover(tmp_path, profile)
    message = str(caught.value)
    assert "2 DICOM series of patient 'patient03' match the NCCT channel" in message
    for name in ("NCCT", "thin"):
        assert uid_of(written[name][0]) in message and str(written[name][0].parent) in message


def test_asking_for_fewer_channels_does_not_need_the_others(tmp_path):
    write_patient(tmp_path / "data" / "patient04", mixed=True, skip=("CBV", "MTT"))
    out = tmp_path / "datalist.json"
    prepared = prepare_dataset(tmp_path / "data", out, channels="NCCT,CBF,Tmax", log=lambda _: None)
    assert prepared.datalist["channels"] == ["NCCT", "CBF", "Tmax"]


def test_a_colour_map_is_refused_naming_the_series(tmp_path, profile):
    write_patient(tmp_path / "patient05", mixed=True, skip=("CBF",))
    ds = pydicom.dcmread(tmp_path / "patient05" / "S0_0")  # an NCCT slice, made a colour CBF series
    ds.SeriesInstanceUID, ds.SeriesDescription, ds.SOPInstanceUID = generate_uid(), "RAPID CBF", generate_uid()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((32, 32, 3), np.uint8).tobytes()
    ds.save_as(tmp_path / "patient05" / "rgb0", enforce_file_format=True)
    with pytest.raises(CaseError, match="colour images"):
        discover(tmp_path, profile)


def test_maps_in_another_frame_of_reference_are_refused(tmp_path, profile):
    written = write_patient(tmp_path / "patient06", mixed=True)
    for path in written["MTT"]:
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = generate_uid()
        ds.save_as(path)
    with pytest.raises(CaseError, match="MTT series .* another frame of reference"):
        discover(tmp_path, profile)


def test_a_patient_folder_name_must_be_a_plain_file_name(tmp_path, profile):
    write_patient(tmp_path / "patient 08 ", mixed=True)
    with pytest.raises(CaseError, match="ends in whitespace"):
        discover(tmp_path, profile)


def test_profile_patterns_are_checked_and_old_profiles_have_none(tmp_path):
    assert load_profile("isles2024").dicom_series_patterns("Tmax") == ([], [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("default_channels: [CBF]\nmodalities:\n  CBF: {dicom: {series_description: ['(?i)cbf(']}}\n")
    with pytest.raises(ValueError, match="not a regular expression"):
        load_profile(bad)


# --------------------------------------------------------------------------------------------------------------------
# Reading a series through the project's readers
# --------------------------------------------------------------------------------------------------------------------
def sitk_series(files) -> sitk.Image:
    folder = Path(files[0]).parent
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid_of(files[0])))
    return reader.Execute()


@pytest.mark.parametrize("directions,descending", [(AXIAL, False), (OBLIQUE_FLIPPED, True)],
                         ids=["axial", "oblique, flipped, descending"])
def test_a_series_in_a_mixed_folder_reads_with_its_own_geometry(tmp_path, profile, directions, descending):
    written = write_patient(tmp_path / "patient01", mixed=True, directions=directions, descending=descending)
    (record,) = discover(tmp_path, profile)
    path = record.modalities["Tmax"]
    expected = sitk_series(written["Tmax"])
    geometry = read_geometry(path)
    assert geometry.spatial_shape == (32, 32, 4)
    np.testing.assert_allclose(geometry.affine, _sitk_affine(expected), atol=1e-6)
    np.testing.assert_allclose(geometry.spacing, (0.9, 0.8, 5.0), atol=1e-6)
    values = tmax_values(4)  # the Tmax series is the fifth written
    along_normal = values[::-1] if descending else values
    np.testing.assert_allclose(read_array(path), np.transpose(along_normal, (2, 1, 0)), atol=1e-9)
    loaded = LoadModalitiesd("image", channels=["Tmax"], label_key=None)({"case_id": "p", "image": [path]})["image"]
    np.testing.assert_allclose(loaded[0].numpy(), np.transpose(along_normal, (2, 1, 0)), atol=1e-4)
    np.testing.assert_allclose(loaded.affine.numpy(), geometry.affine, atol=1e-5)
    with pytest.raises(ValueError, match="holds 6 DICOM series"):
        read_geometry(tmp_path / "patient01")


def test_prepare_and_loading_stack_the_maps_on_the_ncct_grid(tmp_path):
    data = tmp_path / "data"
    for i, directions in enumerate((AXIAL, OBLIQUE_FLIPPED)):
        write_patient(data / f"patient{i + 1}", mixed=bool(i), directions=directions, patient_id=f"P{i}")
    out = tmp_path / "datalist.json"
    prepared = prepare_dataset(data, out, log=lambda _: None)
    assert prepared.layout == "dicom" and prepared.profile.name == "dicom_ctp"
    records = load_datalist(out, "testing")
    assert [r["case_id"] for r in records] == ["patient1", "patient2"]
    record = records[1]
    assert reference_series_files(record) == dicom_series_files(record["reference"])
    profile = prepared.profile
    loader = LoadModalitiesd("image", channels=profile.channels, label_key=None,
                             resample_to_reference=profile.resample_to_reference)
    image = loader({**record, "image": record["image"]})["image"]
    assert image.shape == (5, 32, 32, 4)
    np.testing.assert_allclose(image.affine.numpy(), read_geometry(record["reference"]).affine, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# The DICOM Segmentation
# --------------------------------------------------------------------------------------------------------------------
def lesion_on(shape_xyz) -> np.ndarray:
    """An asymmetric mask: any flip or transposition of an axis changes it."""
    mask = np.zeros(shape_xyz, np.uint8)
    mask[3:9, 20:24, 1] = 1
    mask[5, 6, 2] = 1
    mask[25:30, 2:4, 2] = 1
    return mask


@pytest.mark.parametrize("directions,descending", [(AXIAL, False), (OBLIQUE_FLIPPED, True)],
                         ids=["axial", "oblique, flipped, descending"])
def test_the_segmentation_frames_land_on_their_source_instances(tmp_path, directions, descending):
    files = write_series(tmp_path / "ncct", ct_values(), "NCCT", directions=directions, descending=descending)
    series = dicom_series_files(files[0])  # the order the readers stack the slices in
    mask = lesion_on(read_array(files[0]).shape)
    out = tmp_path / "out" / "patient01_seg.dcm"
    given = series[::-1]  # the writer places each file by its own position, whatever order it is given in
    assert write_segmentation(mask, given, out, model_name="isles_unetplusplus", model_version="test") == out
    assert [p.name for p in out.parent.iterdir()] == [out.name]

    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == STUDY_UID and seg.PatientID == "P001"
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "infarct"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "55641003"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "isles_unetplusplus"
    sources = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in series)}
    slice_of = {str(pydicom.dcmread(p).SOPInstanceUID): k for k, p in enumerate(series)}
    assert seg.NumberOfFrames == 2  # the two slices that hold lesion
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in sources[uid].ImagePositionPatient], atol=1e-4)
    uids = list(slice_of)
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1], assert_missing_frames_are_empty=True)
    for uid, frame in zip(uids, pixels[..., 0]):
        np.testing.assert_array_equal(frame, mask[:, :, slice_of[uid]].T)


def test_an_empty_mask_gives_a_segmentation_of_empty_frames(tmp_path):
    files = write_series(tmp_path / "ncct", ct_values(), "NCCT")
    out = write_segmentation(np.zeros((32, 32, 4), bool), files, tmp_path / "seg.dcm", model_name="m",
                             model_version="1")
    seg = hd.seg.segread(out)
    assert seg.NumberOfFrames == 4 and not seg.pixel_array.any()


def test_the_segmentation_refuses_a_mask_off_the_grid_or_not_binary(tmp_path):
    files = write_series(tmp_path / "ncct", ct_values(), "NCCT")
    with pytest.raises(CaseError, match="shape"):
        write_segmentation(np.zeros((32, 32, 3)), files, tmp_path / "seg.dcm", model_name="m", model_version="1",
                           case_id="p1")
    with pytest.raises(CaseError, match="mask"):
        write_segmentation(np.full((32, 32, 4), 2), files, tmp_path / "seg.dcm", model_name="m", model_version="1")
    with pytest.raises(CaseError, match="every file of the reference series"):
        write_segmentation(np.zeros((32, 32, 4)), files[:3], tmp_path / "seg.dcm", model_name="m", model_version="1")
    assert not (tmp_path / "seg.dcm").exists()


# --------------------------------------------------------------------------------------------------------------------
# The clinical summary
# --------------------------------------------------------------------------------------------------------------------
def test_the_summary_volumes_of_a_known_mask(tmp_path):
    spacing = (0.8, 0.9, 5.0)  # 3.6 mm3 = 0.0036 mL per voxel
    core = np.zeros((32, 32, 4), np.uint8)
    core[0:10, 0:10, 1] = 1  # 100 voxels
    tmax = np.zeros((32, 32, 4))
    tmax[0:10, 0:25, 1] = 7.5  # 250 voxels above 6 s
    tmax[20:30, 20:30, 2] = 6.0  # not above
    tmax[31, 31, 3] = np.nan
    summary = clinical_summary("patient01", core, tmax, spacing)
    assert summary.core_ml == pytest.approx(0.36)
    assert summary.hypoperfusion_ml == pytest.approx(0.9)
    assert summary.mismatch_ml == pytest.approx(0.54)
    assert summary.mismatch_ratio == pytest.approx(2.5)
    path = write_summary_json(summary, tmp_path / "patient01_summary.json")
    written = json.loads(path.read_text())
    assert written["core_ml"] == pytest.approx(0.36) and written["tmax_threshold_s"] == 6.0
    assert not any(is_partial_file(p) for p in tmp_path.iterdir())


def test_an_empty_core_has_no_mismatch_ratio(tmp_path):
    tmax = np.full((8, 8, 2), 8.0)
    summary = clinical_summary("p", np.zeros((8, 8, 2)), tmax, (1.0, 1.0, 1.0))
    assert summary.core_ml == 0 and summary.hypoperfusion_ml == pytest.approx(0.128)
    assert summary.mismatch_ratio is None
    assert json.loads(write_summary_json(summary, tmp_path / "s.json").read_text())["mismatch_ratio"] is None


def test_the_summary_figure_shows_the_slices_with_most_lesion(tmp_path):
    core = np.zeros((32, 32, 6), np.uint8)
    core[:10, :10, 4] = 1
    core[:5, :5, 1] = 1
    core[:2, :2, 2] = 1
    core[:1, :1, 5] = 1
    assert key_slices(core, count=3) == [1, 2, 4]
    assert key_slices(np.zeros_like(core), core, count=1) == [4]
    assert key_slices(np.zeros_like(core)) == [3]
    tmax = np.where(core > 0, 9.0, 1.0)
    summary = clinical_summary("patient01", core, tmax, (0.8, 0.9, 5.0))
    png = write_summary_figure(summary, np.full(core.shape, 30.0), core, tmax, tmp_path / "patient01_summary.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == [png.name]


def test_a_map_read_on_the_ncct_grid(tmp_path):
    ncct = write_series(tmp_path / "ncct", ct_values(), "NCCT")
    tmax = np.full((2, 16, 16), 8.0)  # covers the NCCT's first two slices and its first 16 rows and columns
    write_series(tmp_path / "tmax", tmax, "Tmax", slope=0.1, intercept=0.0)
    on_grid = read_on_grid(tmp_path / "tmax", ncct[0])
    assert on_grid.shape == (32, 32, 4)
    assert np.allclose(on_grid[:15, :15, :2], 8.0)
    assert np.allclose(on_grid[17:], 0.0) and np.allclose(on_grid[:, 17:], 0.0) and np.allclose(on_grid[:, :, 2:], 0.0)


def test_a_dicom_folder_goes_in_and_a_segmentation_and_clinical_summary_come_out(tmp_path, capsys, tiny_ctp_model):
    """prepare reads the patient's series, predict --format dicom-seg writes the DICOM Segmentation (read back: on the
    NCCT's instances, voxel for voxel the NIfTI mask), the summary JSON (its volumes from the mask) and the PNG."""
    from pipeline.__main__ import main

    bundle = Path(__file__).resolve().parents[1] / "bundles" / "isles_unetplusplus"
    patient = tmp_path / "dicom" / "patient_1"
    ct = ct_values()
    write_series(patient / "ncct", ct, "Head NCCT 5mm")
    for seed, (modality, description) in enumerate(PERFUSION.items(), start=2):
        values = tmax_values(seed) if modality == "Tmax" else np.random.default_rng(seed).uniform(1, 60, SHAPE_ZYX)
        write_series(patient / modality.lower(), np.round(values, 1), description, slope=0.1, intercept=0.0)
    write_series(patient / "tmax_mask", (tmax_values(9) > 6).astype(float), "Tmax>6s", slope=1.0, intercept=0.0)
    shutil.copytree(patient, tmp_path / "dicom" / "patient_2")
    datalist = tmp_path / "dicom.json"
    assert main(["prepare", "--root", str(tmp_path / "dicom"), "--out", str(datalist), "--folds", "1"]) == 0
    written = json.loads(datalist.read_text())
    assert (written["layout"], written["channels"]) == ("dicom", ["NCCT", "CBF", "CBV", "MTT", "Tmax"])
    # after prepare, patient_2's NCCT series gains a slice: its Segmentation would reference another series than
    # the one prepare recorded, so that patient fails, named, and patient_1 goes on
    last = pydicom.dcmread(sorted((tmp_path / "dicom" / "patient_2" / "ncct").iterdir())[-1])
    last.SOPInstanceUID = last.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    last.ImagePositionPatient = [*last.ImagePositionPatient[:2], float(last.ImagePositionPatient[2]) + 5.0]
    last.InstanceNumber = 5
    last.save_as(tmp_path / "dicom" / "patient_2" / "ncct" / "IM4", enforce_file_format=True)
    run = tiny_ctp_model
    out = tmp_path / "out"
    assert main(["predict", "--in-process", "--bundle", str(bundle), "--input", str(datalist), "--model", str(run),
                 "--output", str(out), "--format", "dicom-seg", "--postprocessing", "none"]) == 2
    names = sorted(p.name for p in out.iterdir())
    assert names == ["failures.csv", "manifest.csv", "patient_1.nii.gz", "patient_1_seg.dcm", "patient_1_summary.dcm",
                     "patient_1_summary.json",
                     "patient_1_summary.png"]
    failures = (out / "failures.csv").read_text()
    assert "patient_2" in failures and "prepare recorded" in failures
    manifest = {row.split(",")[1]: row for row in (out / "manifest.csv").read_text().splitlines()[1:]}
    assert ",failed," in manifest["patient_2"] and ",written," in manifest["patient_1"]
    # NIfTI input is refused before any work, with a message and no traceback
    capsys.readouterr()
    assert main(["predict", "--bundle", str(bundle), "--input", str(run.parent / "synth.json"), "--model", str(run),
                 "--output", str(tmp_path / "refused"), "--format", "dicom-seg"]) == 2
    said = capsys.readouterr().err
    assert "dicom-seg writes DICOM Segmentations" in said and "Traceback" not in said
    assert not (tmp_path / "refused").exists()
    mask = np.asarray(nib.load(out / "patient_1.nii.gz").dataobj)
    assert mask.shape == (32, 32, 4) and set(np.unique(mask)) <= {0, 1}
    seg = hd.seg.segread(out / "patient_1_seg.dcm")
    ncct_files = sorted((patient / "ncct").iterdir())
    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in ncct_files}
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == set(sources)
    assert seg.SegmentSequence[0].SegmentLabel == "infarct"
    # every frame of the Segmentation, put back on its source slice, is the NIfTI mask's slice there
    geometry = read_geometry(ncct_files[0])
    frames = seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None]
    rebuilt = np.zeros_like(mask)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = np.asarray(pydicom.dcmread(sources[source], stop_before_pixels=True).ImagePositionPatient, float)
        lps_to_voxel = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ geometry.affine)
        z = int(round((lps_to_voxel @ np.append(position, 1.0))[2]))
        rebuilt[:, :, z] = np.asarray(frame).T
    assert np.array_equal(rebuilt, mask)
    summary = json.loads((out / "patient_1_summary.json").read_text())
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    assert summary["core_ml"] == pytest.approx(mask.sum() * voxel_ml)
    tmax = tmax_values(5)  # the Tmax series above, on the NCCT's grid; a value of 6.0 may round either way
    assert (tmax > 6.05).sum() * voxel_ml - 1e-9 <= summary["hypoperfusion_ml"] <= (tmax > 5.95).sum() * voxel_ml + 1e-9
    assert summary["mismatch_ml"] == pytest.approx(summary["hypoperfusion_ml"] - summary["core_ml"])
