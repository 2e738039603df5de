"""``python -m pipeline export`` as a function: a bundle and a trained checkpoint to a standalone zoo bundle.

:func:`export_bundle` checks everything first (the output folder, the checkpoint against the network the settings
configure), then builds the bundle in a hidden temporary folder beside ``out`` and renames it into place only when
every file is written, so a failed export leaves nothing under ``out`` (and an earlier bundle there, replaced with
``overwrite``, survives a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bundles import check_bundle
from pipeline.errors import CaseError
from pipeline.export import docs, metadata as meta, settings as baking, vendoring, weights
from pipeline.io.atomic import _UMASK, fsync_directory
from pipeline.io.jsonfile import read_json

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# files of the source bundle copied as they are (besides configs/)
COPIED = ("LICENSE",)
STAGING_PREFIX = ".export-"


@dataclass
class ExportResult:
    """What :func:`export_bundle` wrote.

    Attributes:
        out: the bundle folder.
        version: its version.
        eval_metrics: the score in its metadata.
        channels: the input channels.
        modules: the project modules vendored under ``scripts/`` (stubs included).
        requirements: ``NAME==VERSION`` of every package the metadata lists.
        baked: config file -> the config ids written into it.
    """

    out: Path
    version: str
    eval_metrics: dict[str, Any]
    channels: list[str]
    modules: list[str]
    requirements: list[str]
    baked: dict[str, list[str]] = field(default_factory=dict)


def format_json(obj: Any) -> str:
    """JSON as the model zoo's pre-commit formats config files (``pretty-format-json --no-sort-keys --indent=4``)."""
    return json.dumps(obj, indent=4) + "\n"


def check_output(out: Path, overwrite: bool, protected: Sequence[Path]) -> None:
    """Refuse an output folder that must not be written.

    Raises:
        ValueError: ``out`` is a file, is not empty and ``overwrite`` is off, or is (or holds) one of ``protected``
            (the source bundle, the checkpoint), which replacing it would delete.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the exported bundle")
    for path in protected:
        if out == path or out in path.parents:
            raise ValueError(f"--out {out} is or holds {path}, which the export reads; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"--out {out} exists and is not empty; pass --overwrite to replace it or choose another "
                         "folder")


def _eval_metrics(checkpoint: Path, given: str | None) -> tuple[dict[str, Any], str]:
    """The scores for the metadata: ``--eval-metrics`` (a JSON object, or a JSON file holding one) when given,
    else the best validation mean Dice recorded by the training run."""
    if given:
        path = Path(given)
        try:
            value = read_json(path, f"--eval-metrics file {path}") if path.is_file() else json.loads(given)
        except json.JSONDecodeError:
            raise ValueError(f"--eval-metrics {given!r} is neither a JSON object nor a JSON file") from None
        if not isinstance(value, dict) or not value:
            raise ValueError(f"--eval-metrics must be a non-empty JSON object such as '{{\"mean_dice\": 0.5}}', "
                             f"got {given!r}")
        return value, "given with --eval-metrics"
    score = weights.recorded_score(checkpoint)
    if score is None:
        raise CaseError(None, str(checkpoint),
                        f"no validation score is recorded with this checkpoint (AtomicCheckpointSaver's "
                        f"'{weights.BEST_SCORE_KEY}' in it or in {weights.FINAL_MODEL} beside it); give the score "
                        "measured otherwise with --eval-metrics '{\"mean_dice\": 0.51}'")
    epoch = f", epoch {score['epoch']}" if score["epoch"] >= 0 else ""
    return {"mean_dice": round(score["mean_dice"], 4)}, \
        f"the best validation mean Dice of the training run{epoch}, recorded in {score['source'].name}"


def _config_files(bundle: Path) -> list[Path]:
    return sorted(p for p in (bundle / "configs").iterdir() if p.is_file() and p.name != "metadata.json")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _write_configs(staging: Path, bundle: Path, chosen: baking.ExportSettings
                   ) -> tuple[dict[str, Any], list[str], vendoring.VendoringPlan, dict[str, list[str]]]:
    """The configs with the settings baked in and the project names rewritten, and the vendored code they need,
    written into ``staging``. Returns the exported JSON configs, the names of the other config files, the
    vendoring plan and the ids baked into each config."""
    configs: dict[str, Any] = {}
    others: list[str] = []
    for path in _config_files(bundle):
        if path.suffix == ".json":
            configs[path.name] = read_json(path, f"bundle config {path}")
        else:
            _write_text(staging / "configs" / path.name, path.read_text(encoding="utf-8"))
            others.append(path.name)
    baked: dict[str, Any] = {}
    baked_ids: dict[str, list[str]] = {}
    for file_name, config in configs.items():
        baked[file_name], baked_ids[file_name] = baking.bake(config, chosen.settings)
    plan = vendoring.plan_vendoring(baked.values(), PROJECT_ROOT)  # --set may name project code too
    exported = {file_name: vendoring.rewrite_references(config, plan.references) for file_name, config in baked.items()}
    for file_name, config in exported.items():
        _write_text(staging / "configs" / file_name, format_json(config))
    vendoring.write_vendored(plan, PROJECT_ROOT, staging)
    return exported, others, plan, baked_ids


def _write_metadata(staging: Path, bundle: Path, plan: vendoring.VendoringPlan, exported: dict[str, Any],
                    channels: list[str], network: Any, version: str | None, changelog: str | None,
                    scores: dict[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json`` of the exported bundle, written into ``staging``; returns it."""
    from pipeline.inferers.network_traits import size_divisor_of, tile_independent

    source = read_json(bundle / "configs" / "metadata.json", f"bundle metadata {bundle}")
    requirements = meta.requirement_fields(meta.required_distributions(plan.third_party, list(exported.values())))
    new_version = version or meta.bump_version(source.get("version", "0.1.0"))
    described = ", ".join(f"{k} {v}" for k, v in scores.items())
    entry = changelog or (f"exported by python -m pipeline export from {bundle.name} with trained weights "
                          f"({described}); code vendored under scripts/")
    shape = meta.spatial_shape(size_divisor_of(network, 3), not tile_independent(network))
    new = meta.exported_metadata(source, new_version, entry, scores, requirements, channels, shape)
    _write_text(staging / "configs" / "metadata.json", format_json(new))
    return new


