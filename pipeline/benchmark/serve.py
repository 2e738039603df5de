"""``python -m pipeline benchmark --serve``: the hospital service against the command line, per study, through a
real PACS.

What is measured, on synthetic ISLES 2024 test subjects written as DICOM studies (NCCT and the four maps as CT
series, at the synthetic slabs' full 256x256 size) and a model of the plans' default network:

- **cold**: per study, ``python -m pipeline predict --format dicom-seg`` on the study's folder, then the SEG and the
  summary sent to Orthanc by C-STORE: what a pipeline that calls the CLI per study gets;
- **warm**: per study, Orthanc pushes the study to a running ``python -m pipeline serve``; the latency runs from the
  end of Orthanc's C-STORE (the last instance received) to the service's results stored back in Orthanc (the job
  ``sent``). It includes the stable time the service waits for more instances (given, and shown apart);
- **the case's own stages**: loading, network, post-processing and writing, as the job's manifest records them;
- **throughput**: every study pushed at once, studies per minute until the last result is stored back.

Studies alternate cold and warm so that both meet the same machine. The results go to ``benchmarks/serve.md``.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bundles import PROJECT_ROOT

DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "serve.md"
CHANNELS = ("NCCT", "CBF", "CBV", "MTT", "Tmax")
SERVICE_AE = "ISLES_AI"
# Targets of the service (issue: a warm service for hospitals).
WARM_OVER_STAGES_TARGET = 2.0
COLD_OVER_WARM_TARGET = 3.0


@dataclass
class ServeBenchmarkOptions:
    """The benchmark's settings (``benchmark --serve``'s flags).

    Attributes:
        studies: how many test subjects are sent (each once cold, once warm, then all at once).
        training_cases: synthetic training cases of the model (when no model is given).
        model: a ``train --output`` folder of a model on the DICOM channels (default: trained here for one epoch
            with the plans' default network).
        bundle: the bundle.
        workdir: where data, model, studies and the servers' files go (default: a temporary folder).
        out: the Markdown file written.
        stable_seconds: the service's stable time.
        runtime: what runs the network (as ``predict --runtime``).
        seed: the synthetic data's seed.
    """

    studies: int = 8
    training_cases: int = 8
    model: Path | None = None
    bundle: Path = PROJECT_ROOT / "bundles" / "isles_unetplusplus"
    workdir: Path | None = None
    out: Path = DEFAULT_OUT
    stable_seconds: float = 1.0
    runtime: str = "auto"
    seed: int = 1


def _run(command: list[str], log: Path) -> float:
    """Run a command from the project root with its output in ``log``; returns its wall time.

    Raises:
        RuntimeError: it failed (the log's tail in the message).
    """
    started = time.perf_counter()
    with open(log, "ab") as out:
        status = subprocess.run(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({status}): {log.read_text(errors='replace')[-2000:]}")
    return time.perf_counter() - started


def prepare_inputs(options: ServeBenchmarkOptions, work: Path, log: Callable[[str], None]) -> tuple[Path, list[Path]]:
    """The model and the DICOM studies: synthetic ISLES 2024 data, prepared with its plans; a model trained for one
    epoch (unless given); each test subject's NCCT and maps written as one DICOM study folder.

    Returns:
        The model folder and the study folders (each a folder holding one patient folder, for ``predict --input``).
    """
    import numpy as np

    from pipeline.data.datalist import load_datalist
    from pipeline.dicom.writer import write_ct_study
    from pipeline.io import read_array, read_geometry

    python = [sys.executable, "-m", "pipeline"]
    data, datalist = work / "synth", work / "synth.json"
    if not datalist.is_file():
        _run(python + ["synth", str(data), "--cases", str(options.training_cases), "--test-cases", str(options.studies),
                       "--seed", str(options.seed), "--layout", "isles2024"], work / "setup.log")
        _run(python + ["prepare", "--root", str(data), "--out", str(datalist), "--folds", "2"], work / "setup.log")
    model = options.model
    if model is None:
        model = work / "model"
        if not (model / "models" / "last.pt").is_file():
            log("serve benchmark: training the plans' default network for one epoch (the weights do not change the "
                "timing)")
            _run(python + ["train", "--bundle", str(options.bundle), "--datalist", str(datalist), "--fold", "0",
                           "--epochs", "1", "--output", str(model), "--postprocessing", "none"], work / "setup.log")
    studies = []
    for i, record in enumerate(load_datalist(datalist, "testing")[:options.studies]):
        folder = work / "studies" / f"study{i:02d}"
        if not folder.is_dir():
            modalities = record["modalities"]
            geometry = read_geometry(modalities["NCCT"])
            volumes = {name: np.asarray(read_array(modalities[name]), dtype=np.float64) for name in CHANNELS}
            write_ct_study(folder / "patient", volumes, geometry.affine, {name: name for name in CHANNELS},
                           study={"StudyInstanceUID": f"2.25.{options.seed}{i:04d}{int(time.time())}",
                                  "PatientID": f"BENCH{i:02d}"})
        studies.append(folder)
    return Path(model), studies


def http_json(url: str) -> Any:
    """The JSON body of ``GET url``, also of an error status (``/health`` answers 503 with a body); ``None`` when
    nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())
    except OSError:
        return None


def wait_until(condition: Callable[[], Any], seconds: float, every: float = 0.02) -> Any:
    """Call ``condition`` every ``every`` seconds until it returns something true, and return that.

    Raises:
        TimeoutError: nothing true within ``seconds``.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"not reached within {seconds:g} s")


def study_uid(folder: Path) -> str:
    """The StudyInstanceUID of a study folder's first file."""
    import pydicom

    first = next(p for p in sorted(folder.rglob("*.dcm")))
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def run_serve_benchmark(options: ServeBenchmarkOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure cold and warm latency per study, the case's own stages and the throughput; write the Markdown.

    Returns:
        The figures (also written to ``options.out``).

    Raises:
        RuntimeError: Orthanc is not installed, or a run failed (the message says which).
    """
    from pipeline.benchmark.orthanc import AE_TITLE, Orthanc, free_port, orthanc_binary
    from pipeline.serve.sender import parse_destination, result_objects, send

    if orthanc_binary() is None:
        raise RuntimeError("the serve benchmark needs Orthanc (Debian: apt-get install orthanc orthanc-dicomweb)")
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        work = Path(options.workdir or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        model, studies = prepare_inputs(options, work, log)
        uids = [study_uid(s) for s in studies]
        pacs = Orthanc(work / f"orthanc-{int(time.time())}").start()
        destination = parse_destination(f"{AE_TITLE}@127.0.0.1:{pacs.dicom_port}")
        http_port, dicom_port = free_port(), free_port()
        state = work / f"serve-state-{int(time.time())}"
        serve = [sys.executable, "-m", "pipeline", "serve", "--bundle", str(options.bundle), "--model", str(model),
                 "--state", str(state), "--dicom-port", str(dicom_port), "--allow-ae", AE_TITLE, "--ae-title",
                 SERVICE_AE, "--send-to", str(destination), "--http", f"127.0.0.1:{http_port}",
                 "--stable-seconds", f"{options.stable_seconds:g}", "--runtime", options.runtime]
        service_log = open(work / "serve.out", "ab")  # noqa: SIM115 - the service's output, closed at the end
        started = time.perf_counter()
        service = subprocess.Popen(serve, cwd=PROJECT_ROOT, stdout=service_log, stderr=subprocess.STDOUT)
        rows: list[dict[str, Any]] = []
        try:
            health = f"http://127.0.0.1:{http_port}/health"
            wait_until(lambda: (http_json(health) or {}).get("status") == "ok" or service.poll() is not None, 600, 0.1)
            if service.poll() is not None:
                raise RuntimeError(f"serve stopped at start: {(work / 'serve.out').read_text()[-2000:]}")
            start_up = time.perf_counter() - started
            pacs.add_modality("isles", SERVICE_AE, dicom_port)
            ids = [pacs.upload(sorted(s.rglob("*.dcm"))) for s in studies]

            def jobs() -> list[dict]:
                return http_json(f"http://127.0.0.1:{http_port}/jobs?limit=1000") or []

            for i, (folder, uid, orthanc_ids) in enumerate(zip(studies, uids, ids)):
                out = work / "cold" / f"{folder.name}-{int(time.time() * 1000)}"
                t0 = time.perf_counter()
                _run([sys.executable, "-m", "pipeline", "predict", "--bundle", str(options.bundle), "--model",
                      str(model), "--input", str(folder), "--output", str(out), "--format", "dicom-seg", "--runtime",
                      options.runtime], work / "cold.log")
                send(destination, result_objects(out), SERVICE_AE)
                cold = time.perf_counter() - t0
                before = {j["id"] for j in jobs()}
                pacs.send_study("isles", orthanc_ids)
                t1 = time.perf_counter()
                job = wait_until(lambda: next((j for j in jobs() if j["study_uid"] == uid and j["id"] not in before
                                          and j["state"] in ("sent", "failed")), None), 600)
                warm = time.perf_counter() - t1
                if job["state"] != "sent":
                    raise RuntimeError(f"the service failed study {folder.name}: {job['reason']}")
                stages = job["stages"]
                own = sum(float(stages.get(k, 0.0)) for k in ("load_s", "network_s", "postprocess_s"))
                rows.append({"study": folder.name, "slices": len(list((folder / "patient" / "NCCT").glob("*.dcm"))),
                             "cold_s": cold, "warm_s": warm, "warm_after_stable_s": warm - options.stable_seconds,
                             "job_child_s": float(stages.get("predict", 0.0)), "stages_s": own,
                             "send_s": float(stages.get("send", 0.0))})
                log(f"serve benchmark: {folder.name}: cold {cold:.2f} s, warm {warm:.2f} s (after the stable time "
                    f"{warm - options.stable_seconds:.2f} s), the case's stages {own:.2f} s")
            before = {j["id"] for j in jobs()}
            t0 = time.perf_counter()
            pacs.send_study("isles", set().union(*ids))
            wait_until(lambda: sum(j["state"] in ("sent", "failed") for j in jobs() if j["id"] not in before)
                  >= len(studies), 1800, 0.2)
            burst = time.perf_counter() - t0
        finally:
            service.terminate()
            service.wait(60)
            service_log.close()
            pacs.stop()
    result = summarise(rows, burst, start_up, options)
    write_markdown(result, options)
    return result


def summarise(rows: list[dict[str, Any]], burst_s: float, start_up_s: float,
              options: ServeBenchmarkOptions) -> dict[str, Any]:
    """The benchmark's figures from the per-study rows: medians, ratios, throughput and the targets' verdicts."""
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    warm_over_stages = [r["warm_after_stable_s"] / r["stages_s"] for r in rows if r["stages_s"] > 0]
    cold_over_warm = [r["cold_s"] / r["warm_s"] for r in rows]
    return {
        "rows": rows, "studies": len(rows), "stable_seconds": options.stable_seconds, "runtime": options.runtime,
        "service_start_s": start_up_s, "median_cold_s": median("cold_s"), "median_warm_s": median("warm_s"),
        "median_warm_after_stable_s": median("warm_after_stable_s"), "median_stages_s": median("stages_s"),
        "median_job_child_s": median("job_child_s"),
        "warm_over_stages": statistics.median(warm_over_stages) if warm_over_stages else float("nan"),
        "cold_over_warm": statistics.median(cold_over_warm),
        "burst_s": burst_s, "studies_per_minute": 60.0 * len(rows) / burst_s if burst_s > 0 else float("nan"),
        "machine": f"{platform.machine()}, {_cores()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_markdown(result: dict[str, Any], options: ServeBenchmarkOptions) -> Path:
    """Write the figures as ``options.out`` (Markdown): the per-study table, the medians and the verdicts."""
    from pipeline.io import atomic_write_text

    def verdict(ok: bool) -> str:
        return "yes" if ok else "no"

    lines = [
        "# The hospital service against the command line, per study",
        "",
        f"`python -m pipeline benchmark --serve --studies {options.studies}` on {result['date']}, {result['machine']}; "
        f"runtime `{result['runtime']}`, stable time {result['stable_seconds']:g} s, Orthanc "
        "(Debian's package) on 127.0.0.1. Cold: `predict --format dicom-seg` per study, then C-STORE of its SEG and "
        "summary. Warm: Orthanc's C-STORE of the study to `serve` until its results are stored back in Orthanc. "
        "What the rows mean: [docs/serve.md](../docs/serve.md#benchmark).",
        "",
        "| study | slices | cold s | warm s | warm after the stable time s | job's child s | case's stages s | "
        "send s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['study']} | {r['slices']} | {r['cold_s']:.2f} | {r['warm_s']:.2f} | "
                     f"{r['warm_after_stable_s']:.2f} | {r['job_child_s']:.2f} | {r['stages_s']:.2f} | "
                     f"{r['send_s']:.2f} |")
    warm_ok = result["warm_over_stages"] <= WARM_OVER_STAGES_TARGET
    cold_ok = result["cold_over_warm"] >= COLD_OVER_WARM_TARGET
    lines += [
        "",
        f"- medians: cold {result['median_cold_s']:.2f} s, warm {result['median_warm_s']:.2f} s "
        f"({result['median_warm_after_stable_s']:.2f} s after the stable time), the job's child "
        f"{result['median_job_child_s']:.2f} s, the case's own stages {result['median_stages_s']:.2f} s;",
        f"- warm latency after the stable time over the case's own stages (median of the per-study ratios): "
        f"{result['warm_over_stages']:.2f}x; target at most {WARM_OVER_STAGES_TARGET:g}x: **{verdict(warm_ok)}**;",
        f"- cold over warm latency (median of the per-study ratios, the stable time included in warm): "
        f"{result['cold_over_warm']:.2f}x; target at least {COLD_OVER_WARM_TARGET:g}x: **{verdict(cold_ok)}**;",
        f"- throughput: {result['studies']} studies pushed at once, all stored back after {result['burst_s']:.1f} s: "
        f"**{result['studies_per_minute']:.1f} studies per minute**;",
        f"- the service's start (imports, model, warm-up study) took {result['service_start_s']:.1f} s, once.",
        "",
    ]
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines))
    return out
