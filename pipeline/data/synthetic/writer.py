"""The synthetic dataset writer: per patient one phantom, its slabs written in a release layout.

ISLES 2018 (the default): ``TRAINING/``, ``TESTING/`` (without labels), the test labels in ``TESTING_GROUND_TRUTH/``
with its ``cases.csv``, with the ISLES 2018 folder and file names and dtypes. ISLES 2024: one subject per patient
(one slab each) in ``raw_data/`` and ``derivatives/``, the test subjects without their follow-up mask, which goes to
``TESTING_GROUND_TRUTH/<subject>.nii.gz``. Both write the per-case table ``synth_cases.csv``. Every random draw comes
from a generator spawned from the seed for its purpose (plans, SMIR ids, each patient), so the same seed writes
byte-identical files with the same numpy release (another may change the last bits of the float64 maps).
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pipeline.baseline import threshold_rule
from pipeline.data.synthetic.acquisition import DEFAULT_PHANTOM, PHANTOMS, AcquisitionSettings
from pipeline.data.synthetic.geometry import plan_patients
from pipeline.data.synthetic.imaging import MODALITIES, PWI_FRAME_INTERVAL_S
from pipeline.data.synthetic.patients import render_patient
from pipeline.formats import (
    GROUND_TRUTH_COLUMNS, GROUND_TRUTH_CSV, GROUND_TRUTH_FOLDER, ISLES2018_SPLIT_FOLDERS,
    ISLES2024_CONTAINER_TEST_FOLDER, ISLES2024_DERIVATIVES, ISLES2024_LABEL_SUFFIX, ISLES2024_RAW_FOLDERS,
    SYNTHETIC_TABLE_CSV, case_file_name, ground_truth_row, isles2018_case_folder, isles2018_folder_name,
    isles2018_image_name, isles2024_container_input, isles2024_file, isles2024_subject,
)
from pipeline.io import atomic_path, atomic_write_json, atomic_write_text, save_nifti_atomic
from pipeline.metrics import dice_score

__all__ = [
    "CASE_TABLE_CSV",
    "GROUND_TRUTH_COLUMNS",
    "GROUND_TRUTH_CSV",
    "GROUND_TRUTH_FOLDER",
    "TESTING_FOLDER",
    "TRAINING_FOLDER",
    "SynthSummary",
    "write_synthetic_dataset",
]

# On-disk names of the synthetic dataset (the ISLES 2018 release layout plus the synthetic extras): written and
# parsed in pipeline.formats.
TRAINING_FOLDER = ISLES2018_SPLIT_FOLDERS["training"]
TESTING_FOLDER = ISLES2018_SPLIT_FOLDERS["testing"]
CASE_TABLE_CSV = SYNTHETIC_TABLE_CSV


@dataclass
class SynthSummary:
    """What :func:`write_synthetic_dataset` wrote.

    Attributes:
        root: the dataset folder.
        files: every file written, in order.
        table_csv: ``synth_cases.csv``, the per-case table.
        ground_truth_csv: ``TESTING_GROUND_TRUTH/cases.csv`` (``None`` without test cases).
        cases: the per-case table as a list of dicts (split, case_id, patient_id, slab, n_slices,
            thickness_mm, spacing_mm, lesion_ml, territory, hemisphere, cbf_scale, cbv_scale,
            smir_<MOD> ids, threshold_dice; for the realistic phantom also phantom, site,
            noise_factor, smoothing_mm, growth_fraction, shift_x_mm, shift_y_mm, rotation_deg,
            border_mm).
    """

    root: Path
    files: list[Path]
    table_csv: Path
    ground_truth_csv: Path | None
    cases: list[dict[str, Any]]

    def mean_threshold_dice(self, split: str | None = "training") -> float:
        """Mean Dice of the clinical threshold rule over the cases of ``split`` (all when ``None``)."""
        values = [c["threshold_dice"] for c in self.cases if split is None or c["split"] == split]
        return float(np.mean(values)) if values else float("nan")


# the layouts synth writes, and the folders and files each owns (an --overwrite removes them)
SYNTHETIC_LAYOUTS = ("isles2018", "isles2024")
_OWNED = {"isles2018": (TRAINING_FOLDER, TESTING_FOLDER, GROUND_TRUTH_FOLDER, CASE_TABLE_CSV),
          "isles2024": (ISLES2024_RAW_FOLDERS[0], ISLES2024_DERIVATIVES, GROUND_TRUTH_FOLDER,
                        ISLES2024_CONTAINER_TEST_FOLDER, CASE_TABLE_CSV)}
# ISLES 2024 channel files: the phantom's image of each (the NCCT is the CT; the maps lie on its grid already)
_ISLES2024_IMAGES = {"ncct": "CT", "cbf": "CT_CBF", "cbv": "CT_CBV", "mtt": "CT_MTT", "tmax": "CT_Tmax"}
_TABLE_COLUMNS = (
    "split", "case_id", "patient_id", "slab", "n_slices", "thickness_mm", "spacing_mm", "lesion_ml",
    "territory", "hemisphere", "cbf_scale", "cbv_scale",
    *(f"smir_{m}" for m in MODALITIES), "threshold_dice",
)
# The realistic phantom's drawn acquisition parameters, appended to the table (the classic table is unchanged).
_ACQUISITION_COLUMNS = (
    "phantom", "site", "noise_factor", "smoothing_mm", "growth_fraction", "keep_fraction", "shift_x_mm", "shift_y_mm", "rotation_deg",
    "border_mm",
)


def _acquisition_row(phantom: Any, slab_index: int) -> dict[str, Any]:
    """The realistic phantom's drawn parameters of one slab, as table columns."""
    drawn = phantom.acquisition
    site = drawn.site
    dx, dy, angle = drawn.slabs[slab_index]
    return {
        "phantom": "realistic",
        "site": site.name if site is not None else "",
        "noise_factor": site.noise_factor if site is not None else 1.0,
        "smoothing_mm": site.smoothing_mm if site is not None else 0.0,
        "growth_fraction": drawn.growth_fraction,
        "keep_fraction": drawn.keep_fraction,
        "shift_x_mm": dx,
        "shift_y_mm": dy,
        "rotation_deg": angle,
        "border_mm": drawn.border_mm,
    }


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4:
        image.header.set_zooms(tuple(image.header.get_zooms()[:3]) + (PWI_FRAME_INTERVAL_S,))
    return image


