"""Prediction delivery: output names per format, the writer transform, and ``python -m pipeline predict``.

``predict`` is a thin wrapper: it turns its input into a datalist, prints the equivalent
``python -m monai.bundle run ...`` line for the bundle's inference config and runs it; with
``--nproc N`` it runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m monai.bundle
run ...`` with the bundle's ``multi_gpu_inference.json`` merged after ``inference.json`` (each process
predicts its share of the cases; the files written are the same as with one process). The config's
post-processing inverts the preprocessing (MONAI ``Invertd``) and ends in :class:`SavePredictiond`,
which writes each case on the native grid of its reference modality with that file's header.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from pipeline.bundles import bundle_command, check_bundle, parse_overrides, process_alive, profile_path, run_command
from pipeline.data.datalist import strip_image_suffix
from pipeline.distributed import torchrun_command
from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, CaseError, root_cause
from pipeline.io import IMAGE_SUFFIXES, atomic_path, fsync_directory, remove_stale_partials, write_mask_like
from pipeline.manifest import (
    FAILED, FAILURES_NAME, MANIFEST_NAME, PROBABILITIES_SUFFIX, RUN_FILES, WRITTEN, new_run_id, read_manifest,
)
from pipeline.paths import path_in, plain_component
from pipeline.training import ARCHITECTURE_KEYS, TRAINED_PLANS, plan_overrides, trained_network_overrides

OUTPUT_FORMATS = ("nifti", "isles2018", "isles2022")
TEAM_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _first(value: Any) -> Any:
    """Collated or decollated values may still be one-element lists; take the element."""
    while isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return value


def prediction_filename(
    output_format: str,
    case_id: str,
    reference_path: str | None = None,
    smir_id: str | None = None,
    team_name: str = "team",
    extension: str = ".nii.gz",
) -> str:
    """The file name of one case's prediction.

    Args:
        output_format: ``nifti`` (``<case_id>.nii.gz``), ``isles2018`` (``SMIR.<team>.<smir_id>.nii``,
            smir_id = the SMIR id of the case's CT_MTT folder) or ``isles2022`` (the DWI file's name with
            ``_dwi`` replaced by ``_msk``, the ISLES 2022 derivative naming, so truths pair by name).
        case_id: the case.
        reference_path: the reference (DWI for ISLES 2022) file.
        smir_id: ISLES 2018 submission id.
        team_name: ISLES 2018 team name (letters, digits, ``_`` and ``-``).
        extension: ``.nii.gz``, ``.nii`` or ``.mha`` (ISLES 2022 and nifti formats).

    Returns:
        The file name (no folder).

    Raises:
        ValueError: unknown format or bad team name.
        CaseError: no SMIR id for an ISLES 2018 name, or a name from the case (case id, SMIR id, DWI name) that is
            not one plain file-name component (:func:`pipeline.paths.plain_component`).
    """
    if output_format == "nifti":
        return plain_component(case_id, case_id, "case_id") + extension
    if output_format == "isles2018":
        if not TEAM_NAME.match(team_name or ""):
            raise ValueError(f"team name {team_name!r} must be letters, digits, '_' or '-' (it sits between dots)")
        if not smir_id:
            raise CaseError(case_id, reference_path, "no SMIR id of a CT_MTT folder: cannot name an ISLES 2018 submission")
        smir = plain_component(smir_id, case_id, "smir_id")
        if "." in smir:
            raise CaseError(case_id, reference_path, f"the smir_id {smir!r} holds a '.'; an ISLES 2018 name is SMIR.<team>.<id>.nii")
        return f"SMIR.{team_name}.{smir}.nii"
    if output_format == "isles2022":
        name = Path(reference_path or plain_component(case_id, case_id, "case_id")).name
        stem = strip_image_suffix(name) or name
        stem = re.sub(r"_dwi$", "_msk", stem, flags=re.IGNORECASE) if re.search(r"_dwi$", stem, re.I) else f"{stem}_msk"
        return plain_component(stem, case_id, "DWI file name") + extension
    raise ValueError(f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")


class SavePredictiond(MapTransform):
    """Write each case's prediction on its reference grid, named for the chosen format.

    Expects ``pred`` to be class probabilities ``(C, *spatial)`` already brought back to the native
    grid (MONAI ``Invertd``); the mask is the argmax over classes (``> 0.5`` for one channel), written
    as uint8 0/1 with the reference file's header (:func:`pipeline.io.write_mask_like`). With
    ``save_probabilities`` the foreground probability is also written as float16 to
    ``<name>_probabilities.npz`` (arrays ``probabilities`` and ``affine``; NIfTI has no float16).

    Args:
        keys: the prediction key.
        output_dir: the folder outputs go to.
        output_format: see :func:`prediction_filename`.
        team_name: ISLES 2018 team name.
        extension: file extension for the ``nifti`` and ``isles2022`` formats.
        reference_key, case_key, smir_key: record keys of the reference file, case id and SMIR id.
        save_probabilities: also write the probabilities.

    Raises (on call):
        CaseError: a record lacks its reference file; ValueError: a prediction off the reference grid.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | Path = "predictions",
        output_format: str = "nifti",
        team_name: str = "team",
        extension: str = ".nii.gz",
        reference_key: str = "reference",
        case_key: str = "case_id",
        smir_key: str = "smir_id",
        save_probabilities: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
        if output_format == "isles2018":
            extension = ".nii"
        self.output_dir = Path(output_dir)
        self.output_format = output_format
        self.team_name = team_name
        self.extension = extension
        self.reference_key = reference_key
        self.case_key = case_key
        self.smir_key = smir_key
        self.save_probabilities = save_probabilities

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case_id = _first(d.get(self.case_key))
        if case_id is None or str(case_id) == "":
            raise CaseError(None, _first(d.get(self.reference_key)), f"the record has no {self.case_key!r}: outputs are named by it")
        case_id = str(case_id)
        reference = _first(d.get(self.reference_key))
        if not reference:
            raise CaseError(case_id, None, f"the record has no {self.reference_key!r} file to take the output grid from")
        name = prediction_filename(
            self.output_format, case_id, str(reference), _first(d.get(self.smir_key)), self.team_name, self.extension
        )
        for key in self.key_iterator(d):
            probabilities = torch.as_tensor(d[key]).detach().float().cpu()
            if probabilities.shape[0] > 1:
                mask = probabilities.argmax(0)
                foreground = probabilities[1:].sum(0)
            else:
                foreground = probabilities[0]
                mask = foreground > 0.5
            path = write_mask_like(mask.numpy().astype(np.uint8), reference, path_in(self.output_dir, name, case_id, "output name"))
            d[f"{key}_path"] = str(path)
            if self.save_probabilities:
                stem = name[: -len(self.extension)] if name.endswith(self.extension) else name
                target = path_in(self.output_dir, f"{stem}{PROBABILITIES_SUFFIX}", case_id, "output name")
                affine = np.asarray(getattr(d[key], "affine", np.eye(4)))
                with atomic_path(target) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez_compressed(f, probabilities=foreground.numpy().astype(np.float16), affine=affine)
        return d


