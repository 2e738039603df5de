"""The clinical summary page as a DICOM Secondary Capture image (highdicom), so that any PACS viewer shows it beside
the study: the summary PNG's pixels in RGB, in the study of the source series, in a new series of its own."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image

import pipeline
from pipeline.dicom.seg import SOFTWARE_NAME, read_source_header
from pipeline.errors import CaseError
from pipeline.io.atomic import atomic_path

SUMMARY_SERIES_NUMBER = 301
SUMMARY_SERIES_DESCRIPTION = "Infarct summary (AI)"


def write_summary_capture(png_path: str | Path, reference_file: str | Path, out_path: str | Path, *,
                          model_name: str, case_id: str | None = None) -> Path:
    """Write the summary figure as a Secondary Capture image in the study of ``reference_file``, atomically.

    Args:
        png_path: the summary figure (:func:`pipeline.dicom.summary.write_summary_figure`).
        reference_file: one file of the source (NCCT) series: the patient and study are taken from it.
        out_path: the ``.dcm`` file to write.
        model_name: the manufacturer model name (the bundle's name).
        case_id: named in errors.

    Returns:
        ``out_path``.

    Raises:
        CaseError: the figure or the reference header cannot be read.
        OSError: the file cannot be written (nothing is left under ``out_path``).
    """
    try:
        with Image.open(png_path) as image:
            pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    except OSError as err:
        raise CaseError(case_id, str(png_path), f"cannot read the summary figure ({err})") from err
    reference = read_source_header(reference_file, case_id)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=hd.UID(),
        series_number=SUMMARY_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE_NAME,
        patient_orientation=("L", "P"),
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        series_description=SUMMARY_SERIES_DESCRIPTION,
        manufacturer_model_name=model_name,
        software_versions=pipeline.__version__,
    )
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        capture.save_as(tmp, enforce_file_format=True)
    return out_path
