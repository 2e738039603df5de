"""The parts of ``serve`` on their own: the SQLite job queue's states and recovery, where received instances go,
the job limits of the worker, the status endpoint, the inbox, and the parsing of destinations. No PACS, no model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")

from pipeline.manifest import MANIFEST_NAME  # noqa: E402
from pipeline.serve.jobs import (  # noqa: E402
    DONE, FAILED, MAX_RUN_ATTEMPTS, QUEUED, RECEIVED, RUNNING, SENDING, SENT, JobQueue,
)
from pipeline.serve.sender import Destination, parse_destination, retry_delay  # noqa: E402
from pipeline.serve.studies import JobFolders, uid_component  # noqa: E402
from pipeline.serve.worker import JobLimits, PredictSettings, private_memory_bytes, run_job  # noqa: E402


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def queue(tmp_path, clock):
    return JobQueue(tmp_path / "state", clock=clock)


def receive(queue: JobQueue, study: str, sop: str) -> int:
    job, _ = queue.receiving_job(study, "dicom:PACS")
    assert queue.record_instance(job.id, sop, "1.2.3", f"1.2.3/{sop}.dcm")
    return job.id


# ---- the queue -----------------------------------------------------------------------------------------------------
def test_a_study_is_queued_only_after_the_stable_time_without_instances(queue, clock):
    job = receive(queue, "1.1", "9.1")
    clock.now += 5
    receive(queue, "1.1", "9.2")
    clock.now += 8
    assert queue.queue_stable(10.0) == []
    clock.now += 2
    (queued,) = queue.queue_stable(10.0)
    assert (queued.id, queued.instances, queue.get(job).state) == (job, 2, QUEUED)


def test_instances_of_one_study_sent_twice_count_once(queue):
    job = receive(queue, "1.1", "9.1")
    receive(queue, "1.1", "9.1")
    assert queue.get(job).instances == 1


def test_a_late_series_makes_a_new_complete_job_and_supersedes_the_queued_one(queue, clock):
    first = receive(queue, "1.1", "9.1")
    clock.now += 20
    queue.queue_stable(10.0)
    second = receive(queue, "1.1", "9.2")
    assert second != first
    assert queue.get(first).state == FAILED and f"superseded by job {second}" in queue.get(first).reason
    assert set(queue.instance_paths(second)) == {"9.1", "9.2"} and queue.get(second).instances == 2


def test_an_instance_for_a_job_queued_meanwhile_is_refused_for_the_next_job(queue, clock):
    job, _ = queue.receiving_job("1.1", "dicom:PACS")
    clock.now += 20
    queue.queue_stable(10.0)
    assert not queue.record_instance(job.id, "9.1", "1.2.3", "x.dcm")
    assert queue.get(job.id).instances == 0


def test_jobs_run_oldest_first_and_end_sent_done_or_failed(queue, clock):
    a, b = receive(queue, "1.1", "9.1"), receive(queue, "1.2", "9.2")
    clock.now += 20
    queue.queue_stable(10.0)
    assert queue.claim_next().id == a and queue.get(a).state == RUNNING
    queue.finish(a, SENDING, {"predict": 1.5})
    assert [j.id for j in queue.due_sends()] == [a]
    queue.send_failed(a, "PACS down", retry_in=5.0)
    assert queue.due_sends() == [] and queue.get(a).reason == "PACS down"
    clock.now += 5
    assert [j.id for j in queue.due_sends()] == [a]
    queue.sent(a, 0.2)
    job = queue.get(a)
    assert (job.state, job.send_attempts, job.stages) == (SENT, 2, {"predict": 1.5, "send": 0.2})
    assert queue.claim_next().id == b
    queue.finish(b, FAILED, stage="predict", reason="no Tmax")
    assert queue.claim_next() is None
    assert queue.counts()[SENT] == 1 and queue.counts()[FAILED] == 1
    with pytest.raises(ValueError):
        queue.finish(b, RECEIVED)


def test_a_restart_queues_a_running_job_again_or_sends_its_published_results(queue, clock, tmp_path):
    a, b = receive(queue, "1.1", "9.1"), receive(queue, "1.2", "9.2")
    clock.now += 20
    queue.queue_stable(10.0)
    queue.claim_next(), queue.claim_next()
    done = {b}
    restarted = JobQueue(tmp_path / "state", clock=clock)
    recovered = {job.id: what for job, what in restarted.recover(done.__contains__)}
    assert queue.get(a).state == QUEUED and "queued again" in recovered[a]
    assert queue.get(b).state == SENDING and "published" in recovered[b]


def test_a_job_that_stopped_the_service_again_and_again_fails_instead_of_running_again(queue, clock):
    job = receive(queue, "1.1", "9.1")
    clock.now += 20
    queue.queue_stable(10.0)
    for _ in range(MAX_RUN_ATTEMPTS):
        queue.claim_next()
        queue.recover(lambda _: False)
    assert queue.get(job).state == FAILED and "stopped 3 times" in queue.get(job).reason


def test_a_lost_worker_requeues_its_job_until_the_attempts_run_out(queue, clock):
    job = receive(queue, "1.1", "9.1")
    clock.now += 20
    queue.queue_stable(10.0)
    queue.claim_next()
    queue.requeue(job, "worker lost")
    assert queue.get(job).state == QUEUED
    for _ in range(MAX_RUN_ATTEMPTS - 1):
        queue.claim_next()
        queue.requeue(job, "worker lost")
    assert queue.get(job).state == FAILED and "given up after 3 attempts" in queue.get(job).reason


def test_a_job_released_by_a_deliberate_stop_does_not_count_as_a_start(queue, clock):
    job = receive(queue, "1.1", "9.1")
    clock.now += 20
    queue.queue_stable(10.0)
    for _ in range(MAX_RUN_ATTEMPTS + 1):
        queue.claim_next()
        queue.release(job)
    assert queue.get(job).state == QUEUED and queue.get(job).run_attempts == 0


def test_the_queue_survives_closing_and_reopening(tmp_path, clock):
    first = JobQueue(tmp_path / "s", clock=clock)
    job = receive(first, "1.1", "9.1")
    first.close()
    again = JobQueue(tmp_path / "s", clock=clock)
    assert again.get(job).instances == 1 and again.get(job).state == RECEIVED


# ---- received files ------------------------------------------------------------------------------------------------
def test_names_from_uids_are_uids_or_hashes(tmp_path):
    assert uid_component("1.2.840.113619.2.55") == "1.2.840.113619.2.55"
    for hostile in ("../../etc/passwd", "1.2/3", "..", "", "1" * 65, "1.2.\x00"):
        name = uid_component(hostile)
        assert name.startswith("x") and len(name) == 33 and "/" not in name and name == uid_component(hostile)
    folders = JobFolders(tmp_path, 3)
    path = folders.instance_path("../../x", "../../y")
    assert folders.case_dir in path.parents and path.parent.parent == folders.case_dir


def test_the_listener_files_a_late_series_into_a_new_job_with_the_studys_earlier_instances(tmp_path, clock):
    from pipeline.serve.listener import StudyListener

    queue = JobQueue(tmp_path, clock=clock)
    listener = StudyListener(queue, tmp_path, "ISLES_AI", ["PACS"])
    first = listener.store("1.1", "5.1", "9.1", b"first", "dicom:PACS")
    clock.now += 20
    queue.queue_stable(10.0)
    queue.claim_next()
    second = listener.store("1.1", "5.2", "9.2", b"second", "dicom:PACS")
    assert second != first
    files = sorted(p.relative_to(JobFolders(tmp_path, second).case_dir).as_posix()
                   for p in JobFolders(tmp_path, second).case_dir.rglob("*.dcm"))
    assert files == ["5.1/9.1.dcm", "5.2/9.2.dcm"]
    assert queue.get(first).state == RUNNING  # the running job goes on with what it had


def test_the_listener_needs_calling_ae_titles(tmp_path):
    from pipeline.serve.listener import StudyListener

    with pytest.raises(ValueError, match="--allow-ae"):
        StudyListener(JobQueue(tmp_path), tmp_path, "ISLES_AI", [])


# ---- the worker's limits ---------------------------------------------------------------------------------------------
def _request(tmp_path) -> dict:
    return {"job": 1, "input": str(tmp_path), "output": str(tmp_path / "out"), "log": str(tmp_path / "job.log")}


def _sleeps(settings, request, limits) -> int:
    time.sleep(30)
    return 0


def _allocates(settings, request, limits) -> int:
    blocks = []
    for _ in range(40):
        blocks.append(bytearray(os.urandom(1)) * (25 << 20))  # written, so private to the child
        time.sleep(0.02)
    return 0


def _says_error(settings, request, limits) -> int:
    Path(request["log"]).write_text("loading...\nerror: case 'job-1', file 'x': no Tmax series\n")
    return 2


def test_a_job_past_the_time_limit_is_killed_with_the_reason(tmp_path):
    result = run_job(PredictSettings(bundle="b"), _request(tmp_path), JobLimits(seconds=0.3), child=_sleeps)
    assert result["exit"] is None and "time limit of 0.3 s" in result["killed"] and result["seconds"] < 10


def test_a_job_past_the_memory_limit_is_killed_with_the_reason(tmp_path):
    result = run_job(PredictSettings(bundle="b"), _request(tmp_path), JobLimits(memory_bytes=200 << 20),
                     child=_allocates)
    assert result["exit"] is None and "memory limit of 0.2 GiB" in result["killed"]
    assert result["peak_private_mb"] > 150


def test_a_failed_job_reports_its_exit_status_and_the_error_it_printed(tmp_path):
    result = run_job(PredictSettings(bundle="b"), _request(tmp_path), JobLimits(), child=_says_error)
    assert (result["exit"], result["killed"]) == (2, None)
    assert result["error"] == "error: case 'job-1', file 'x': no Tmax series"


def test_private_memory_is_read_from_proc():
    assert private_memory_bytes(os.getpid()) > 0 and private_memory_bytes(2**22 + 12345) is None


def test_the_predict_arguments_of_a_study_are_predicts_own():
    from pipeline.cli import build_parser

    args = PredictSettings(bundle="b", model="run", tta=True, overrides=["a=1"]).predict_args("in", "out")
    parsed = build_parser().parse_args(["predict", "--bundle", "b", "--input", "in", "--output", "out", "--model",
                                        "run", "--tta", "--set", "a=1", "--format", "dicom-seg", "--in-process"])
    assert {k: v for k, v in vars(args).items() if k != "debug"} == {
        k: v for k, v in vars(parsed).items() if k not in ("func", "command", "debug")}


# ---- status, inbox, destinations ------------------------------------------------------------------------------------
def test_the_status_endpoint_answers_health_jobs_and_one_job(queue, clock):
    from pipeline.serve.status import StatusServer

    job = receive(queue, "1.1", "9.1")
    status = StatusServer(queue, lambda: {"status": "ok"}, port=0)
    assert status.respond("/health") == (200, {"status": "ok", "queue": {**dict.fromkeys(
        (RECEIVED, QUEUED, RUNNING, SENDING, SENT, DONE, FAILED), 0), RECEIVED: 1}})
    code, jobs = status.respond("/jobs?state=received")
    assert code == 200 and [j["id"] for j in jobs] == [job]
    assert status.respond(f"/jobs/{job}")[1]["study_uid"] == "1.1"
    assert status.respond("/jobs/999")[0] == 404 and status.respond("/nothing")[0] == 404
    status.httpd.server_close()
    unwell = StatusServer(queue, lambda: {"status": "starting"}, port=0)
    assert unwell.respond("/health")[0] == 503
    unwell.httpd.server_close()


def test_the_inbox_takes_a_quiet_study_folder_and_leaves_hidden_ones_and_links(tmp_path):
    from pipeline.serve.inbox import Inbox

    queue = JobQueue(tmp_path / "state")
    inbox = tmp_path / "inbox"
    (inbox / "study" / "series").mkdir(parents=True)
    (inbox / "study" / "series" / "IM1").write_bytes(b"not dicom")
    (inbox / ".copying").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (inbox / "link").symlink_to(elsewhere)
    watcher = Inbox(inbox, queue, tmp_path / "state", stable_seconds=3600)
    assert watcher.scan() == []  # not quiet yet
    watcher.stable_seconds = 0
    (job,) = watcher.scan()
    assert sorted(p.name for p in inbox.iterdir()) == [".copying", "link"] and elsewhere.is_dir()
    taken = JobFolders(tmp_path / "state", job)
    assert (taken.case_dir / "series" / "IM1").read_bytes() == b"not dicom"
    assert queue.get(job).state == QUEUED and queue.get(job).study_uid == "study"


def test_destinations_are_a_dicom_node_or_a_dicomweb_url():
    assert parse_destination("ORTHANC@127.0.0.1:4242") == Destination(ae_title="ORTHANC", host="127.0.0.1", port=4242)
    assert parse_destination("http://pacs:8042/dicom-web/") == Destination(url="http://pacs:8042/dicom-web")
    for bad in ("ORTHANC@host", "host:4242", "A@h:0", "A@h:99999", "ftp://x"):
        with pytest.raises(ValueError, match="AE@host:port"):
            parse_destination(bad)


def test_failed_sends_back_off_doubling_up_to_ten_minutes():
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert retry_delay(50) == 600.0 and retry_delay(2, first=0.5) == 1.0


def test_published_means_a_finished_runs_manifest(tmp_path):
    folders = JobFolders(tmp_path, 1)
    assert not folders.published()
    folders.output.mkdir(parents=True)
    (folders.output / MANIFEST_NAME).write_text(
        "run_id,case_id,file,status,checkpoint,checkpoint_sha256,written_at,error,load_s,network_s,postprocess_s\n")
    assert folders.published()


def test_a_checkpoint_fits_its_network_is_checked_once_per_process_until_the_file_changes(tmp_path):
    import shutil

    import torch

    from pipeline.data.profiles import PROFILES_DIR
    from pipeline.errors import CaseError
    from pipeline.networks import UNetPlusPlus
    from pipeline.predict.checkpoint import check_checkpoints_fit

    bundle = tmp_path / "bundle"
    shutil.copytree(Path(__file__).resolve().parents[1] / "bundles" / "isles_unetplusplus", bundle)
    channels = ["NCCT", "CBF", "CBV", "MTT", "Tmax"]
    net = UNetPlusPlus(spatial_dims=3, in_channels=5, out_channels=2, strides=[[2, 2, 1]] * 4,
                       kernel_sizes=[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                       features=[4, 4, 8, 8, 16], norm="instance", deep_supervision=True)
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": net.state_dict()}, checkpoint)
    settings = [("channels", channels), ("output_dir", "a"), ("features", "[4,4,8,8,16]")]
    profile = PROFILES_DIR / "isles2024.yaml"
    check_checkpoints_fit(bundle, profile, settings, [checkpoint], channels)
    config = bundle / "configs" / "inference.json"
    kept = config.read_bytes()
    config.unlink()  # the network could not be configured now: a run with other per-run settings is not checked again
    check_checkpoints_fit(bundle, profile, [settings[0], ("output_dir", "b"), settings[2]], [checkpoint], channels)
    config.write_bytes(kept)
    checkpoint.write_bytes(b"truncated")  # a changed file is checked again
    with pytest.raises(CaseError, match="cannot be loaded as PyTorch weights"):
        check_checkpoints_fit(bundle, profile, settings, [checkpoint], channels)
