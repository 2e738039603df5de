"""``python -m pipeline export``: a bundle with its trained weights as a standalone MONAI model-zoo bundle.

Modules:

- :mod:`~pipeline.export.bundle`: :func:`export_bundle`, the export itself (checks, build in a temporary folder
  beside the output, rename into place);
- :mod:`~pipeline.export.vendoring`: the import closure of the project code the configs name, copied as the
  bundle's ``scripts`` package, and the configs' names rewritten to it;
- :mod:`~pipeline.export.settings`: the dataset profile, the trained network's settings and channels baked into
  the configs;
- :mod:`~pipeline.export.weights`: ``models/model.pt``, ``models/model.ts`` (MONAI's ``ckpt_export``) and the
  score the training run recorded;
- :mod:`~pipeline.export.metadata`: ``metadata.json``: version, changelog, scores, pinned requirements;
- :mod:`~pipeline.export.docs`: ``large_files.yml`` and ``docs/README.md``.
"""

from __future__ import annotations

from pipeline.export.bundle import ExportResult, export_bundle

__all__ = ["ExportResult", "export_bundle"]
