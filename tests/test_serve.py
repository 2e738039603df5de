"""``python -m pipeline serve`` against a real PACS: Orthanc (Debian's packages) on 127.0.0.1 pushes synthetic CTP
studies to the service by C-STORE and receives the DICOM Segmentation and the summary back. The service runs as
users run it, ``python -m pipeline serve`` in its own process, with the session's tiny model."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("pynetdicom")

from pydicom.uid import generate_uid  # noqa: E402

from dicom_studies import write_patient  # noqa: E402
from pipeline.benchmark.orthanc import AE_TITLE as ORTHANC_AE  # noqa: E402
from pipeline.benchmark.orthanc import Orthanc, free_port, orthanc_binary  # noqa: E402
from pipeline.benchmark.serve import http_json, wait_until  # noqa: E402

pytestmark = pytest.mark.skipif(orthanc_binary() is None,
                                reason="Orthanc is not installed (make test installs Debian's orthanc with apt-get)")

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "isles_unetplusplus"
SERVICE_AE = "ISLES_AI"
START_SECONDS = 180


class RunningService:
    """``python -m pipeline serve`` in a process of its own, and what the tests read of it."""

    def __init__(self, state: Path, model: Path, *extra: str) -> None:
        self.state = state
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.command = [sys.executable, "-m", "pipeline", "serve", "--bundle", str(BUNDLE), "--model", str(model),
                        "--state", str(state), "--dicom-port", str(self.dicom_port), "--allow-ae", ORTHANC_AE,
                        "--ae-title", SERVICE_AE, "--http", f"127.0.0.1:{self.http_port}", "--runtime", "torch",
                        "--threads", "1", *extra]
        self.process: subprocess.Popen | None = None

    def start(self) -> RunningService:
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.state.parent / f"{self.state.name}.out", "ab") as out:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: self.health().get("status") == "ok" or self.process.poll() is not None, START_SECONDS, 0.2)
        assert self.process.poll() is None, self.output()
        return self

    def output(self) -> str:
        path = self.state.parent / f"{self.state.name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def health(self) -> dict:
        return http_json(f"http://127.0.0.1:{self.http_port}/health") or {}

    def jobs(self) -> list[dict]:
        found = http_json(f"http://127.0.0.1:{self.http_port}/jobs?limit=1000")
        assert found is not None, "the status endpoint does not answer"
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


def write_study(folder: Path, skip=()) -> tuple[str, dict[str, list[Path]]]:
    """A synthetic CTP study with its own StudyInstanceUID (NCCT, the four maps, RAPID's Tmax>6s mask), one folder per
    series; returns its UID and the files per series."""
    study_uid = generate_uid()
    files = write_patient(folder, mixed=False, study_uid=study_uid, frame=generate_uid(), skip=skip,
                          patient_id=f"P{folder.name}")
    return study_uid, files


def push(orthanc: Orthanc, files: dict[str, list[Path]]) -> set[str]:
    """Upload a study to Orthanc, then have Orthanc send it to the service by C-STORE."""
    ids = orthanc.upload([f for series in files.values() for f in series])
    orthanc.send_study("isles", ids)
    return ids


def job_in_state(service: RunningService, study_uid: str, state: str, seconds: float = 120) -> dict:
    """The study's job, once it has reached ``state`` (the results arrive in Orthanc before the job is marked sent)."""
    return wait_until(lambda: next((j for j in service.jobs() if j["study_uid"] == study_uid and j["state"] == state),
                                 None), seconds, 0.1)


def results_in_orthanc(orthanc: Orthanc, study_uid: str) -> dict[str, list[dict]]:
    """The series the service sent back into a study, by modality (SEG; OT for the Secondary Capture)."""
    study = orthanc.study_id(study_uid)
    found: dict[str, list[dict]] = {}
    for series in orthanc.series_of(study) if study else []:
        tags = series["MainDicomTags"]
        if tags.get("SeriesDescription", "").endswith("(AI)"):
            found.setdefault(tags.get("Modality"), []).append(series)
    return found


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory, orthanc, tiny_ctp_model):
    running = RunningService(tmp_path_factory.mktemp("serve") / "state", tiny_ctp_model, "--stable-seconds", "1",
                             "--send-to", f"{ORTHANC_AE}@127.0.0.1:{orthanc.dicom_port}").start()
    orthanc.add_modality("isles", SERVICE_AE, running.dicom_port)
    yield running
    running.stop()


