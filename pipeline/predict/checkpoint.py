"""Checks made before any inference: the checkpoint loads and fits the bundle's network as configured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import CaseError, root_cause

if TYPE_CHECKING:
    import torch


def check_checkpoint(checkpoint: Path, network: torch.nn.Module, channels: list[str]) -> None:
    """Check that ``checkpoint`` loads (``weights_only``) and fits ``network`` before a run starts.

    Raises:
        CaseError: the file is truncated, corrupt or not a PyTorch checkpoint, or its weights are not the
            network's (another architecture, width or channel count); the message names the file and the difference.
    """
    import torch

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


def inference_config(bundle: Path, profile: Path, settings: Sequence[tuple[str, object]]):
    """A bundle's inference config stacked with a dataset profile, with the run's settings set.

    Args:
        bundle: the bundle folder; profile: the profile YAML.
        settings: ``(config id, value)`` pairs; a string value is read as ``monai.bundle run`` reads its command line
            (python-fire's parser: ``False``, ``0``, ``[4,4,8]`` and ``{"a": 1}`` become values, other text stays
            text), so that the network built here is the one the run builds.

    Returns:
        The ``monai.bundle.ConfigParser``.
    """
    from fire.parser import DefaultParseValue
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), str(profile)])
    for key, value in settings:
        parser[key] = DefaultParseValue(value) if isinstance(value, str) else value
    return parser


def configured_network(bundle: Path, profile: Path, settings: list[tuple[str, object]]) -> torch.nn.Module:
    """The ``network_def`` of a bundle's inference config with the run's settings, built on the CPU.

    Raises:
        ValueError: the config cannot build the network with these settings.
    """
    parser = inference_config(bundle, profile, settings)
    try:
        return parser.get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001 - any config error is reported as one message
        raise ValueError(f"{bundle}: cannot build network_def from configs/inference.json with these settings: "
                         f"{str(root_cause(err)).strip()}") from err


# Settings of a predict run that do not change the network: left out of what a passed check is remembered by.
_RUN_SETTINGS = frozenset({"datalist", "data_split", "output_dir", "prediction_run_id", "runtime", "team_name",
                           "output_format", "save_probabilities", "case_folders", "tta", "strict_channels",
                           "lesion_threshold", "min_lesion_ml"})
_PASSED: set[tuple] = set()


def _file_identity(path: Path) -> tuple:
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns


def check_checkpoints_fit(bundle: Path, profile: Path, settings: Sequence[tuple[str, object]],
                          checkpoints: Sequence[Path], channels: list[str]) -> None:
    """Check every checkpoint against the network the settings configure (:func:`configured_network`,
    :func:`check_checkpoint`), once per process for the same files (path, size, modification time) and network
    settings: ``serve``'s worker checks the model at its warm-up, and its forked jobs inherit the result.

    Raises:
        CaseError, ValueError, FileNotFoundError: as :func:`check_checkpoint` and :func:`configured_network`.
    """
    try:
        files = tuple(_file_identity(c) for c in checkpoints)
    except OSError as err:
        raise CaseError(None, str(err.filename), f"cannot read the checkpoint ({err.strerror})") from None
    key = (str(bundle), str(profile), tuple((k, repr(v)) for k, v in settings if k not in _RUN_SETTINGS), files,
           tuple(channels))
    if key in _PASSED:
        return
    network = configured_network(bundle, profile, list(settings))
    for checkpoint in checkpoints:
        check_checkpoint(checkpoint, network, channels)
    _PASSED.add(key)
