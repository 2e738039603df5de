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

import re
import tempfile
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from pipeline.bundles import bundle_command, check_bundle, parse_overrides, profile_path, run_command
from pipeline.data.datalist import strip_image_suffix
from pipeline.distributed import torchrun_command
from pipeline.errors import CaseError
from pipeline.io import IMAGE_SUFFIXES, atomic_path, write_mask_like
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
        ValueError: unknown format, bad team name, or no SMIR id for an ISLES 2018 name.
    """
    if output_format == "nifti":
        return f"{case_id}{extension}"
    if output_format == "isles2018":
        if not TEAM_NAME.match(team_name or ""):
            raise ValueError(f"team name {team_name!r} must be letters, digits, '_' or '-' (it sits between dots)")
        if not smir_id:
            raise CaseError(case_id, reference_path, "no SMIR id of a CT_MTT folder: cannot name an ISLES 2018 submission")
        return f"SMIR.{team_name}.{smir_id}.nii"
    if output_format == "isles2022":
        name = Path(reference_path or case_id).name
        stem = strip_image_suffix(name) or name
        stem = re.sub(r"_dwi$", "_msk", stem, flags=re.IGNORECASE) if re.search(r"_dwi$", stem, re.I) else f"{stem}_msk"
        return f"{stem}{extension}"
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
        case_id = str(_first(d.get(self.case_key)))
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
            path = write_mask_like(mask.numpy().astype(np.uint8), reference, self.output_dir / name)
            d[f"{key}_path"] = str(path)
            if self.save_probabilities:
                stem = name[: -len(self.extension)] if name.endswith(self.extension) else name
                target = self.output_dir / f"{stem}_probabilities.npz"
                affine = np.asarray(getattr(d[key], "affine", np.eye(4)))
                with atomic_path(target) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez_compressed(f, probabilities=foreground.numpy().astype(np.float16), affine=affine)
        return d


# ---------------------------------------------------------------------------------------------
# The `predict` command
# ---------------------------------------------------------------------------------------------
def existing_outputs(output_dir: Path) -> list[Path]:
    """Prediction files already in ``output_dir`` (images and probability maps)."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES + (".npz",)))


def input_datalist(input_path: Path, split: str, work_dir: Path, layout: str = "auto") -> tuple[Path, str, dict]:
    """Resolve ``--input`` to a datalist file and split.

    A datalist JSON is used as it is. A folder is read with its layout (auto-detected) and its
    cases of ``split`` (a case without a label counts as ``testing``) are written to a datalist in
    ``work_dir`` under ``testing``.

    Returns:
        ``(datalist path, split to predict, datalist dict)``.

    Raises:
        LayoutError, CaseError: from the layout readers.
        ValueError: the folder has no case of ``split``.
    """
    import json

    from pipeline.data.datalist import build_datalist, select_channels, write_datalist
    from pipeline.data.layouts import discover_cases

    if input_path.is_file():
        return input_path, split, json.loads(input_path.read_text())
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

    ``args.nproc`` (``--nproc``, default 1) above 1 runs the bundle under ``torch.distributed.run``
    with ``configs/multi_gpu_inference.json`` (one process per GPU on a GPU machine).

    Raises:
        FileNotFoundError: no such bundle (or, with ``--nproc``, no ``multi_gpu_inference.json``), input or checkpoint.
        ValueError: results already in the output folder without ``--overwrite``, a bad format,
            override or ``--nproc``.
    """
    bundle = check_bundle(args.bundle, "inference.json")
    nproc = int(getattr(args, "nproc", None) or 1)
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    extra_configs = ["multi_gpu_inference.json"] if nproc > 1 else []
    if extra_configs:
        check_bundle(bundle, extra_configs[0])
    output_dir = Path(args.output).resolve()
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else bundle / "models" / "model.pt"
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
    if output_dir == input_path:
        raise ValueError("--output must not be the input")
    with tempfile.TemporaryDirectory(prefix="predict-") as work:
        datalist_path, split, datalist = input_datalist(input_path, args.split, Path(work))
        records = datalist.get(split) or []
        if not records:
            raise ValueError(f"{datalist_path}: no {split!r} records to predict")
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "failures.csv").unlink(missing_ok=True)
        settings = [
            ("datalist", str(datalist_path)), ("data_split", split), ("output_dir", str(output_dir)),
            ("ckpt_path", str(checkpoint)), ("output_format", args.format), ("team_name", args.name),
            ("save_probabilities", bool(args.probabilities)), ("channels", list(datalist.get("channels") or [])),
        ]
        plans = Path(args.plans) if args.plans else checkpoint.parent / TRAINED_PLANS
        if args.plans or plans.is_file():
            settings += plan_overrides(plans, ARCHITECTURE_KEYS) + trained_network_overrides(plans)
        command = bundle_command(bundle, "inference.json", profile_path(datalist), settings + overrides, extra_configs)
        if nproc > 1:
            command = torchrun_command(command, nproc)
        processes = f", {nproc} processes" if nproc > 1 else ""
        print(f"predict: {len(records)} case(s) from {input_path} -> {output_dir} ({args.format}{processes})")
        status = run_command(command)
    failures = output_dir / "failures.csv"
    if failures.is_file():
        print(f"predict: some cases failed (table: {failures}):")
        print(failures.read_text().rstrip())
    elif status == 0:
        print(f"predict: wrote {len(records)} prediction(s) to {output_dir}")
    return 0 if status == 0 else 1