def test_a_study_pushed_from_orthanc_comes_back_as_a_segmentation_of_its_ncct_with_the_summary(tmp_path, orthanc,
                                                                                                service):
    study_uid, files = write_study(tmp_path / "1")
    push(orthanc, files)
    back = wait_until(lambda: (lambda found: found if {"SEG", "OT"} <= set(found) else None)(
        results_in_orthanc(orthanc, study_uid)), 120, 0.1)
    (seg_series,) = back["SEG"]
    seg = pydicom.dcmread(io.BytesIO(orthanc.instance_file(seg_series["Instances"][0])))
    ncct_uid = str(pydicom.dcmread(files["NCCT"][0], stop_before_pixels=True).SeriesInstanceUID)
    assert seg.StudyInstanceUID == study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ncct_uid
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files["NCCT"]}
    (capture_series,) = back["OT"]
    capture = pydicom.dcmread(io.BytesIO(orthanc.instance_file(capture_series["Instances"][0])))
    assert capture.StudyInstanceUID == study_uid and capture.PhotometricInterpretation == "RGB"
    job = job_in_state(service, study_uid, "sent")
    assert job["instances"] == sum(len(f) for f in files.values())
    assert {"receive", "wait", "predict", "load_s", "network_s", "postprocess_s", "send"} <= set(job["stages"])
    # the results stay in the state folder too
    output = service.state / "jobs" / str(job["id"]) / "output"
    assert sorted(p.name for p in output.iterdir()) == [f"job-{job['id']}{s}" for s in (
        ".nii.gz", "_seg.dcm", "_summary.dcm", "_summary.json", "_summary.png")] + ["manifest.csv"]


def test_a_malformed_study_fails_with_its_reason_and_the_next_study_is_served(tmp_path, orthanc, service):
    bad_uid, bad = write_study(tmp_path / "bad", skip=("Tmax",))
    good_uid, good = write_study(tmp_path / "good")
    push(orthanc, bad)
    push(orthanc, good)
    job_in_state(service, good_uid, "sent")
    assert "SEG" in results_in_orthanc(orthanc, good_uid)
    jobs = {j["study_uid"]: j for j in service.jobs()}
    failed = jobs[bad_uid]
    assert failed["state"] == "failed" and failed["stage"] == "predict"
    assert "is the Tmax channel" in failed["reason"] and f"case 'job-{failed['id']}'" in failed["reason"]
    assert jobs[good_uid]["state"] == "sent"
    assert results_in_orthanc(orthanc, bad_uid) == {}
    assert "Traceback" not in failed["reason"]
    assert "Test^Patient" not in (service.state / "serve.log").read_text()  # no patient names in the log


def test_twenty_studies_sent_at_once_are_all_served_none_lost_or_mixed(tmp_path, orthanc, service):
    studies = {}
    ids = set()
    for i in range(20):
        uid, files = write_study(tmp_path / f"s{i}", skip=("mask",))
        studies[uid] = files
        ids |= orthanc.upload([f for series in files.values() for f in series])
    orthanc.send_study("isles", ids)
    wait_until(lambda: sum(j["state"] == "sent" for j in service.jobs() if j["study_uid"] in studies) == 20, 300,
             every=1.0)
    jobs = [j for j in service.jobs() if j["study_uid"] in studies]
    assert len(jobs) == 20 and {j["state"] for j in jobs} == {"sent"}
    for job in jobs:  # each job holds exactly its own study's instances
        assert job["instances"] == sum(len(f) for f in studies[job["study_uid"]].values())
        received = (service.state / "jobs" / str(job["id"]) / "input").rglob("*.dcm")
        assert {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in received} == {
            job["study_uid"]}
    for uid in studies:
        assert len(results_in_orthanc(orthanc, uid)["SEG"]) == 1


def test_an_unknown_calling_ae_title_is_refused(service):
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    intruder = AE(ae_title="INTRUDER")
    intruder.add_requested_context(CTImageStorage)
    assoc = intruder.associate("127.0.0.1", service.dicom_port, ae_title=SERVICE_AE)
    assert assoc.is_rejected and not assoc.is_established
    allowed = AE(ae_title=ORTHANC_AE)
    allowed.add_requested_context(CTImageStorage)
    assoc = allowed.associate("127.0.0.1", service.dicom_port, ae_title=SERVICE_AE)
    assert assoc.is_established
    assoc.release()