def _csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def _write_isles2024_case(root: Path, subject: str, split: str, slab: Any, affine: np.ndarray) -> list[Path]:
    """One subject in the ISLES 2024 layout: the NCCT, the four maps on its grid, and the follow-up lesion mask
    (under ``derivatives/`` for training, in ``TESTING_GROUND_TRUTH/`` for testing). Returns the files written."""
    files = [save_nifti_atomic(_nifti(slab.images[image], affine), root / isles2024_file(subject, suffix))
             for suffix, image in _ISLES2024_IMAGES.items()]
    label = root / (isles2024_file(subject, ISLES2024_LABEL_SUFFIX) if split == "training"
                    else Path(GROUND_TRUTH_FOLDER, case_file_name(subject)))
    files.append(save_nifti_atomic(_nifti(slab.images["OT"], affine), label))
    if split == "testing":
        files += _write_isles2024_container_input(root, subject, files[: len(_ISLES2024_IMAGES)])
    return files


def _write_isles2024_container_input(root: Path, subject: str, images: list[Path]) -> list[Path]:
    """A test subject as the challenge container receives it: each channel as ``.mha`` (with the NIfTI's geometry,
    through SimpleITK) under ``TESTING_CONTAINER_INPUT/<subject>/images/<slug>/<subject>.mha``. Returns the files."""
    written = []
    for (suffix, _), source in zip(_ISLES2024_IMAGES.items(), images):
        modality = "NCCT" if suffix == "ncct" else {"cbf": "CBF", "cbv": "CBV", "mtt": "MTT", "tmax": "Tmax"}[suffix]
        target = root / ISLES2024_CONTAINER_TEST_FOLDER / subject / isles2024_container_input(modality, f"{subject}.mha")
        image = sitk.ReadImage(str(source))
        plain = sitk.GetImageFromArray(sitk.GetArrayFromImage(image))  # the grid without the NIfTI header's fields
        plain.CopyInformation(image)
        with atomic_path(target) as tmp:
            sitk.WriteImage(plain, str(tmp), useCompression=True)
        written.append(target)
    return written


