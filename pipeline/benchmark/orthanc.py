"""A local Orthanc PACS for the serve benchmark and tests: Debian's ``orthanc`` (and ``orthanc-dicomweb``) started on
free 127.0.0.1 ports with a JSON configuration in a folder of the caller's, and the few REST calls they make (the
standard library's ``urllib``). ``make test`` installs the packages with apt-get when they are missing."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ORTHANC_PATHS = ("Orthanc", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AE_TITLE = "ORTHANC"


def orthanc_binary() -> str | None:
    """The Orthanc executable, or ``None`` when it is not installed."""
    for candidate in ORTHANC_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Orthanc:
    """One Orthanc server (see the module docstring): :meth:`start` it, :meth:`stop` it (waiting for its exit).

    Args:
        folder: its storage, index, configuration and log.
        dicom_port, http_port: its ports (default: free ones).
    """

    def __init__(self, folder: Path, dicom_port: int | None = None, http_port: int | None = None) -> None:
        self.folder = Path(folder)
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> Orthanc:
        """Write the configuration and start the server; returns once its REST API answers.

        Raises:
            RuntimeError: Orthanc is not installed, exits at start, or does not answer within ``timeout``.
        """
        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError("Orthanc is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "tests", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AE_TITLE,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True, "StableAge": 1, "SaveJobs": False,
            "HttpTimeout": 60, "DicomScuTimeout": 30, "ConcurrentJobs": 2,
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.is_file() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config, indent=1))
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - the server's output, closed with the process
        self.process = subprocess.Popen([binary, str(self.folder / "orthanc.json")], stdout=log, stderr=log,
                                        cwd=self.folder)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("Orthanc did not answer within its start time")

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for its exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    # ---- REST -----------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
        """One REST call; returns the decoded JSON answer (``None`` when empty). Raises ``urllib.error.HTTPError``."""
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Content-Type": content_type} if body is not None else {})
        with urllib.request.urlopen(request, timeout=120) as response:
            data = response.read()
        return json.loads(data) if data else None

    def get(self, path: str) -> Any:
        """``GET path`` (JSON)."""
        return self.request("GET", path)

    def post(self, path: str, payload: Any) -> Any:
        """``POST path`` with a JSON body."""
        return self.request("POST", path, json.dumps(payload).encode())

    def upload(self, files) -> set[str]:
        """Store DICOM files in Orthanc over REST. Returns the Orthanc ids of their studies."""
        studies = set()
        for path in files:
            answer = self.request("POST", "/instances", Path(path).read_bytes(), "application/dicom")
            studies.add(answer["ParentStudy"])
        return studies

    def add_modality(self, name: str, ae_title: str, port: int, host: str = "127.0.0.1") -> None:
        """Declare a DICOM node Orthanc can send to (``/modalities/<name>``)."""
        self.request("PUT", f"/modalities/{name}", json.dumps({"AET": ae_title, "Host": host, "Port": port}).encode())

    def send_study(self, modality: str, study_ids, synchronous: bool = True) -> Any:
        """Push studies to a DICOM modality by C-STORE (Orthanc's ``/modalities/<name>/store``)."""
        return self.post(f"/modalities/{modality}/store", {"Resources": sorted(study_ids), "Synchronous": synchronous})

    def study_id(self, study_instance_uid: str) -> str | None:
        """Orthanc's id of the study with this StudyInstanceUID (``None`` when it holds none)."""
        found = self.request("POST", "/tools/lookup", study_instance_uid.encode(), "text/plain")
        return next((item["ID"] for item in found or [] if item["Type"] == "Study"), None)

    def series_of(self, study_id: str) -> list[dict]:
        """The series of a study with their main tags (``MainDicomTags``: Modality, SeriesDescription ...)."""
        return self.get(f"/studies/{study_id}/series")

    def instance_file(self, instance_id: str) -> bytes:
        """The DICOM file of an instance, as stored."""
        request = urllib.request.Request(f"{self.url}/instances/{instance_id}/file")
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()
