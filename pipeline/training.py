"""``python -m pipeline train``: a thin wrapper over a bundle's train config, and the training parts
that the bundles' configs reference (the trainer, batch preparation, the GPU fast-path switches).

It reads the datalist (for the dataset profile and the channel order) and, when given, the plans,
turns them into config overrides, prints the exact ``python -m monai.bundle run ...`` line and runs
it. Everything the run needs is declared in the bundle's ``configs/train.json``.

Fast-path switches of ``train.json`` (all run on CPU too; only a GPU makes them pay):
``amp`` (autocast in bf16 where the device supports it, else fp16: :func:`pipeline.precision.amp_dtype`),
``cudnn_benchmark`` (CUDA only), ``channels_last`` (network and inputs: :func:`prepare_network`,
:class:`PrepareTrainingBatch`), ``cache_device`` (MONAI ``ToDeviced`` after the cached deterministic
transforms, so the random crops run on that device), ``compile`` (MONAI's ``torch.compile`` of the network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import PrepareBatchDefault

from pipeline.bundles import bundle_command, check_bundle, parse_overrides, profile_path, run_command
from pipeline.data.datalist import ALL_FOLDS
from pipeline.precision import AutocastInferer

# bundle config ids that ``--plans`` sets, each from the plans key of the same name except where PLAN_SOURCES says
PLANNED_KEYS = ("patch_size", "strides", "kernel_sizes", "features", "batch_size", "pixdim")
# the ones inference must use too (``predict`` passes them from the checkpoint's trained_plans.json): the
# network's architecture, the voxel spacing (``pixdim``) it was trained at, and its training patch, which sets the
# inference window (an instance-normalised network depends on the window it sees).
ARCHITECTURE_KEYS = ("patch_size", "strides", "kernel_sizes", "features", "pixdim")
# config id -> plans key where they differ: ``pixdim`` (MONAI ``Spacingd``; 0 keeps an axis) is the plans'
# ``resample_pixdim``
PLAN_SOURCES = {"pixdim": "resample_pixdim"}
# the plans a run was trained with, kept beside its checkpoints
TRAINED_PLANS = "trained_plans.json"
# ``--set network_def#...`` overrides of a training run, kept in its trained plans under this key for ``predict``
NETWORK_DEF_PREFIX = "network_def#"
NETWORK_OVERRIDES = "network_overrides"


def plan_overrides(plans_path: str | Path | None, keys: tuple[str, ...] = PLANNED_KEYS) -> list[tuple[str, object]]:
    """Config overrides taken from a plans file.

    Args:
        plans_path: a ``plans.json``; ``None`` gives no overrides.
        keys: config ids to set (by default :data:`PLANNED_KEYS`: ``patch_size``, ``strides``,
            ``kernel_sizes``, ``features``, ``batch_size``, ``pixdim``), each from the plans key of the same
            name or the one :data:`PLAN_SOURCES` names (``pixdim`` from ``resample_pixdim``).

    Returns:
        ``(config id, value)`` pairs for the keys the plans hold.

    Raises:
        FileNotFoundError: no such plans file.
        ValueError: an unreadable plans file.
    """
    if plans_path is None:
        return []
    from pipeline.data.plans import load_plans

    plans = load_plans(plans_path)
    return [(key, plans[PLAN_SOURCES.get(key, key)]) for key in keys if PLAN_SOURCES.get(key, key) in plans]


def trained_network_overrides(plans_path: str | Path) -> list[tuple[str, str]]:
    """The ``network_def#...`` overrides a run was trained with (e.g. ``network_def#norm=batch``), from its
    trained plans, as ``(config id, value)`` pairs in the form they were given on the command line.

    Raises:
        FileNotFoundError: no such plans file.
        ValueError: the plans file is not valid plans JSON.
    """
    from pipeline.data.plans import load_plans

    return [(str(k), str(v)) for k, v in (load_plans(plans_path).get(NETWORK_OVERRIDES) or {}).items()]


def train_command(args) -> list[str]:
    """The ``monai.bundle run`` command line of ``python -m pipeline train`` (see :func:`run_train`).

    Raises:
        FileNotFoundError: no such bundle, datalist or plans file.
        ValueError: a malformed override.
    """
    bundle = check_bundle(args.bundle, "train.json")
    datalist_path = Path(args.datalist).resolve()
    if not datalist_path.is_file():
        raise FileNotFoundError(f"datalist {str(datalist_path)!r} not found: run `python -m pipeline prepare` first")
    datalist = json.loads(datalist_path.read_text())
    settings: list[tuple[str, object]] = [
        ("datalist", str(datalist_path)),
        ("fold", args.fold if args.fold == ALL_FOLDS else int(args.fold)),
        ("channels", list(datalist.get("channels") or [])),
    ]
    if args.epochs is not None:
        settings.append(("epochs", int(args.epochs)))
    if args.output:
        output = Path(args.output).resolve()
        settings += [("ckpt_dir", str(output / "models")), ("output_dir", str(output / "eval"))]
    settings += plan_overrides(args.plans)
    settings += parse_overrides(args.set)
    return bundle_command(bundle, "train.json", profile_path(datalist), settings)


def checkpoint_dir(args) -> Path:
    """Where the training run of ``args`` writes its checkpoints."""
    if args.output:
        return Path(args.output).resolve() / "models"
    return Path(args.bundle).resolve() / "models"


def run_train(args) -> int:
    """Train a bundle on one fold of a datalist; returns the exit status of the bundle run.

    With ``--plans``, the plans are copied beside the checkpoints (``models/trained_plans.json``), so that
    ``predict`` rebuilds the same network from them.
    """
    command = train_command(args)
    print(f"train: {Path(args.bundle).name}, fold {args.fold} of {args.datalist}")
    if args.plans:
        from pipeline.data.plans import load_plans, write_plans

        plans = load_plans(args.plans)
        for key, value in parse_overrides(args.set):
            if key in PLANNED_KEYS:  # the run's --set wins over the plans: keep what was really trained
                plans[PLAN_SOURCES.get(key, key)] = json.loads(value)
            elif key.startswith(NETWORK_DEF_PREFIX):  # e.g. network_def#norm=batch: predict must build the same
                plans.setdefault(NETWORK_OVERRIDES, {})[key] = value
        write_plans(plans, checkpoint_dir(args) / TRAINED_PLANS)
    return run_command(command)


# ---------------------------------------------------------------------------------------------
# Training parts referenced by the bundles' train.json
# ---------------------------------------------------------------------------------------------
def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """``torch.channels_last_3d`` for 3D data (5D tensors), ``torch.channels_last`` for 2D (4D tensors).

    Raises:
        ValueError: ``spatial_dims`` is neither 2 nor 3.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"channels-last needs 2 or 3 spatial dimensions, got {spatial_dims}")
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def prepare_network(network: torch.nn.Module, device: str | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """Move a network to ``device``, in channels-last memory format when asked.

    Args:
        network: the network (its convolution weights tell 2D from 3D).
        device: where it runs.
        channels_last: store convolution weights channels-last (``channels_last_3d`` for 3D networks),
            which lets cuDNN pick its NDHWC kernels; the values and the state dict are unchanged.

    Returns:
        The same module, moved.
    """
    network = network.to(device)
    if channels_last:
        convs = [m for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
        if convs:
            network = network.to(memory_format=channels_last_format(convs[0].weight.dim() - 2))
    return network


class PrepareTrainingBatch(PrepareBatchDefault):
    """MONAI's default batch preparation (``image``, ``label`` to the device), plus two options.

    Args:
        weight_key: when the batch holds this key (the border weight map of :class:`pipeline.transforms.BorderWeightd`),
            it is appended to the label as channel 1, since MONAI's trainer gives the loss only
            ``(pred, label)``; :class:`pipeline.losses.BorderWeightedDiceCELoss` splits it off.
        channels_last: hand the image to the network channels-last (2D or 3D by its rank).

    Returns (on call): ``(image, label)`` on the device.
    """

    def __init__(self, weight_key: str | None = "weight", channels_last: bool = False) -> None:
        self.weight_key = weight_key
        self.channels_last = bool(channels_last)

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs: Any):
        image, label = super().__call__(batchdata, device, non_blocking, **kwargs)
        if self.weight_key and isinstance(batchdata, dict) and self.weight_key in batchdata and label is not None:
            weight = batchdata[self.weight_key].to(device=device, non_blocking=non_blocking, **kwargs)
            label = torch.cat([label, weight.to(label.dtype)], dim=1)
        if self.channels_last and image.dim() in (4, 5):
            image = image.contiguous(memory_format=channels_last_format(image.dim() - 2))
        return image, label


class Trainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` with the fast-path switches that MONAI leaves to the caller.

    Takes every ``SupervisedTrainer`` argument (``amp``, ``amp_kwargs``, ``compile``, ``prepare_batch``...), plus:

    Args:
        cudnn_benchmark: on a CUDA device, let cuDNN time its algorithms per input shape when the run starts
            (``torch.backends.cudnn.benchmark = True``, ``deterministic = False``: runs are then no longer
            bitwise repeatable on the GPU). No effect elsewhere.

    With ``amp`` on a device other than CUDA (MONAI 1.6 autocasts ``"cuda"`` only, so its ``amp`` does nothing
    there), the forward pass runs under ``torch.autocast`` on that device with ``amp_kwargs["dtype"]`` (bf16
    on CPU) through :class:`AutocastInferer`; the loss and the backward pass stay in float32 and no gradient
    scaler is used (bf16 needs none). On CUDA, MONAI's own AMP (autocast and ``GradScaler``) is used.
    """

    def __init__(self, *args: Any, cudnn_benchmark: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cudnn_benchmark = bool(cudnn_benchmark)
        device = self.state.device
        if self.amp and device is not None and device.type != "cuda":
            self.inferer = AutocastInferer(self.inferer, device.type, self.amp_kwargs.get("dtype"))
            self.amp = False  # MONAI's CUDA-only autocast and GradScaler stay off

    def run(self) -> None:
        """Set up cuDNN (see ``cudnn_benchmark``) and train."""
        device = self.state.device
        if self.cudnn_benchmark and device is not None and device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cudnn.deterministic = False
        super().run()