def test_a_service_killed_mid_study_completes_it_exactly_once_after_a_restart(tmp_path, orthanc, tiny_ctp_model):
    running = RunningService(tmp_path / "state", tiny_ctp_model, "--stable-seconds", "0.5",
                             "--send-to", f"{ORTHANC_AE}@127.0.0.1:{orthanc.dicom_port}").start()
    orthanc.add_modality("killed", SERVICE_AE, running.dicom_port)
    study_uid, files = write_study(tmp_path / "study")
    ids = orthanc.upload([f for series in files.values() for f in series])
    orthanc.send_study("killed", ids)
    database = tmp_path / "state" / "jobs.sqlite"

    def state() -> str | None:
        with sqlite3.connect(database, timeout=10) as db:
            row = db.execute("SELECT state FROM jobs WHERE study_uid = ?", (study_uid,)).fetchone()
        return row[0] if row else None

    worker = running.health()["worker_pid"]
    wait_until(lambda: state() == "running", 60, every=0.01)
    os.kill(running.process.pid, signal.SIGKILL)
    running.process.wait(10)
    wait_until(lambda: not Path(f"/proc/{worker}").exists() or "zombie" in Path(f"/proc/{worker}/status").read_text(),
             10)  # the worker (and its job) went with the service
    assert state() == "running"  # as the killed service left it
    restarted = RunningService(tmp_path / "state", tiny_ctp_model, "--stable-seconds", "0.5",
                               "--send-to", f"{ORTHANC_AE}@127.0.0.1:{orthanc.dicom_port}")
    restarted.dicom_port = running.dicom_port
    restarted.command[restarted.command.index("--dicom-port") + 1] = str(running.dicom_port)
    restarted.start()
    try:
        wait_until(lambda: state() == "sent", 120)
        (job,) = [j for j in restarted.jobs() if j["study_uid"] == study_uid]
        assert job["run_attempts"] == 2 and job["send_attempts"] == 1
        assert len(results_in_orthanc(orthanc, study_uid)["SEG"]) == 1
        assert "queued again" in (tmp_path / "state" / "serve.log").read_text()
    finally:
        restarted.stop()


def test_results_go_by_stow_rs_and_wait_while_the_pacs_is_down(tmp_path, tiny_ctp_model):
    """Inbox in, DICOMweb out: while nothing answers at the URL the results wait (sending, with the reason), and
    once Orthanc answers there they are stored."""
    port = free_port()
    running = RunningService(tmp_path / "state", tiny_ctp_model, "--inbox", str(tmp_path / "inbox"),
                             "--stable-seconds", "0.5", "--send-to", f"http://127.0.0.1:{port}/dicom-web",
                             "--send-retry-seconds", "0.5").start()
    try:
        study_uid, _ = write_study(tmp_path / "staging" / "study")
        (tmp_path / "staging" / "study").rename(tmp_path / "inbox" / "study")
        job = wait_until(lambda: next((j for j in running.jobs() if j["study_uid"] == study_uid
                                     and j["send_attempts"] >= 1), None), 120)
        assert job["state"] == "sending" and "STOW-RS failed" in job["reason"]
        assert list((tmp_path / "inbox").iterdir()) == []  # taken into the job
        late = Orthanc(tmp_path / "orthanc", http_port=port).start()
        try:
            job_in_state(running, study_uid, "sent", 60)
            back = results_in_orthanc(late, study_uid)
            assert len(back["SEG"]) == 1 and len(back["OT"]) == 1
        finally:
            late.stop()
    finally:
        running.stop()


def test_a_study_too_large_for_the_memory_limit_fails_alone_and_once_exits(tmp_path, tiny_ctp_model):
    """serve --once on an inbox: the study that needs more memory than --job-memory-gb fails with that reason, the
    small one is predicted, and the service exits 0 when both are done."""
    import numpy as np

    from pipeline.dicom.writer import write_ct_study

    rng = np.random.default_rng(0)
    shape = (512, 512, 16)  # several times what the limit allows once loaded and stacked
    big = {name: rng.uniform(1.0, 60.0, shape) for name in ("NCCT", "CBF", "CBV", "MTT", "Tmax")}
    big_uid = generate_uid()
    write_ct_study(tmp_path / "inbox" / "big", big, np.diag([0.9, 0.9, 5.0, 1.0]), {k: k for k in big},
                   study={"StudyInstanceUID": big_uid, "PatientID": "BIG"})
    small_uid, _ = write_study(tmp_path / "inbox" / "small")
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--bundle", str(BUNDLE), "--model",
                           str(tiny_ctp_model), "--state", str(state), "--inbox", str(tmp_path / "inbox"), "--once",
                           "--stable-seconds", "0", "--runtime", "torch", "--threads", "1", "--job-memory-gb", "0.25"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(state / "jobs.sqlite") as db:
        jobs = {uid: (job_state, reason) for uid, job_state, reason in
                db.execute("SELECT study_uid, state, reason FROM jobs")}
    assert jobs[big_uid][0] == "failed" and "memory limit of 0.2 GiB" in jobs[big_uid][1]
    assert jobs[small_uid] == ("done", "")
