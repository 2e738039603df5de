"""Results out: a job's DICOM objects (the Segmentation and the summary's Secondary Capture) sent to a DICOM node by
C-STORE (pynetdicom) or to a DICOMweb server by STOW-RS (dicomweb-client).

A failed send raises :class:`SendError` with the reason; the service keeps the job in ``sending`` and tries again
after :func:`retry_delay` (doubling, capped), so a PACS that is down loses no result. Sending the same objects twice
is harmless: they keep their SOP Instance UIDs, and a PACS stores an instance it already holds once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from pipeline.formats import DICOM_SIDE_SUFFIXES

# The first retry after this many seconds, doubling with each failed attempt up to RETRY_MAX_SECONDS.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0
_DICOM_NODE = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")
SENT_SUFFIXES = (DICOM_SIDE_SUFFIXES["segmentation"], DICOM_SIDE_SUFFIXES["capture"])


class SendError(RuntimeError):
    """A result could not be sent; the message says where to and why."""


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM node (``ae_title``, ``host``, ``port``) or a DICOMweb service (``url``)."""

    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""

    def __str__(self) -> str:
        return self.url or f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """``AE@host:port`` (DICOM C-STORE) or an ``http(s)://`` DICOMweb base URL (STOW-RS to ``<url>/studies``).

    Raises:
        ValueError: neither form.
    """
    text = str(text).strip()
    if text.startswith(("http://", "https://")):
        return Destination(url=text.rstrip("/"))
    match = _DICOM_NODE.match(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"--send-to {text!r}: give a DICOM node as AE@host:port (e.g. ORTHANC@127.0.0.1:4242) or a "
                         "DICOMweb URL (e.g. http://127.0.0.1:8042/dicom-web)")
    return Destination(ae_title=match["ae"].strip(), host=match["host"], port=int(match["port"]))


def result_objects(output_dir: str | Path) -> list[Path]:
    """The DICOM objects of a job's published results, in name order (the Segmentation and the Secondary Capture
    of each case)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(SENT_SUFFIXES))


def retry_delay(attempts: int, first: float = RETRY_FIRST_SECONDS) -> float:
    """Seconds before the next try after ``attempts`` failed sends: ``first`` (5 by default), doubling with each
    further failure, at most 600."""
    return min(RETRY_MAX_SECONDS, max(float(first), 0.0) * 2 ** max(0, int(attempts) - 1))


def send(destination: Destination, files: Sequence[str | Path], calling_ae_title: str) -> None:
    """Send ``files`` to ``destination`` (all of them, or raise).

    Raises:
        SendError: the destination cannot be reached, refuses the association, or does not store an object.
    """
    datasets = [pydicom.dcmread(f) for f in files]
    if not datasets:
        return
    if destination.url:
        _stow(destination, datasets)
    else:
        _c_store(destination, datasets, calling_ae_title)


def _c_store(destination: Destination, datasets: list, calling_ae_title: str) -> None:
    from pynetdicom import AE
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "could not be reached or aborted"
        raise SendError(f"{destination} {why}")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise SendError(f"{destination} gave no answer to the C-STORE of {ds.SOPInstanceUID}")
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:  # B0xx: stored, with a warning
                raise SendError(f"{destination} did not store {ds.SOPInstanceUID} (status 0x{code:04X})")
    finally:
        assoc.release()


def _stow(destination: Destination, datasets: list) -> None:
    from dicomweb_client.api import DICOMwebClient
    from requests.exceptions import RequestException

    client = DICOMwebClient(url=destination.url, timeout=60)
    client.set_http_retry_params(retry=False)  # the service's own back-off decides when to try again
    try:
        client.store_instances(datasets)
    except (RequestException, OSError) as err:
        raise SendError(f"{destination}: STOW-RS failed ({err})") from err