# ---------------------------------------------------------------------------------------------
# The `predict` command
# ---------------------------------------------------------------------------------------------
STAGING_PREFIX = ".staging-"


def is_result_file(path: Path) -> bool:
    """True for a file a predict run writes: a prediction image, a probability map, the manifest or the failures
    table (hidden files, partial writes among them, are not results)."""
    name = path.name
    if name.startswith("."):
        return False
    return name in RUN_FILES or name.lower().endswith(IMAGE_SUFFIXES) or name.endswith(PROBABILITIES_SUFFIX)


def existing_outputs(output_dir: Path) -> list[Path]:
    """Prediction files already in ``output_dir`` (images and probability maps; not hidden or partial files)."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir()
                  if p.is_file() and is_result_file(p) and p.name not in RUN_FILES)


def planned_output_names(
    records: list[dict],
    output_format: str,
    team_name: str = "team",
    extension: str = ".nii.gz",
    probabilities: bool = False,
) -> dict[str, list[str]]:
    """The files each record will write, checked before any inference.

    Args:
        records: the records to predict (each with ``case_id`` and, per format, ``reference``/``smir_id``).
        output_format, team_name, extension: see :func:`prediction_filename`.
        probabilities: the run also writes ``<name>_probabilities.npz``.

    Returns:
        ``case_id -> [file names]``.

    Raises:
        CaseError: a name is not a plain file-name component, or two records would write the same file
            (naming both records and the file).
    """
    if output_format == "isles2018":
        extension = ".nii"
    owners: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    for record in records:
        case_id = str(record.get("case_id"))
        name = prediction_filename(output_format, case_id, record.get("reference"), record.get("smir_id"),
                                   team_name, extension)
        files = [name]
        if probabilities:
            stem = name[: -len(extension)] if name.endswith(extension) else name
            files.append(f"{stem}{PROBABILITIES_SUFFIX}")
        for file in files:
            if file.lower() in owners:
                raise CaseError(case_id, None,
                                f"cases {owners[file.lower()]!r} and {case_id!r} would both write {file!r} "
                                f"(format {output_format}); one would overwrite the other. Give them distinct ids")
            owners[file.lower()] = case_id
        names[case_id] = files
    return names


def clear_stale_staging(output_dir: Path) -> list[Path]:
    """Remove the staging folders that killed runs left in ``output_dir`` (those whose process is gone) and
    the partial files of interrupted writes. Returns what was removed."""
    removed = list(remove_stale_partials(output_dir))
    for folder in output_dir.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and not process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def publish_results(staging: Path, output_dir: Path) -> list[Path]:
    """Make the staged results of a run the output folder's only results.

    The previous run's manifest goes first (so the folder never claims a set it does not hold), then its other
    result files, then the staged files move in (renames on one file system), the manifest last.

    Returns:
        The published files.
    """
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)
    fresh = {p.name for p in staging.iterdir() if p.is_file() and is_result_file(p)}
    for old in output_dir.iterdir():
        if old.is_file() and is_result_file(old):
            old.unlink()
    fsync_directory(output_dir)
    published = []
    for name in sorted(fresh, key=lambda n: n == MANIFEST_NAME):
        os.replace(staging / name, output_dir / name)
        published.append(output_dir / name)
    fsync_directory(output_dir)
    return published


def check_checkpoint(checkpoint: Path, network: torch.nn.Module, channels: list[str]) -> None:
    """Check that ``checkpoint`` loads (``weights_only``) and fits ``network`` before a run starts.

    Raises:
        CaseError: the file is truncated, corrupt or not a PyTorch checkpoint, or its weights are not the
            network's (another architecture, width or channel count); the message names the file and the difference.
    """
    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file; the message names it
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CaseError(None, str(checkpoint),
                        f"cannot be loaded as PyTorch weights ({type(err).__name__}: {first}); it may be truncated, "
                        "corrupt, or not a checkpoint of this project. Give another --checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CaseError(None, str(checkpoint), "holds no state dict of a network (expected a 'model' entry)")
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or mismatched):
        return
    first_weight = next((k for k, v in expected.items() if v.dim() >= 3), None)
    if first_weight in mismatched and state[first_weight].shape[1] != expected[first_weight].shape[1]:
        raise CaseError(None, str(checkpoint),
                        f"the checkpoint's network takes {state[first_weight].shape[1]} input channel(s) but this "
                        f"run gives {expected[first_weight].shape[1]} ({', '.join(channels)}); predict with the "
                        "channels it was trained on (prepare --channels) or another --checkpoint")
    details = []
    if mismatched:
        k = mismatched[0]
        details.append(f"{len(mismatched)} weight(s) of another shape, e.g. {k} {tuple(state[k].shape)} in the "
                       f"checkpoint versus {tuple(expected[k].shape)} in the network")
    if missing:
        details.append(f"{len(missing)} weight(s) missing, e.g. {missing[0]}")
    if unexpected:
        details.append(f"{len(unexpected)} unknown weight(s), e.g. {unexpected[0]}")
    raise CaseError(None, str(checkpoint),
                    "the checkpoint is not a checkpoint of this bundle's network as configured (" + "; ".join(details)
                    + "); give the plans it was trained with (--plans, or trained_plans.json beside it) or another --checkpoint")


def configured_network(bundle: Path, profile: Path, settings: list[tuple[str, object]]) -> torch.nn.Module:
    """The ``network_def`` of a bundle's inference config with the run's settings, built on the CPU.

    Raises:
        ValueError: the config cannot build the network with these settings.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), str(profile)])
    for key, value in settings:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        parser[key] = value
    try:
        return parser.get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001 - any config error is reported as one message
        raise ValueError(f"{bundle}: cannot build network_def from configs/inference.json with these settings: "
                         f"{str(root_cause(err)).strip()}") from err


