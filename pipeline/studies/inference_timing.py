"""Inference time per case of several trained models, measured side by side in one process on the same cases.

Timing models one ``predict`` run after another mixes in whatever else the machine did meanwhile; here every model
runs on a case before the next case is taken, in an order that rotates from case to case, so a busy spell slows all
of them alike. Each model runs behind the inferer its bundle's ``inference.json`` builds (windows, blending, the
default runtime), on the test cases as that config preprocesses them; what is timed is the inferer's call and the
softmax, not loading or writing.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.predict.checkpoint import inference_config

__all__ = ["TimedModel", "load_trained_network", "preprocessed_images", "time_per_case"]


class TimedModel:
    """A trained network and the inference window its bundle would use for it.

    Args:
        network: the network in eval mode, weights loaded.
        roi_size: the inferer's ``roi_size`` (:func:`pipeline.inferers.sliding_window_roi` of its training patch).
    """

    def __init__(self, network: nn.Module, roi_size: Sequence[int]) -> None:
        self.network = network
        self.roi_size = [int(r) for r in roi_size]


def load_trained_network(bundle: str | Path, profile: str | Path, settings: Sequence[tuple[str, Any]],
                         checkpoint: str | Path) -> TimedModel:
    """The network of a bundle's inference config with a run's settings, its weights loaded from ``checkpoint``.

    Args:
        bundle: the bundle folder.
        profile: the dataset profile YAML the datalist names.
        settings: ``(config id, value)`` pairs as ``predict`` passes them (``datalist``, ``channels``, the trained
            plans' architecture keys, ``--set`` overrides; string values that are JSON are decoded).
        checkpoint: a bundle checkpoint (its ``model`` entry) or a bare state dict.

    Returns:
        The network in eval mode on the CPU and its inference window.

    Raises:
        ValueError: the checkpoint holds no state dict.
        RuntimeError: its weights are not the configured network's (``load_state_dict``); the config's own errors
            come from MONAI's ``ConfigParser``.
    """
    from pipeline.inferers import sliding_window_roi

    parser = inference_config(Path(bundle), Path(profile), settings)
    network = parser.get_parsed_content("network_def")
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{checkpoint}: holds no state dict of a network")
    network.load_state_dict(dict(state))
    roi = sliding_window_roi(parser.get_parsed_content("patch_size"), parser.get_parsed_content("strides"))
    return TimedModel(network.eval(), roi)


def preprocessed_images(bundle: str | Path, profile: str | Path, settings: Sequence[tuple[str, Any]],
                        datalist: str | Path, split: str = "testing") -> list[tuple[str, torch.Tensor]]:
    """The cases of a datalist split as a bundle's inference config preprocesses them (loading, resampling,
    normalisation).

    Args:
        bundle: the bundle folder.
        profile: the dataset profile YAML.
        settings: config settings; ``datalist`` and the plans' ``pixdim`` matter here.
        datalist: the datalist.
        split: its split to read.

    Returns:
        ``(case_id, image)`` pairs, each image a float tensor (1, C, *spatial).

    Raises:
        FileNotFoundError, ValueError: the datalist or a case's files cannot be read.
    """
    from pipeline.data.datalist import load_datalist

    parser = inference_config(Path(bundle), Path(profile), settings)
    preprocessing = parser.get_parsed_content("preprocessing")
    images = []
    for record in load_datalist(datalist, split):
        image = preprocessing(dict(record))["image"]
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        images.append((str(record["case_id"]), image.float().unsqueeze(0)))
    return images


def time_per_case(models: Mapping[str, TimedModel], images: Sequence[tuple[str, torch.Tensor]], repeats: int = 1,
                  device: str | torch.device = "cpu") -> dict[str, list[float]]:
    """Seconds each model's bundle inferer takes per case, the models side by side on each case.

    On a case of a shape not seen before every model first runs once untimed (the warm-up: a runtime exports the
    network for a new window shape there, or loads it from the cache ``predict`` keeps,
    :func:`pipeline.runtimes.runtime_cache_dir`); then each runs ``repeats`` timed times, in an order that rotates
    from case to case.

    Args:
        models: name -> :class:`TimedModel`.
        images: ``(case_id, image)`` pairs from :func:`preprocessed_images`.
        repeats: timed runs per model and case (the median is kept).
        device: where the networks run.

    Returns:
        name -> seconds per case (the median of the repeats), in the order of ``images``.

    Raises:
        ValueError: ``repeats`` below 1, or no models.
    """
    from pipeline.benchmark.measurement import time_side_by_side
    from pipeline.benchmark.scenarios import timed_network, bundle_inferer
    from pipeline.runtimes import runtime_cache_dir

    if repeats < 1 or not models:
        raise ValueError(f"need at least one model and one repeat, got {len(models)} model(s), {repeats} repeat(s)")
    device = torch.device(device)
    names = list(models)
    inferers = {}
    for name in names:
        models[name].network.to(device)
        inferers[name] = bundle_inferer(models[name].network, models[name].roi_size, device,
                                        cache_dir=runtime_cache_dir())
    seconds: dict[str, list[float]] = {name: [] for name in names}
    seen: set[tuple[int, ...]] = set()
    with torch.inference_mode():
        for index, (_, image) in enumerate(images):
            x = image.to(device)
            shift = index % len(names)
            methods = {}
            for name in names[shift:] + names[:shift]:
                inferer, network = inferers[name], models[name].network
                # a runtime's inferer runs its compiled module in the network's place: that is the network time
                timed = timed_network(inferer, network)
                methods[name] = (timed, lambda i=inferer, n=network: torch.softmax(i(x, n), dim=1))
            timings = time_side_by_side(methods, repeats, device, memory_pass=tuple(x.shape) not in seen)
            seen.add(tuple(x.shape))
            for name in names:
                seconds[name].append(statistics.median(timings[name].total_s))
    return seconds
