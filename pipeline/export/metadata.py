"""``configs/metadata.json`` of an exported bundle: the version and its changelog entry, the measured score, the
packages the bundle needs at versions that install on Python 3.10 through 3.13, and the network's data format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The versions the metadata pins (the model zoo installs ``NAME==VERSION``). Each has wheels for CPython 3.10, 3.11,
# 3.12 and 3.13 on Linux x86_64 (checked with ``pip install --dry-run --no-deps --ignore-installed --only-binary=:all:
# --python-version 3.1X --target DIR NAME==VERSION``), and together they satisfy each other's requirements
# (monai 1.6.1: torch>=2.8, numpy>=1.24,<3; scipy 1.15.3: numpy>=1.23.5,<2.5; nibabel 5.4.2: numpy>=1.25;
# pytorch-ignite 0.5.5: torch>=2.2,<3). Newer releases that need Python 3.11 are left out on purpose: numpy 2.3/2.4,
# scipy 1.16/1.17, pandas 3. PyYAML 6.0 (no wheels beyond CPython 3.11) is left out too.
PINNED_VERSIONS = {
    "monai": "1.6.1",
    "torch": "2.13.0",
    "numpy": "2.2.6",
    "nibabel": "5.4.2",
    "SimpleITK": "2.5.7",
    "pytorch-ignite": "0.5.5",
    "scipy": "1.15.3",
    "pyyaml": "6.0.4",
    "tqdm": "4.70.1",
    "fire": "0.7.1",
    "tensorboard": "2.21.0",
    "pandas": "2.3.3",
}
# metadata.json keys of their own (not under required_packages_version)
OWN_KEYS = {"monai": "monai_version", "torch": "pytorch_version", "numpy": "numpy_version"}
# the distribution of each top-level import name the vendored code may use
IMPORT_DISTRIBUTIONS = {
    "monai": "monai", "torch": "torch", "numpy": "numpy", "nibabel": "nibabel", "SimpleITK": "SimpleITK",
    "ignite": "pytorch-ignite", "scipy": "scipy", "yaml": "pyyaml", "tqdm": "tqdm", "pandas": "pandas",
    "tensorboard": "tensorboard", "fire": "fire",
}
# what MONAI components named in the configs need beyond MONAI itself
COMPONENT_DISTRIBUTIONS = {
    "TensorBoardStatsHandler": "tensorboard",
    "TensorBoardImageHandler": "tensorboard",
    "SupervisedEvaluator": "pytorch-ignite",
    "SupervisedTrainer": "pytorch-ignite",
    "StatsHandler": "pytorch-ignite",
    "CheckpointLoader": "pytorch-ignite",
}
# ``python -m monai.bundle run ...`` (the way the bundle is run) parses its command line with python-fire
RUNNER_DISTRIBUTIONS = ("fire",)


def bump_version(version: str) -> str:
    """The next patch version: ``0.1.0`` -> ``0.1.1`` (a version without three numbers gets ``.1`` appended).

    Returns:
        The new version string.
    """
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", str(version).strip())
    if not match:
        return f"{version}.1"
    major, minor, patch = (int(g) for g in match.groups())
    return f"{major}.{minor}.{patch + 1}"


def _targets(config: Any) -> Iterable[str]:
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _targets(value)
    elif isinstance(config, list):
        for value in config:
            yield from _targets(value)


def required_distributions(imports: Iterable[str], configs: Sequence[Any]) -> list[str]:
    """The distributions an exported bundle needs: those of the vendored code's imports, those the MONAI
    components of the configs need (:data:`COMPONENT_DISTRIBUTIONS`) and python-fire for ``monai.bundle``'s
    command line; MONAI, PyTorch and NumPy always.

    Args:
        imports: the top-level names of the third-party imports of the vendored code.
        configs: the exported configs.

    Returns:
        Distribution names, sorted case-insensitively.

    Raises:
        ValueError: an import whose distribution :data:`IMPORT_DISTRIBUTIONS` does not know (add it there, with a
            pin in :data:`PINNED_VERSIONS`).
    """
    needed = {"monai", "torch", "numpy", *RUNNER_DISTRIBUTIONS}
    unknown = sorted(name for name in imports if name not in IMPORT_DISTRIBUTIONS)
    if unknown:
        raise ValueError(f"the vendored code imports {', '.join(unknown)}, whose package and version the export does "
                         "not know: add them to pipeline.export.metadata.IMPORT_DISTRIBUTIONS and PINNED_VERSIONS")
    needed |= {IMPORT_DISTRIBUTIONS[name] for name in imports}
    for config in configs:
        for target in _targets(config):
            short = target.rsplit(".", 1)[-1]
            if short in COMPONENT_DISTRIBUTIONS:
                needed.add(COMPONENT_DISTRIBUTIONS[short])
    return sorted(needed, key=str.lower)


def requirement_fields(distributions: Iterable[str]) -> dict[str, Any]:
    """``monai_version``, ``pytorch_version``, ``numpy_version`` and ``required_packages_version`` for
    ``distributions``, at :data:`PINNED_VERSIONS`.

    Raises:
        ValueError: a distribution without a pin.
    """
    missing = [d for d in distributions if d not in PINNED_VERSIONS]
    if missing:
        raise ValueError(f"no pinned version for {', '.join(missing)}: add one to "
                         "pipeline.export.metadata.PINNED_VERSIONS (a version with wheels for Python 3.10-3.13)")
    fields: dict[str, Any] = {key: PINNED_VERSIONS[name] for name, key in OWN_KEYS.items()}
    fields["required_packages_version"] = {d: PINNED_VERSIONS[d] for d in distributions if d not in OWN_KEYS}
    return fields


def spatial_shape(divisor: Sequence[int] | None, needs_context: bool) -> list[str] | None:
    """The ``spatial_shape`` of the network's input in metadata terms: ``"K*n"`` on a pooled axis, ``"*"`` on an
    axis the network never pools.

    Args:
        divisor: the multiple the network needs on each axis (``size_divisor``), ``None`` when unknown.
        needs_context: the network normalises over its input (instance norm): its bottleneck then needs more than
            one voxel, so ``K`` is twice the divisor (MONAI's ``verify_net_in_out`` tries ``n = 1``).

    Returns:
        One entry per axis, or ``None`` when the divisor is unknown.
    """
    if divisor is None:
        return None
    factor = 2 if needs_context else 1
    return [f"{factor * d}*n" if d > 1 else "*" for d in divisor]


def exported_metadata(
    metadata: Mapping[str, Any],
    version: str,
    changelog: str,
    eval_metrics: Mapping[str, Any],
    requirements: Mapping[str, Any],
    channels: Sequence[str],
    shape: Sequence[str] | None,
) -> dict[str, Any]:
    """The metadata of an exported bundle, from the source bundle's.

    Args:
        metadata: the source bundle's ``metadata.json`` (not changed).
        version: the exported bundle's version (see :func:`bump_version`).
        changelog: its changelog entry, put first.
        eval_metrics: the measured scores.
        requirements: from :func:`requirement_fields`.
        channels: the input channels, in order.
        shape: the input and output ``spatial_shape`` (:func:`spatial_shape`); ``None`` keeps the source's.

    Returns:
        The new metadata.
    """
    import copy

    new = copy.deepcopy(dict(metadata))
    new["version"] = version
    new["changelog"] = {version: changelog, **{k: v for k, v in (metadata.get("changelog") or {}).items()
                                                if k != version}}
    new.update(requirements)
    new["eval_metrics"] = dict(eval_metrics)
    data_format = new.setdefault("network_data_format", {})
    image = data_format.setdefault("inputs", {}).setdefault("image", {})
    image["num_channels"] = len(channels)
    image["channel_def"] = {str(i): name for i, name in enumerate(channels)}
    new["image_classes"] = (f"{len(channels)} channels, in this order: {', '.join(channels)}; each normalized as "
                            "configs/inference.json's `modalities` says")
    if shape is not None:
        image["spatial_shape"] = list(shape)
        for output in (data_format.get("outputs") or {}).values():
            output["spatial_shape"] = list(shape)
    return new