def input_datalist(input_path: Path, split: str, work_dir: Path, layout: str = "auto") -> tuple[Path, str, dict]:
    """Resolve ``--input`` to a datalist file and split.

    A datalist JSON is used as it is. A folder is read with its layout (auto-detected) and its
    cases of ``split`` (a case without a label counts as ``testing``) are written to a datalist in
    ``work_dir`` under ``testing``.

    Returns:
        ``(datalist path, split to predict, datalist dict)``.

    Raises:
        LayoutError, CaseError: from the layout readers.
        ValueError: the folder has no case of ``split``, or the datalist file is not a JSON object.
    """
    from pipeline.data.datalist import build_datalist, read_datalist_json, select_channels, write_datalist
    from pipeline.data.layouts import discover_cases

    if input_path.is_file():
        return input_path, split, read_datalist_json(input_path)
    found_layout, profile, records = discover_cases(input_path, layout)
    records = [r for r in records if r.split == split]
    if not records:
        raise ValueError(f"{input_path}: no {split} cases found (choose the split with --split)")
    for record in records:
        record.split = "testing"
    records, _ = select_channels(records, profile, skip_incomplete=False)
    out = work_dir / "datalist.json"
    datalist = build_datalist(records, profile, found_layout, input_path, out, n_folds=1, seed=0)
    write_datalist(datalist, out)
    return out, "testing", datalist


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
        from pipeline.data.datalist import load_datalist

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
