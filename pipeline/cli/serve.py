"""``python -m pipeline serve``: the warm hospital service (see :mod:`pipeline.serve` and docs/serve.md)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from pipeline.cli.arguments import add_bundle_arguments

LOG_FORMAT = "%(asctime)s serve %(levelname)s %(message)s"


def register(sub, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` sub-command to ``sub``."""
    p = sub.add_parser("serve", parents=parents,
                       help="a warm service for hospitals: studies in from a PACS (C-STORE) or a folder, DICOM "
                            "Segmentations and summaries back")
    p.add_argument("--model", default=None, metavar="RUN",
                   help="a train --output folder, or a cross-validation's (its folds are ensembled), as for predict")
    p.add_argument("--checkpoint", default=None, help="weights (comma-separated: an ensemble), as for predict")
    p.add_argument("--state", default="serve_state", metavar="DIR",
                   help="the state folder: the job queue (jobs.sqlite), each study as received, its results and log "
                        "(default serve_state)")
    p.add_argument("--dicom-port", type=int, default=None, metavar="N",
                   help="listen for DICOM C-STORE on this port (0: a free port, logged)")
    p.add_argument("--dicom-host", default="127.0.0.1", help="the listener's address (default 127.0.0.1)")
    p.add_argument("--ae-title", default="ISLES_AI", help="this service's AE title (default ISLES_AI)")
    p.add_argument("--allow-ae", action="append", default=[], metavar="AE",
                   help="a calling AE title whose studies are accepted (repeatable; needed with --dicom-port)")
    p.add_argument("--inbox", default=None, metavar="DIR",
                   help="watch this folder: each study folder dropped into it is one study")
    p.add_argument("--send-to", default=None, metavar="AE@HOST:PORT|URL",
                   help="where results go: a DICOM node (C-STORE) or a DICOMweb base URL (STOW-RS); without it "
                        "results stay in the state folder")
    p.add_argument("--send-retry-seconds", type=float, default=5.0,
                   help="after a failed send, wait this long before the next try, doubling after each failure up to "
                        "10 minutes (default 5); results are never dropped")
    p.add_argument("--http", default=None, metavar="HOST:PORT", help="serve the status (/health, /jobs) here")
    p.add_argument("--stable-seconds", type=float, default=10.0,
                   help="a study is complete when no instance of it came for this long (default 10)")
    p.add_argument("--job-timeout", type=float, default=600.0, help="seconds one study may take (default 600)")
    p.add_argument("--job-memory-gb", type=float, default=8.0,
                   help="memory one study's run may use beyond the warm worker's (default 8)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per study (default: the machine's)")
    p.add_argument("--once", action="store_true",
                   help="run what is received and queued (and the inbox), try each send once, then exit")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnxruntime", "openvino"],
                   help="what runs the network, as for predict")
    p.add_argument("--tta", action="store_true", help="test-time augmentation, as for predict")
    p.add_argument("--postprocessing", default=None, metavar="none|FILE", help="as for predict")
    add_bundle_arguments(p, "plans.json the network was trained with, as for predict", "inferer#sw_batch_size=4")
    p.set_defaults(func=command_serve)


def _options(args: argparse.Namespace):
    from pipeline.serve.sender import parse_destination
    from pipeline.serve.service import ServeOptions
    from pipeline.serve.status import parse_address

    if args.dicom_port is None and args.inbox is None:
        raise ValueError("serve needs an input: --dicom-port N (DICOM C-STORE) and/or --inbox DIR (a watched folder)")
    if args.dicom_port is not None and not 0 <= args.dicom_port < 65536:
        raise ValueError(f"--dicom-port {args.dicom_port}: give a port from 0 to 65535")
    if args.dicom_port is not None and not args.allow_ae:
        raise ValueError("--dicom-port needs --allow-ae AE for each calling AE title (the PACS) whose studies are "
                         "accepted; associations from any other are refused")
    for title in [args.ae_title, *args.allow_ae]:
        if not 0 < len(title.strip()) <= 16 or "\\" in title:
            raise ValueError(f"AE title {title!r}: 1 to 16 characters, no backslash")
    if args.stable_seconds < 0 or args.send_retry_seconds < 0 or args.job_timeout <= 0 or args.job_memory_gb <= 0:
        raise ValueError("--stable-seconds and --send-retry-seconds must be at least 0, --job-timeout and "
                         "--job-memory-gb above 0")
    return ServeOptions(
        state_dir=Path(args.state), ae_title=args.ae_title.strip(), dicom_port=args.dicom_port,
        dicom_host=args.dicom_host, allowed_ae=[a.strip() for a in args.allow_ae],
        inbox=Path(args.inbox) if args.inbox else None,
        send_to=parse_destination(args.send_to) if args.send_to else None,
        http=parse_address(args.http) if args.http else None, stable_seconds=args.stable_seconds, once=args.once,
        retry_seconds=args.send_retry_seconds)


def command_serve(args: argparse.Namespace) -> int:
    """``serve --bundle DIR --model RUN (--dicom-port N --allow-ae AE | --inbox DIR) [--send-to ...]``.

    Checks the options, the bundle and the model, starts the service and runs it until SIGTERM or Ctrl-C (with
    ``--once``: until what was received is done). Returns the exit status: 0, or 2 when it cannot start.
    """
    _check_packages()
    from pipeline.bundles import check_bundle
    from pipeline.predict.command import checkpoint_specs
    from pipeline.predict.models import BEST_MODEL, resolve_checkpoints
    from pipeline.serve.service import Service, ServiceError
    from pipeline.serve.worker import JobLimits, PredictSettings

    options = _options(args)
    bundle = check_bundle(args.bundle, "inference.json")
    resolve_checkpoints(checkpoint_specs(args), bundle / "models" / BEST_MODEL)  # refuse a missing model now
    settings = PredictSettings(bundle=str(bundle), model=args.model, checkpoint=args.checkpoint, runtime=args.runtime,
                               tta=args.tta, postprocessing=args.postprocessing, plans=args.plans,
                               overrides=list(args.set or []))
    limits = JobLimits(seconds=args.job_timeout, memory_bytes=int(args.job_memory_gb * 2**30), threads=args.threads)
    options.state_dir.mkdir(parents=True, exist_ok=True)
    _log_to(options.state_dir / "serve.log")
    service = Service(options, settings, limits)

    def stop(signum, frame) -> None:
        logging.getLogger("pipeline.serve").info("signal %d: stopping", signum)
        service.stopping.set()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            service.start()
        except ServiceError as err:
            raise ValueError(f"serve cannot start: {err}") from err
        service.run()
    finally:
        service.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _check_packages() -> None:
    """Raises MissingExtraError when a package of the ``dicom`` extra that the service needs is missing."""
    from importlib.util import find_spec

    from pipeline.data.dicom import DICOM_EXTRA
    from pipeline.errors import MissingExtraError

    needed = ("pydicom", "highdicom", "pynetdicom", "dicomweb_client")
    missing = [name for name in needed if find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"serve needs {', '.join(missing)}, which is not installed: install the project's "
                                f"dicom extra with `{DICOM_EXTRA}` (in the project folder)")


def _log_to(path: Path) -> None:
    """The service's log lines on stderr and in ``path``."""
    logger = logging.getLogger("pipeline.serve")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_serve", False) for h in logger.handlers):
        for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(path)):
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            handler._serve = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.propagate = False
