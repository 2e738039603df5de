"""``python -m pipeline predict`` as a function: checks, the bundle run in a staging folder, publishing.

``predict`` is a thin wrapper: it turns its input into a datalist, prints the equivalent
``python -m monai.bundle run ...`` line for the bundle's inference config and runs it; with
``--nproc N`` it runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m monai.bundle
run ...`` with the bundle's ``multi_gpu_inference.json`` merged after ``inference.json`` (each process
predicts its share of the cases; the files written are the same as with one process).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.bundles import bundle_command, check_bundle, parse_overrides, profile_path, run_command, run_in_process
from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, CaseError, cli_message
from pipeline.manifest import FAILED, FAILURES_NAME, MANIFEST_NAME, WRITTEN, new_run_id, read_manifest, stage_summary
from pipeline.predict.checkpoint import check_checkpoints_fit
from pipeline.predict.models import BEST_MODEL, resolve_checkpoints
from pipeline.predict.names import OUTPUT_FORMATS, planned_output_names
from pipeline.predict.publishing import STAGING_PREFIX, clear_stale_staging, existing_outputs, publish_results
from pipeline.planning.bundle_settings import ARCHITECTURE_KEYS, TRAINED_PLANS, plan_overrides, trained_network_overrides


def checkpoint_specs(args) -> list[str]:
    """What ``--checkpoint`` and ``--model`` name, in order: each a comma-separated list of checkpoint files,
    training run folders or folders of fold runs (see :func:`pipeline.predict.models.resolve_checkpoints`)."""
    specs = []
    for value in (getattr(args, "checkpoint", None), getattr(args, "model", None)):
        specs += [part.strip() for part in str(value or "").split(",") if part.strip()]
    return specs


def postprocessing_settings(args, checkpoints: list[Path]) -> tuple[list[tuple[str, object]], str]:
    """The post-processing settings of a predict run and a line saying where they came from.

    ``--postprocessing none`` keeps the bundle's (threshold 0.5, nothing removed); a path reads that file; by default
    the ``postprocessing.json`` of the model is used: in the ``--model`` folder, in a ``--checkpoint`` folder, or in
    the run folder of a single checkpoint file (``RUN/models/last.pt`` -> ``RUN``).

    Raises:
        FileNotFoundError, ValueError: a named file that is missing or invalid.
    """
    from pipeline.postprocessing.store import postprocessing_for, read_postprocessing

    choice = getattr(args, "postprocessing", None)
    if choice == "none":
        return [], "predict: no post-processing (--postprocessing none): threshold 0.5, no component removed"
    if choice:
        path: Path | None = Path(choice).resolve()
    else:
        specs = [Path(s).resolve() for s in checkpoint_specs(args)]
        folders = [s for s in specs if s.is_dir()]
        if not folders and len(checkpoints) == 1:
            folders = [checkpoints[0].parent.parent]
        path = postprocessing_for(folders) if len(folders) == 1 else None
    if path is None:
        return [], "predict: no postprocessing.json beside the model: threshold 0.5, no component removed"
    setting = read_postprocessing(path)
    return ([("lesion_threshold", setting.threshold), ("min_lesion_ml", setting.min_component_ml)],
            f"predict: post-processing from {path}: threshold {setting.threshold:g}, lesion components below "
            f"{setting.min_component_ml:g} mL removed")


def network_settings(checkpoints: list[Path], plans: str | Path | None) -> list[tuple[str, object]]:
    """The network's config settings for ``checkpoints``: from ``--plans`` when given, else from the
    ``trained_plans.json`` beside the checkpoints (none when there is none).

    Raises:
        CaseError: the checkpoints of an ensemble were trained with different networks (their trained plans differ).
        FileNotFoundError, ValueError: a missing or unreadable plans file.
    """
    if plans:
        return plan_overrides(Path(plans), ARCHITECTURE_KEYS) + trained_network_overrides(Path(plans))
    chosen: list[tuple[str, object]] | None = None
    for checkpoint in checkpoints:
        trained = checkpoint.parent / TRAINED_PLANS
        found = plan_overrides(trained, ARCHITECTURE_KEYS) + trained_network_overrides(trained) if trained.is_file() else []
        if chosen is None:
            chosen, first = found, checkpoint
        elif found != chosen:
            raise CaseError(None, str(checkpoint),
                            f"was trained with another network than {first} ({TRAINED_PLANS} beside them differ): an "
                            "ensemble averages checkpoints of one network; predict with each on its own")
    return chosen or []


def trained_channels(checkpoints: list[Path], plans: str | Path | None) -> list[str] | None:
    """The channels the model was trained on, as its plans record them (``--plans`` when given, else the
    ``trained_plans.json`` beside the first checkpoint); ``None`` when no plans say.

    Raises:
        FileNotFoundError, ValueError: a missing or unreadable ``--plans`` file.
    """
    from pipeline.planning.plans import load_plans

    path = Path(plans) if plans else checkpoints[0].parent / TRAINED_PLANS
    if not plans and not path.is_file():
        return None
    named = load_plans(path).get("channels")
    return [str(c) for c in named] if named else None


def _run_bundle_in_process(command: list[str], shown: list[str], debug: bool) -> int:
    """The bundle line run in this process; its exit status as the process would have had it (0, or 1 with the
    error's one paragraph on stderr, the traceback only with ``debug``)."""
    try:
        run_in_process(command, shown=shown)
    except Exception as err:  # noqa: BLE001 - the run's failure is reported as its process would report it
        if debug:
            import traceback

            traceback.print_exc()
        print(cli_message(err)[1], file=sys.stderr, flush=True)
        return EXIT_FAILED
    return 0


def run_predict(args, in_process: bool = False) -> int:
    """``python -m pipeline predict``: see the module docstring. Returns the exit status.

    Before any inference it checks the records (:func:`pipeline.data.validation.check_records`), the output
    names (:func:`planned_output_names`: plain names, one file per case) and the checkpoint against the
    configured network (:func:`check_checkpoint`); the last while the bundle process starts, which it stops if
    the check fails. The bundle writes into a hidden staging folder inside
    ``--output``; only when it has finished are its results published (:func:`publish_results`), replacing
    every result of an earlier run, so the folder holds one run's predictions, its ``manifest.csv`` and, when
    cases failed, ``failures.csv``. An interrupted run leaves the earlier results as they were.

    ``--checkpoint`` and ``--model`` (:func:`checkpoint_specs`) may name several checkpoints, or a folder of fold
    runs: the bundle then averages the probabilities of one network per checkpoint (``ckpt_path`` as a list, see
    :func:`pipeline.predict.weights.ensemble_network`), all built from the same trained plans (:func:`network_settings`).

    ``args.nproc`` (``--nproc``, default 1) above 1 runs the bundle under ``torch.distributed.run``
    with ``configs/multi_gpu_inference.json`` (one process per GPU on a GPU machine).

    ``in_process`` runs the same ``monai.bundle run`` line in this process (:func:`pipeline.bundles.run_in_process`)
    instead of a new Python process: what the warm ``serve`` worker does, where torch and MONAI are already imported.
    It cannot be combined with ``--nproc``.

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
    if in_process and nproc > 1:
        raise ValueError("--nproc runs the bundle under torch.distributed.run, in processes of its own: it cannot "
                         "run in this process")
    extra_configs = ["multi_gpu_inference.json"] if nproc > 1 else []
    if extra_configs:
        check_bundle(bundle, extra_configs[0])
    output_dir = Path(args.output).resolve()
    checkpoints = resolve_checkpoints(checkpoint_specs(args), bundle / "models" / BEST_MODEL)
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
        datalist_path, split, datalist = input_datalist(input_path, args.split, Path(work),
                                                        channels=trained_channels(checkpoints, args.plans))

        records = load_datalist(datalist_path, split)
        if not records:
            raise ValueError(f"{datalist_path}: no {split!r} records to predict")
        channels = list(datalist.get("channels") or [])
        if args.format == "dicom-seg" and datalist.get("layout") != "dicom":
            raise ValueError(f"--format dicom-seg writes DICOM Segmentations of DICOM series, and {input_path} was read "
                             f"as the {datalist.get('layout') or 'unknown'!r} layout; give a folder of DICOM series "
                             "per patient (or its datalist from prepare), or choose another --format")
        check_records(records, datalist_path, split, channels or None)
        # the challenge container's run has one case; a run of several writes one folder per case
        case_folders = args.format == "isles2024" and len(records) > 1
        planned_output_names(records, args.format, args.name, ".nii.gz", bool(args.probabilities), case_folders)
        settings = [
            ("datalist", str(datalist_path)), ("data_split", split), ("output_dir", str(output_dir)),
            ("ckpt_path", str(checkpoints[0]) if len(checkpoints) == 1 else json.dumps([str(c) for c in checkpoints])),
            ("output_format", "nifti" if args.format == "dicom-seg" else args.format), ("team_name", args.name),
            ("save_probabilities", bool(args.probabilities)), ("channels", channels), ("prediction_run_id", run_id),
        ]
        if case_folders:
            settings.append(("case_folders", True))
        if getattr(args, "strict", False):
            settings.append(("strict_channels", True))
        if getattr(args, "tta", False):
            settings.append(("tta", True))
        if getattr(args, "runtime", "auto") != "auto":
            settings.append(("runtime", args.runtime))
        settings += network_settings(checkpoints, args.plans)
        post, post_line = postprocessing_settings(args, checkpoints)
        settings += post
        profile = profile_path(datalist)

        def check_checkpoints(_run) -> None:
            # while the bundle process starts: both import MONAI (seconds each), and on two or more cores the
            # imports overlap; a failed check stops that process before it has read a case
            check_checkpoints_fit(bundle, profile, settings + overrides, checkpoints, channels)

        created = not output_dir.exists()
        output_dir.mkdir(parents=True, exist_ok=True)
        clear_stale_staging(output_dir)
        staging = output_dir / f"{STAGING_PREFIX}{os.getpid()}-{run_id}"
        staging.mkdir()
        try:
            staged = [(k, str(staging) if k == "output_dir" else v) for k, v in settings]
            command = bundle_command(bundle, "inference.json", profile, staged + overrides, extra_configs)
            equivalent = bundle_command(bundle, "inference.json", profile, settings + overrides, extra_configs)
            if nproc > 1:
                from pipeline.distributed import torchrun_command  # imports MONAI: only for a distributed run

                command, equivalent = torchrun_command(command, nproc), torchrun_command(equivalent, nproc)
            processes = f", {nproc} processes" if nproc > 1 else ""
            if len(checkpoints) > 1:
                print(f"predict: an ensemble of {len(checkpoints)} checkpoints (the mean of their probabilities): "
                      + ", ".join(str(c) for c in checkpoints))
            print(post_line)
            print(f"predict: {len(records)} case(s) from {input_path} -> {output_dir} ({args.format}{processes}); "
                  f"written to {staging.name}/ first, published when the run ends")
            if in_process:
                check_checkpoints(None)
                status = _run_bundle_in_process(command, equivalent, getattr(args, "debug", False))
            else:
                status = run_command(command, on_start=check_checkpoints,
                                     condense_tracebacks=not getattr(args, "debug", False), shown=equivalent)
            if args.format == "dicom-seg":
                from pipeline.predict.dicom_outputs import add_dicom_outputs

                add_dicom_outputs(staging, records, checkpoints, bundle)
            manifest = read_manifest(staging)
            if manifest is None:
                raise CaseError(None, str(output_dir),
                                f"the prediction run stopped before it finished (exit status {status}); nothing was "
                                "published and the folder's earlier results, if any, are unchanged")
            publish_results(staging, output_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if created and not any(output_dir.iterdir()):
                output_dir.rmdir()  # nothing was published: a folder this run made leaves no trace
    written = [e for e in manifest if e.status == WRITTEN]
    failed = [e for e in manifest if e.status == FAILED]
    print(f"predict: wrote {len(written)} prediction(s) to {output_dir} (manifest: {output_dir / MANIFEST_NAME})")
    stages = stage_summary(manifest)
    if stages:
        print(f"predict: seconds per case: {stages}")
    if failed:
        print(f"predict: {len(failed)} case(s) failed (table: {output_dir / FAILURES_NAME}):", file=sys.stderr)
        for entry in failed:
            print(f"  {entry.error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0 if status == 0 else EXIT_FAILED
