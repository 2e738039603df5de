"""Running a bundle the way its users do: build, print and run a ``python -m monai.bundle run`` line.

``train`` and ``predict`` are thin wrappers over the bundles' configs; they print the exact
command, so that what the CLI does can be repeated with MONAI's own tooling.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.data.profiles import PROFILES_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def check_bundle(bundle: str | Path, config: str) -> Path:
    """Return the bundle folder as an absolute path.

    Raises:
        FileNotFoundError: the folder has no ``configs/<config>``.
    """
    bundle = Path(bundle).resolve()
    if not (bundle / "configs" / config).is_file():
        raise FileNotFoundError(f"{bundle}: not a bundle with configs/{config}")
    return bundle


def profile_path(datalist: Mapping[str, Any]) -> Path:
    """The dataset profile YAML a datalist was prepared with (``isles2018`` when it does not say)."""
    name = str(datalist.get("profile") or "isles2018")
    return Path(name) if Path(name).suffix else PROFILES_DIR / f"{name}.yaml"


def format_value(value: Any) -> str:
    """A config value as ``monai.bundle``'s command line (python-fire) parses it back."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def parse_overrides(pairs: Sequence[str] | None) -> list[tuple[str, str]]:
    """Turn ``KEY=VALUE`` strings into pairs.

    Raises:
        ValueError: an item without ``=``.
    """
    result = []
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} must be KEY=VALUE (e.g. inferer#sw_batch_size=4)")
        key, value = pair.split("=", 1)
        result.append((key.strip(), value))
    return result


def bundle_command(
    bundle: Path, config: str, profile: Path, overrides: Sequence[tuple[str, Any]], extra_configs: Sequence[str] = ()
) -> list[str]:
    """The ``python -m monai.bundle run`` argument list for ``bundle/configs/<config>`` merged with a profile.

    Args:
        bundle: the bundle folder.
        config: ``train.json``, ``inference.json``, ...
        profile: the dataset profile YAML merged after the bundle's configs.
        overrides: ``(config id, value)`` pairs, later ones winning.
        extra_configs: further config files of the bundle merged before the profile
            (e.g. ``multi_gpu_train.json``).

    Returns:
        The arguments, ``sys.executable`` first.
    """
    configs = [bundle / "configs" / config, *[bundle / "configs" / c for c in extra_configs], profile]
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--config_file", "[" + ",".join(f"'{c}'" for c in configs) + "]",
        "--logging_file", str(bundle / "configs" / "logging.conf"),
        "--bundle_root", str(bundle),
    ]
    for key, value in overrides:
        command += [f"--{key}", format_value(value)]
    return command


def run_command(command: Sequence[str]) -> int:
    """Print ``command`` as one shell line, run it from the project root, return its exit status."""
    print(shlex.join(command), flush=True)
    return subprocess.run(list(command), cwd=str(PROJECT_ROOT)).returncode