def _build(staging: Path, bundle_name: str, bundle: Path, checkpoint: Path, chosen: baking.ExportSettings,
           state: dict, network: Any, version: str | None, changelog: str | None,
           metrics: tuple[dict, str]) -> ExportResult:
    """Write every file of the exported bundle into ``staging``."""
    exported, others, plan, baked_ids = _write_configs(staging, bundle, chosen)
    scores, score_source = metrics
    new_meta = _write_metadata(staging, bundle, plan, exported, chosen.channels, network, version, changelog, scores)
    model = weights.write_weights(state, staging / "models" / weights.BEST_MODEL)
    torchscript = weights.export_torchscript(staging, model, staging / "models" / weights.TORCHSCRIPT)
    _write_text(staging / "large_files.yml", docs.large_files_yaml(
        [(f"models/{p.name}", weights.md5sum(p)) for p in (model, torchscript)]))
    for file_name in COPIED:
        if (bundle / file_name).is_file():
            shutil.copyfile(bundle / file_name, staging / file_name)
    modules = sorted(plan.modules)
    source = {"bundle": bundle.name, "checkpoint": checkpoint.name, "score": score_source}
    text = docs.readme(new_meta, bundle_name, source, sorted([*exported, *others, "metadata.json"]), len(modules))
    _write_text(staging / "docs" / "README.md", text)
    pins = [f"{k}=={new_meta[f]}" for k, f in meta.OWN_KEYS.items()] + \
        [f"{k}=={v}" for k, v in new_meta["required_packages_version"].items()]
    return ExportResult(staging, new_meta["version"], scores, chosen.channels, modules, pins, baked_ids)


def _publish(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` folder in place of ``out`` (renames; the old ``out`` is removed last)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    fsync_directory(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_bundle(
    bundle: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    overwrite: bool = False,
    plans: str | Path | None = None,
    channels: Sequence[str] | None = None,
    datalist: str | Path | None = None,
    profile: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    version: str | None = None,
    changelog: str | None = None,
    eval_metrics: str | None = None,
) -> ExportResult:
    """Export ``bundle`` with the weights of ``checkpoint`` as a standalone model-zoo bundle in ``out``.

    Args:
        bundle: the source bundle folder (``bundles/<name>``).
        checkpoint: the weights: a checkpoint file or a ``train --output`` folder (:func:`weights.checkpoint_file`).
        out: the folder to write; it must not exist or be empty, unless ``overwrite``.
        overwrite: replace a non-empty ``out`` (only once the new bundle is complete).
        plans, channels, datalist, profile, overrides: the settings baked into the configs
            (:func:`pipeline.export.settings.export_settings`).
        version: the exported bundle's version (default: the source's with its patch number raised).
        changelog: its changelog entry (default: says what was exported).
        eval_metrics: the scores for the metadata, a JSON object or a file holding one (default: the best
            validation mean Dice the training run recorded).

    Returns:
        What was written (:class:`ExportResult`).

    Raises:
        FileNotFoundError: no such bundle, checkpoint, plans file, datalist or profile.
        ValueError: a refused ``out`` (:func:`check_output`), a bad option, or code the configs name that cannot
            be vendored.
        CaseError: the checkpoint does not load, does not fit the configured network, or holds no score and no
            ``eval_metrics`` is given.
        RuntimeError: the TorchScript export of the new bundle failed.
    """
    from pipeline.predict.checkpoint import check_checkpoint, configured_network

    bundle = check_bundle(bundle, "inference.json")
    checkpoint = weights.checkpoint_file(checkpoint)
    out = Path(out).expanduser().resolve()
    check_output(out, overwrite, [bundle, checkpoint, PROJECT_ROOT])
    chosen = baking.export_settings(checkpoint, plans, channels, datalist, profile, overrides)
    network = configured_network(bundle, chosen.profile, chosen.settings)
    check_checkpoint(checkpoint, network, chosen.channels)
    state = weights.network_state(checkpoint)
    metrics = _eval_metrics(checkpoint, eval_metrics)

    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out.name}-", dir=out.parent))
    try:
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp's folder is the owner's alone; the bundle is for sharing
        result = _build(staging, out.name, bundle, checkpoint, chosen, state, network.eval(), version, changelog,
                        metrics)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    result.out = out
    return result
