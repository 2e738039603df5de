"""``python -m pipeline serve``: the warm hospital service.

Studies come in from a PACS (DICOM C-STORE, :mod:`pipeline.serve.listener`) or a watched folder
(:mod:`pipeline.serve.inbox`), wait in a durable SQLite queue (:mod:`pipeline.serve.jobs`, their files in the state
folder: :mod:`pipeline.serve.studies`), and are predicted one at a time by a warm worker that forks a child per study
(:mod:`pipeline.serve.worker`: ``predict --format dicom-seg``'s own path, in process, with a time and a memory
limit). The DICOM Segmentation and the summary's Secondary Capture go back by C-STORE or STOW-RS
(:mod:`pipeline.serve.sender`, retried with back-off); :mod:`pipeline.serve.status` answers on localhost;
:mod:`pipeline.serve.service` wires them together.
"""
