"""Hospital DICOM: the series of a patient folder, the DICOM Segmentation of a predicted lesion, and the per-patient
clinical summary.

Modules: :mod:`~pipeline.dicom.series` (a folder's image series, read from headers and sorted along the slice
normal; the reference series of a datalist record), :mod:`~pipeline.dicom.seg` (a mask on the reference series'
grid as a DICOM Segmentation object), :mod:`~pipeline.dicom.summary` (core, Tmax > 6 s and mismatch volumes as JSON,
and a one-page figure). ``series`` and ``seg`` need the project's ``dicom`` extra (pydicom, highdicom); importing
this package does not import them.
"""
