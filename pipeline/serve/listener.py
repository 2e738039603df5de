"""Studies in by DICOM C-STORE: a storage SCP (pynetdicom) that spools each instance into its study's job.

Only associations from the configured calling AE titles are accepted (pynetdicom's ``require_calling_aet``: any
other is rejected with "calling AE title not recognised"), and the listener binds to 127.0.0.1 unless told
otherwise. Each instance is written durably (temporary file, fsync, rename) into the job of its StudyInstanceUID and
recorded in the queue before the C-STORE is answered with success, so an instance the PACS was told is stored is on
disk. A study's job is queued when no instance of it has come for the stable time (Orthanc's "stable study").

Objects that are results rather than images (Segmentations, structured reports, presentation states, PDFs, and
anything this service wrote itself) are acknowledged and not kept: a PACS that routes a study's new objects back
would otherwise start a new job with every result the service sends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from pipeline.dicom.seg import SOFTWARE_NAME
from pipeline.serve.jobs import JobQueue
from pipeline.serve.studies import JobFolders, link_instances, relative_instance_path, write_instance

LOG = logging.getLogger("pipeline.serve")

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
# SOP classes that are not images to segment: Segmentation, structured reports, key objects, presentation states,
# encapsulated documents, RT structures.
_NOT_IMAGE_CLASS_PREFIXES = ("1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.88", "1.2.840.10008.5.1.4.1.1.11",
                             "1.2.840.10008.5.1.4.1.1.104", "1.2.840.10008.5.1.4.1.1.481")


def is_result_object(dataset) -> bool:
    """True for an object that is not an image to segment (see the module docstring), or one this service wrote."""
    sop_class = str(dataset.get("SOPClassUID", ""))
    return sop_class.startswith(_NOT_IMAGE_CLASS_PREFIXES) or str(dataset.get("Manufacturer", "")) == SOFTWARE_NAME


class StudyListener:
    """A C-STORE SCP that files instances into jobs of :class:`JobQueue`.

    Args:
        queue: the job queue.
        state_dir: the service's state folder (the jobs' input folders).
        ae_title: this service's AE title.
        allowed_calling: the calling AE titles accepted (at least one).
        host, port: where to listen (port 0: a free port, see :attr:`port`).
    """

    def __init__(self, queue: JobQueue, state_dir, ae_title: str, allowed_calling: Sequence[str],
                 host: str = "127.0.0.1", port: int = 11112) -> None:
        if not allowed_calling:
            raise ValueError("name the calling AE titles the service accepts studies from (serve --allow-ae)")
        self.queue = queue
        self.state_dir = state_dir
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.ae.require_calling_aet = list(allowed_calling)
        self.ae.maximum_pdu_size = 0
        self.host, self.requested_port = host, port
        self.server = None

    @property
    def port(self) -> int:
        """The port listened on (the one given, or the free one chosen for port 0)."""
        return int(self.server.server_address[1]) if self.server is not None else self.requested_port

    def start(self) -> None:
        """Listen in the background (pynetdicom's threads).

        Raises:
            OSError: the address cannot be bound (in use, not allowed).
        """
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, self._on_rejected)]
        self.server = self.ae.start_server((self.host, self.requested_port), block=False, evt_handlers=handlers)

    def stop(self) -> None:
        """Stop listening and close open associations."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_rejected(self, event) -> None:
        requestor = event.assoc.requestor
        LOG.warning("association from %s (calling AE %r) rejected: AE title not accepted", requestor.address,
                    requestor.ae_title)

    def _on_store(self, event) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            dataset = event.dataset
            study_uid = str(dataset.StudyInstanceUID)
            series_uid = str(dataset.SeriesInstanceUID)
            sop_uid = str(dataset.SOPInstanceUID)
        except Exception as err:  # noqa: BLE001 - a dataset pydicom cannot decode, or one without its UIDs
            LOG.warning("instance from %r refused: cannot read its study, series and instance UIDs (%s)", calling, err)
            return STATUS_CANNOT_UNDERSTAND
        if is_result_object(dataset):
            LOG.info("instance %s of study %s from %r not kept: not an image to segment", sop_uid, study_uid, calling)
            return STATUS_SUCCESS
        try:
            self.store(study_uid, series_uid, sop_uid, event.encoded_dataset(include_meta=True), f"dicom:{calling}")
        except OSError as err:
            LOG.error("instance %s of study %s not stored: %s", sop_uid, study_uid, err)
            return STATUS_OUT_OF_RESOURCES
        return STATUS_SUCCESS

    def store(self, study_uid: str, series_uid: str, sop_uid: str, encoded: bytes, source: str) -> int:
        """File one instance into its study's receiving job (a new job when the study has none receiving, given the
        instances of the study's earlier job). Returns the job's number.

        Raises:
            OSError: the instance cannot be written.
        """
        while True:
            job, earlier = self.queue.receiving_job(study_uid, source)
            folders = JobFolders(self.state_dir, job.id)
            if earlier is not None:
                link_instances(JobFolders(self.state_dir, earlier.id), folders,
                               list(self.queue.instance_paths(earlier.id).values()))
                LOG.info("job %d: study %s again, after job %d (%s): a new job with its %d instances", job.id,
                         study_uid, earlier.id, earlier.state, job.instances)
            elif job.instances == 0:
                LOG.info("job %d: receiving study %s from %s", job.id, study_uid, source)
            path = write_instance(folders, series_uid, sop_uid, encoded)
            if self.queue.record_instance(job.id, sop_uid, series_uid, relative_instance_path(folders, path)):
                return job.id
            # the job was queued between the two steps: the instance goes to the study's next job