def write_synthetic_dataset(
    out: str | Path,
    cases: int,
    test_cases: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    phantom: str = DEFAULT_PHANTOM,
    acquisition: AcquisitionSettings | None = None,
    layout: str = "isles2018",
) -> SynthSummary:
    """Write a synthetic dataset in the ISLES 2018 layout (or the ISLES 2024 one).

    Layout: ``OUT/TRAINING/case_N/SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii`` for
    MOD in CT, CT_4DPWI, CT_CBF, CT_CBV, CT_MTT, CT_Tmax, OT (the OT folder also holds a JSON whose
    ``description`` is ``Train_<patient>_<slab>``); ``OUT/TESTING/case_N/...`` without OT; the test
    labels in ``OUT/TESTING_GROUND_TRUTH/case_N/SMIR.Brain.XX.O.OT.<id>/`` with ``cases.csv``
    (case_id, ot_id, mtt_id, patient_id); ``OUT/synth_cases.csv``, the per-case table. SMIR ids are
    6-digit, unique over the dataset. The same seed writes byte-identical files with the same numpy release.

    ``layout="isles2024"`` writes the same phantoms, one slab per patient, as ISLES 2024 subjects
    (``sub-stroke0001``, ..., test subjects numbered after the training ones): ``raw_data/<sub>/ses-01/
    <sub>_ses-01_ncct.nii.gz`` (the phantom's CT), ``derivatives/<sub>/ses-01/perfusion-maps/
    <sub>_ses-01_space-ncct_{cbf,cbv,mtt,tmax}.nii.gz`` and, for training subjects, ``derivatives/<sub>/ses-02/
    <sub>_ses-02_lesion-msk.nii.gz``; the test subjects' masks go to ``TESTING_GROUND_TRUTH/<sub>.nii.gz`` (a
    folder of case-id masks, as ``evaluate --truth`` reads it). The slabs stand in for the whole-brain NCCT of the
    real data; the CTA and the 4D CTP are not written.

    The ``realistic`` phantom (the default) labels what a DWI after the CTP shows: the infarct grown
    into part of the penumbra (or, reperfused, shrunk), misregistered to the slab and drawn with a
    rater's border noise, with a hypoperfused region several times the core and per-site map units,
    noise and smoothing (:mod:`.acquisition`); the drawn parameters are columns of
    ``synth_cases.csv``. The ``classic`` phantom labels the CTP phantom's own tissue fate and writes
    the files of the code before those mechanisms, byte for byte.

    Args:
        out: the dataset folder (created when missing).
        cases: number of training slabs (cases), >= 1.
        test_cases: number of test slabs; default ``max(1, cases // 3)``.
        seed: random seed.
        overwrite: when the folder already holds TRAINING/, TESTING/ or TESTING_GROUND_TRUTH/,
            remove those and synth_cases.csv first instead of refusing.
        phantom: ``"realistic"`` or ``"classic"`` (:data:`~pipeline.data.synthetic.acquisition.PHANTOMS`).
        acquisition: which mechanisms the realistic phantom applies (default: all); ignored by
            the classic phantom.
        layout: ``"isles2018"`` or ``"isles2024"`` (:data:`SYNTHETIC_LAYOUTS`).

    Returns:
        A :class:`SynthSummary` of the files and cases written.

    Raises:
        ValueError: ``cases`` < 1 or ``test_cases`` < 0, ``phantom`` or ``layout`` is unknown, or the folder
            already holds a dataset and ``overwrite`` is false.
    """
    if phantom not in PHANTOMS:
        raise ValueError(f"unknown phantom {phantom!r}; choose from {', '.join(PHANTOMS)}")
    if layout not in SYNTHETIC_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; synth writes {', '.join(SYNTHETIC_LAYOUTS)}")
    isles2024 = layout == "isles2024"
    realistic = phantom == "realistic"
    settings = (acquisition or AcquisitionSettings()) if realistic else None
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if test_cases is None:
        test_cases = max(1, cases // 3)
    if test_cases < 0:
        raise ValueError(f"test_cases must be >= 0, got {test_cases}")
    root = Path(out)
    existing = [name for name in _OWNED[layout] if name != CASE_TABLE_CSV and (root / name).exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{root} already contains {', '.join(n + '/' for n in existing)}; "
            "choose an empty folder or pass overwrite=True (--overwrite) to replace the synthetic dataset"
        )
    if overwrite:
        for name in _OWNED[layout]:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)

    splits = (("training", TRAINING_FOLDER, "Train", cases), ("testing", TESTING_FOLDER, "Test", test_cases))
    plans = {
        split: plan_patients(n, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i))),
                             two_slabs=not isles2024)
        for i, (split, _, _, n) in enumerate(splits)
    }
    n_folders = cases * len(MODALITIES) + test_cases * len(MODALITIES)
    id_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    next_id = int(id_rng.integers(100000, max(100001, 999999 - n_folders)))

    files: list[Path] = []
    table: list[dict[str, Any]] = []
    truth_rows: list[dict[str, Any]] = []
    for split_index, (split, folder, prefix, _) in enumerate(splits):
        case_number = 0
        for patient_number, plan in enumerate(plans[split], start=1):
            patient_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2 + split_index, patient_number)))
            acquisition_seed = np.random.SeedSequence(seed, spawn_key=(2 + split_index, patient_number, 1))
            patient, slabs = render_patient(plan, patient_rng, settings, acquisition_seed)
            for slab_index, (slab_letter, slab) in enumerate(zip("AB", slabs)):
                case_number += 1
                affine = slab.geometry.affine
                ids: dict[str, int] = {}
                if isles2024:
                    case_id = patient_id = isles2024_subject(case_number + (cases if split == "testing" else 0))
                    files += _write_isles2024_case(root, case_id, split, slab, affine)
                    modalities = ()
                else:
                    case_id, patient_id, modalities = isles2018_case_folder(case_number), f"{prefix}_{patient_number}", MODALITIES
                for modality in modalities:
                    ids[modality] = next_id
                    next_id += 1
                    name = isles2018_folder_name(modality, ids[modality])
                    case_dir = root / (folder if modality != "OT" or split == "training" else GROUND_TRUTH_FOLDER) / case_id
                    path = case_dir / name / isles2018_image_name(modality, ids[modality])
                    image = slab.images[modality]
                    files.append(save_nifti_atomic(_nifti(image, affine), path))
                    if modality == "OT":
                        description = f"{prefix}_{patient_number}_{slab_letter}"
                        files.append(
                            atomic_write_json(
                                path.with_suffix(".json"),
                                {"description": description, "patient_id": patient_id, "slab": slab_letter,
                                 "case_id": case_id, "source": "synthetic phantom"},
                            )
                        )
                prediction = threshold_rule(slab.images["CT_CBF"], slab.images["CT_Tmax"])
                table.append(
                    {
                        "split": split,
                        "case_id": case_id,
                        "patient_id": patient_id,
                        "slab": slab_letter,
                        "n_slices": slab.geometry.n_slices,
                        "thickness_mm": slab.geometry.thickness_mm,
                        "spacing_mm": slab.geometry.spacing_mm,
                        "lesion_ml": round(slab.lesion_ml, 3),
                        "territory": patient.territory,
                        "hemisphere": patient.hemisphere,
                        "cbf_scale": patient.cbf_scale,
                        "cbv_scale": patient.cbv_scale,
                        **{f"smir_{m}": ids[m] for m in ids},
                        "threshold_dice": round(dice_score(prediction, slab.label), 4),
                        **(_acquisition_row(patient, slab_index) if realistic else {}),
                    }
                )
                if split == "testing" and not isles2024:
                    truth_rows.append(ground_truth_row(case_id, ids["OT"], ids["CT_MTT"], patient_id))

    ground_truth_csv = None
    if truth_rows:
        ground_truth_csv = atomic_write_text(
            root / GROUND_TRUTH_FOLDER / GROUND_TRUTH_CSV, _csv_text(truth_rows, GROUND_TRUTH_COLUMNS)
        )
        files.append(ground_truth_csv)
    columns = _TABLE_COLUMNS + (_ACQUISITION_COLUMNS if realistic else ())
    table_csv = atomic_write_text(root / CASE_TABLE_CSV, _csv_text(table, columns))
    files.append(table_csv)
    return SynthSummary(root=root, files=files, table_csv=table_csv, ground_truth_csv=ground_truth_csv, cases=table)
