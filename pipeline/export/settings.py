"""What an exported bundle bakes into its configs: the dataset profile, the trained network's settings, the
channels it was trained with and its fitted post-processing, so that the exported bundle runs with its own configs
alone.

``predict`` gives a bundle run the same things on its command line (the profile merged after the configs, the
``trained_plans.json`` beside the checkpoint as overrides, the datalist's channels); :func:`export_settings`
collects them once, in the order the bundle run would apply them, and :func:`bake` writes them into the config
files themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bundles import parse_overrides, profile_path
from pipeline.planning.bundle_settings import PLANNED_KEYS, TRAINED_PLANS, plan_overrides, trained_network_overrides

# config ids that always point into the exported bundle (``bundle_root`` "." as the zoo has it)
BUNDLE_PATHS = {
    "bundle_root": ".",
    "ckpt_dir": "$@bundle_root + '/models'",
    "ckpt_path": "$@bundle_root + '/models/model.pt'",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "$@bundle_root + '/data'",
    "datalist": "$@dataset_dir + '/datalist.json'",
}


@dataclass
class ExportSettings:
    """The settings of an export.

    Attributes:
        profile: the dataset profile YAML merged into the bundle's runs.
        channels: the channels the network was trained with, in order.
        channels_source: where ``channels`` came from (for the messages and the docs).
        plans: the plans file the network settings came from, ``None`` when there is none.
        settings: ``(config id, value)`` pairs, later ones winning: the profile's keys, the channels, the trained
            plans, the post-processing, the ``--set`` overrides.
        postprocessing: the ``postprocessing.json`` of the checkpoint's run, ``None`` when there is none.
    """

    profile: Path
    channels: list[str]
    channels_source: str
    plans: Path | None
    settings: list[tuple[str, Any]]
    postprocessing: Path | None = None


def config_value(value: Any) -> Any:
    """A setting as the config holds it: a string given on the command line is read as JSON when it is JSON
    (``[4,8,8]``, ``true``, ``0.5``), as :func:`pipeline.predict.checkpoint.configured_network` reads it."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f) or {}
    except OSError as err:
        raise FileNotFoundError(f"dataset profile {str(path)!r} cannot be read: {err.strerror}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a dataset profile must be a mapping of config ids to values")
    return content


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    from pipeline.io.jsonfile import read_json

    return read_json(path, f"{what} {path}")


def export_settings(
    checkpoint: Path,
    plans: str | Path | None = None,
    channels: Sequence[str] | None = None,
    datalist: str | Path | None = None,
    profile: str | Path | None = None,
    overrides: Sequence[str] | None = None,
) -> ExportSettings:
    """The settings an exported bundle bakes in, as ``predict`` would give them to the bundle run.

    Args:
        checkpoint: the checkpoint file (its folder may hold ``trained_plans.json``).
        plans: the plans the network was trained with (default: ``trained_plans.json`` beside the checkpoint,
            when there is one).
        channels: the channels the network was trained with (default: those of ``datalist``, else of the plans,
            else the profile's ``default_channels``).
        datalist: the datalist the network was trained with (its ``channels`` and ``profile``).
        profile: the dataset profile (default: the one the datalist or plans name, else ISLES 2018).
        overrides: ``KEY=VALUE`` config overrides (``--set``), applied last.

    The post-processing is that of the checkpoint's run folder (``RUN/postprocessing.json`` for
    ``RUN/models/model.pt``), as ``predict`` finds it.

    Returns:
        The settings (:class:`ExportSettings`).

    Raises:
        FileNotFoundError: a named plans file, datalist or profile does not exist.
        ValueError: an unreadable one, or a malformed override.
    """
    plans_path = Path(plans) if plans else checkpoint.parent / TRAINED_PLANS
    plans_path = plans_path if plans or plans_path.is_file() else None
    plans_content = _read_json_object(plans_path, "plans file") if plans_path else {}
    datalist_content = _read_json_object(Path(datalist), "datalist") if datalist else {}
    name = profile or datalist_content.get("profile") or plans_content.get("profile") or None
    profile_file = Path(profile) if profile and Path(profile).suffix else profile_path({"profile": name})
    profile_content = _read_yaml(profile_file)

    if channels:
        chosen, source = [str(c) for c in channels], "--channels"
    elif datalist_content.get("channels"):
        chosen, source = list(datalist_content["channels"]), f"the datalist {datalist}"
    elif plans_content.get("channels"):
        chosen, source = list(plans_content["channels"]), f"the plans {plans_path}"
    else:
        chosen, source = list(profile_content.get("default_channels") or []), f"the dataset profile {profile_file}"

    settings: list[tuple[str, Any]] = list(profile_content.items())
    settings.append(("channels", chosen))
    if plans_path is not None:
        settings += plan_overrides(plans_path, PLANNED_KEYS)
        settings += [(k, config_value(v)) for k, v in trained_network_overrides(plans_path)]
    from pipeline.postprocessing.store import postprocessing_for, read_postprocessing

    fitted = postprocessing_for([checkpoint.parent.parent])
    if fitted is not None:
        setting = read_postprocessing(fitted)
        settings += [("lesion_threshold", setting.threshold), ("min_lesion_ml", setting.min_component_ml)]
    settings += [(k, config_value(v)) for k, v in parse_overrides(overrides)]
    return ExportSettings(profile_file, chosen, source, plans_path, settings, fitted)


def _references(config: Any, name: str) -> bool:
    """True when a string of ``config`` refers to the config id ``name`` (``@name``)."""
    if isinstance(config, str):
        return re.search("@" + re.escape(name) + r"(?![A-Za-z0-9_])", config) is not None
    if isinstance(config, Mapping):
        return any(_references(v, name) for v in config.values())
    if isinstance(config, list):
        return any(_references(v, name) for v in config)
    return False


def _set(config: dict[str, Any], key: str, value: Any) -> bool:
    """Set the config id ``key`` (``a#b#0``) in ``config``, creating the mappings on the way; False (nothing set)
    where the path runs through a value that is neither a mapping nor a list (``amp#_target_`` where ``amp`` is
    ``false``), or past the end of a list."""
    parts = key.split("#")
    node: Any = config
    for index, part in enumerate(parts):
        if not isinstance(node, (dict, list)) or (isinstance(node, list) and not (
                part.isdigit() and int(part) < len(node))):
            return False
        if index == len(parts) - 1:
            break
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value
    return True


def bake(config: dict[str, Any], settings: Sequence[tuple[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """``config`` with ``settings`` written into it, and the paths of the exported bundle.

    A setting is written when the config holds its first id component or refers to it (``@channels``), so a
    config gets only what it uses (``inference.json`` no ``label_values``, an overlay such as
    ``multi_gpu_inference.json`` only what it overrides itself). :data:`BUNDLE_PATHS` that the config holds are
    set last: the exported bundle never points outside itself.

    Args:
        config: a parsed config (not changed).
        settings: ``(config id, value)`` pairs, later ones winning.

    Returns:
        The new config and the ids written into it.
    """
    baked = json.loads(json.dumps(config))
    written = []
    for key, value in settings:
        root = key.split("#")[0]
        if (root in baked or _references(baked, root)) and _set(baked, key, value):
            written.append(key)
    for key, value in BUNDLE_PATHS.items():
        if key in baked:
            baked[key] = value
    return baked, list(dict.fromkeys(written))
