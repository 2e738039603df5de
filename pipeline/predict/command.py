"""``python -m pipeline predict`` as a function: checks, the bundle run in a staging folder, publishing.

``predict`` is a thin wrapper: it turns its input into a datalist, prints the equivalent
``python -m monai.bundle run ...`` line for the bundle's inference config and runs it; with
``--nproc N`` it runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m monai.bundle
run ...`` with the bundle's ``multi_gpu_inference.json`` merged after ``inference.json`` (each process
predicts its share of the cases; the files written are the same as with one process).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.bundles import bundle_command, check_bundle, parse_overrides, profile_path, run_command
from pipeline.distributed import torchrun_command
from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, CaseError
from pipeline.manifest import FAILED, FAILURES_NAME, MANIFEST_NAME, WRITTEN, new_run_id, read_manifest
from pipeline.predict.checkpoint import check_checkpoint, configured_network
from pipeline.predict.names import OUTPUT_FORMATS, planned_output_names
from pipeline.predict.publishing import STAGING_PREFIX, clear_stale_staging, existing_outputs, publish_results
from pipeline.planning.bundle_settings import ARCHITECTURE_KEYS, TRAINED_PLANS, plan_overrides, trained_network_overrides


def run_predict(args) -> int:
    """``python -m pipeline predict``: see the module docstring. Returns the exit status.

    Before any inference it checks the records (:func:`pipeline.data.validation.check_records`), the output
    names (:func:`planned_output_names`: plain names, one file per case) and the checkpoint against the
    configured network (:func:`check_checkpoint`). The bundle writes into a hidden staging folder inside
    ``--output``; only when it has finished are its results published (:func:`publish_results`), replacing
    every result of an earlier run, so the folder holds one run's predictions, its ``manifest.csv`` and, when
    cases failed, ``failures.csv``. An interrupted run leaves the earlier results as they were.

    ``args.nproc`` (``--nproc``, default 1) above 1 runs the bundle under ``torch.distributed.run``
    with ``configs/multi_gpu_inference.json`` (one process per GPU on a GPU machine).

    Raises:
        FileNotFoundError: no such bundle (or, with ``--nproc``, no ``multi_gpu_inference.json``), input or checkpoint.
        CaseError: a bad record, output name or checkpoint (see above).
        ValueError: results already in the output folder without ``--overwrite``, a bad format,
            override or ``--nproc``.
    """
    from pipeline.data.datalist import load_datalist
    from pipeline.data.prepare import input_datalist
    from pipeline.data.validation import check_records

    bundle = check_bundle(args.bundle, "inference.json")
    nproc = int(getattr(args, "nproc", None) or 1)
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    extra_configs = ["multi_gpu_inference.json"] if nproc > 1 else []
    if extra_configs:
        check_bundle(bundle, extra_configs[0])
    output_dir = Path(args.output).resolve()
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else bundle / "models" / "model.pt"
    if checkpoint.is_dir() and (checkpoint / "models" / "model.pt").is_file():
        checkpoint = checkpoint / "models" / "model.pt"  # a training run's folder: its best model
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} not found: train the bundle first or give --checkpoint")
    if args.format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown --format {args.format!r}")
    overrides = parse_overrides(args.set)
    already = existing_outputs(output_dir)
    if already and not args.overwrite:
        raise ValueError(
            f"{output_dir} already holds {len(already)} prediction file(s) (e.g. {already[0].name}); "
            "pass --overwrite to replace them or choose another --output"
        )
    input_path = Path(args.input).resolve()
    if not input_path.exists():
        raise FileNotFoundError(f"input {str(input_path)!r} not found")
    if output_dir == input_path or input_path in output_dir.parents:
        raise ValueError("--output must not be the input folder or lie inside it")
    run_id = new_run_id()
    with tempfile.TemporaryDirectory(prefix="predict-") as work:
        datalist_path, split, datalist = input_datalist(input_path, args.split, Path(work))

        records = load_datalist(datalist_path, split)
        if not records:
            raise ValueError(f"{datalist_path}: no {split!r} records to predict")
        channels = list(datalist.get("channels") or [])
        check_records(records, datalist_path, split, channels or None)
        planned_output_names(records, args.format, args.name, ".nii.gz", bool(args.probabilities))
        settings = [
            ("datalist", str(datalist_path)), ("data_split", split), ("output_dir", str(output_dir)),
            ("ckpt_path", str(checkpoint)), ("output_format", args.format), ("team_name", args.name),
            ("save_probabilities", bool(args.probabilities)), ("channels", channels), ("prediction_run_id", run_id),
        ]
        if getattr(args, "strict", False):
            settings.append(("strict_channels", True))
        if getattr(args, "tta", False):
            settings.append(("tta", True))
        plans = Path(args.plans) if args.plans else checkpoint.parent / TRAINED_PLANS
        if args.plans or plans.is_file():
            settings += plan_overrides(plans, ARCHITECTURE_KEYS) + trained_network_overrides(plans)
        profile = profile_path(datalist)
        check_checkpoint(checkpoint, configured_network(bundle, profile, settings + overrides), channels)

        output_dir.mkdir(parents=True, exist_ok=True)
        clear_stale_staging(output_dir)
        staging = output_dir / f"{STAGING_PREFIX}{os.getpid()}-{run_id}"
        staging.mkdir()
        try:
            staged = [(k, str(staging) if k == "output_dir" else v) for k, v in settings]
            command = bundle_command(bundle, "inference.json", profile, staged + overrides, extra_configs)
            equivalent = bundle_command(bundle, "inference.json", profile, settings + overrides, extra_configs)
            if nproc > 1:
                command, equivalent = torchrun_command(command, nproc), torchrun_command(equivalent, nproc)
            processes = f", {nproc} processes" if nproc > 1 else ""
            print(f"predict: {len(records)} case(s) from {input_path} -> {output_dir} ({args.format}{processes}); "
                  f"written to {staging.name}/ first, published when the run ends")
            status = run_command(command, condense_tracebacks=not getattr(args, "debug", False), shown=equivalent)
            manifest = read_manifest(staging)
            if manifest is None:
                raise CaseError(None, str(output_dir),
                                f"the prediction run stopped before it finished (exit status {status}); nothing was "
                                "published and the folder's earlier results, if any, are unchanged")
            publish_results(staging, output_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    written = [e for e in manifest if e.status == WRITTEN]
    failed = [e for e in manifest if e.status == FAILED]
    print(f"predict: wrote {len(written)} prediction(s) to {output_dir} (manifest: {output_dir / MANIFEST_NAME})")
    if failed:
        print(f"predict: {len(failed)} case(s) failed (table: {output_dir / FAILURES_NAME}):", file=sys.stderr)
        for entry in failed:
            print(f"  {entry.error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0 if status == 0 else EXIT_FAILED
