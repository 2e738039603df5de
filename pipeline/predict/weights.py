"""The trained network of an inference config: one checkpoint's weights, or the mean of several (an ensemble).

``inference.json`` builds its ``network`` with :func:`ensemble_network` from ``network_def`` and ``ckpt_path``:
a path gives that network, a list of paths (the folds of a cross-validation, or any checkpoints of the same
network) a :class:`pipeline.inferers.MeanEnsemble` of one copy per checkpoint, whose output is the log of the mean
probabilities, so that the config's softmax after the inferer gives the mean probabilities. Its handler
:class:`EnsembleCheckpointLoader` loads the weights into each member when the evaluator starts. :func:`load_weights`
loads one checkpoint into a network directly.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from pipeline.networks.placement import prepare_network

__all__ = ["EnsembleCheckpointLoader", "checkpoint_paths", "ensemble_network", "load_weights"]


def checkpoint_paths(checkpoints: str | Path | Sequence[str | Path]) -> list[Path]:
    """``ckpt_path`` of an inference config as a list of paths (one path, or a list of them).

    Raises:
        ValueError: an empty list.
    """
    if isinstance(checkpoints, (str, Path)):
        return [Path(checkpoints)]
    paths = [Path(p) for p in checkpoints]
    if not paths:
        raise ValueError("ckpt_path is an empty list: give one checkpoint or several")
    return paths


def load_weights(network: nn.Module, checkpoint: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load ``checkpoint`` into ``network`` (strictly, ``torch.load(weights_only=True)``) and put it in eval mode.

    The file is a bare state dict (``model.pt``, the best model) or a training checkpoint holding the network's
    under ``"model"`` (``last.pt``), as MONAI's ``CheckpointLoader`` reads both.

    Returns:
        ``network``, with its weights.

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: the weights do not fit the network (``load_state_dict``'s message).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    state = torch.load(str(path), map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    network.load_state_dict(state, strict=True)
    return network.eval()


def ensemble_network(
    network: nn.Module,
    checkpoints: str | Path | Sequence[str | Path],
    device: str | torch.device = "cpu",
    channels_last: bool = False,
) -> nn.Module:
    """The network of an inference config for its checkpoints: the network itself for one checkpoint, a
    :class:`~pipeline.inferers.MeanEnsemble` of one copy per checkpoint for several. The weights are loaded when
    the evaluator starts (:class:`EnsembleCheckpointLoader`), as MONAI's ``CheckpointLoader`` does, so the config
    parses without the files.

    Args:
        network: the configured network (``network_def``); with several checkpoints, each member is a copy of it.
        checkpoints: ``ckpt_path``: one checkpoint, or a list of checkpoints of the same network.
        device: where the network runs.
        channels_last: channels-last weights (see :func:`pipeline.networks.prepare_network`).

    Returns:
        The network (or the ensemble, whose output is the log of its members' mean probabilities) on ``device``.

    Raises:
        ValueError: an empty list of checkpoints.
    """
    count = len(checkpoint_paths(checkpoints))
    if count == 1:
        return prepare_network(network, device, channels_last)
    from pipeline.inferers.ensemble import MeanEnsemble

    members = [prepare_network(copy.deepcopy(network), device, channels_last) for _ in range(count)]
    return MeanEnsemble(members, activation="softmax", log_output=True)


class EnsembleCheckpointLoader:
    """MONAI's ``CheckpointLoader`` for each member of an :func:`ensemble_network` (or for the one network): the
    i-th checkpoint of ``load_path`` into the i-th member, when the engine starts.

    Args:
        load_path: ``ckpt_path``: one checkpoint, or a list (one per member, in order).
        network: the config's ``network`` (:func:`ensemble_network`).
        map_location: where the weights are loaded.

    Raises (on attach):
        ValueError: the number of checkpoints is not the number of members.
    """

    def __init__(self, load_path: str | Path | Sequence[str | Path], network: nn.Module,
                 map_location: str | torch.device = "cpu") -> None:
        self.load_path = load_path
        self.network = network
        self.map_location = map_location

    def attach(self, engine) -> None:
        """Attach one ``monai.handlers.CheckpointLoader`` per member to ``engine``."""
        from monai.handlers import CheckpointLoader

        from pipeline.inferers.ensemble import MeanEnsemble

        paths = checkpoint_paths(self.load_path)
        members = list(self.network.networks) if isinstance(self.network, MeanEnsemble) else [self.network]
        if len(paths) != len(members):
            raise ValueError(f"{len(paths)} checkpoint(s) for a network of {len(members)} member(s): build the "
                             "network with pipeline.predict.ensemble_network from the same ckpt_path")
        for path, member in zip(paths, members):
            CheckpointLoader(load_path=str(path), load_dict={"model": member}, map_location=self.map_location
                             ).attach(engine)
