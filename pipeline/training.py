"""``python -m pipeline train``: a thin wrapper over a bundle's train config, and the training parts
that the bundles' configs reference (the trainer, batch preparation, the GPU fast-path switches).

It reads the datalist (for the dataset profile and the channel order) and, when given, the plans,
turns them into config overrides, prints the exact ``python -m monai.bundle run ...`` line and runs
it. Everything the run needs is declared in the bundle's ``configs/train.json``.

What makes a run safe to interrupt and repeat (:func:`run_train`): bad input is refused before the bundle starts
(:func:`check_training_inputs`); one run at a time holds a checkpoint folder (:class:`TrainingLock`, stale locks
of dead runs are taken over) and clears the temporaries an interrupted run left there; SIGTERM and Ctrl-C are
passed on to the bundle run, whose training step (:func:`run_training`) stops after the current iteration with
its final checkpoint, so that the same command resumes; a run that fails before any checkpoint leaves nothing.

Fast-path switches of ``train.json`` (all run on CPU too; only a GPU makes them pay):
``amp`` (autocast in bf16 where the device supports it, else fp16: :func:`pipeline.precision.amp_dtype`),
``cudnn_benchmark`` (CUDA only), ``channels_last`` (network and inputs: :func:`prepare_network`,
:class:`PrepareTrainingBatch`), ``cache_device`` (MONAI ``ToDeviced`` after the cached deterministic
transforms, so the random crops run on that device), ``compile`` (MONAI's ``torch.compile`` of the network).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import PrepareBatchDefault

from pipeline.bundles import bundle_command, check_bundle, parse_overrides, process_alive, profile_path, run_command
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


def train_command(args, datalist: Mapping[str, Any] | None = None) -> list[str]:
    """The ``monai.bundle run`` command line of ``python -m pipeline train`` (see :func:`run_train`).

    Args:
        args: the parsed ``train`` arguments.
        datalist: the datalist's content when already read (e.g. by :func:`check_training_inputs`).

    Raises:
        FileNotFoundError: no such bundle, datalist or plans file.
        ValueError: a malformed datalist (named) or override.
    """
    bundle = check_bundle(args.bundle, "train.json")
    datalist_path = Path(args.datalist).resolve()
    if datalist is None:
        datalist = _read_datalist(datalist_path)
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
    """Where the training run of ``args`` writes its checkpoints: ``--set ckpt_dir=...``, else ``OUTPUT/models``,
    else the bundle's own ``models/``."""
    overridden = [value for key, value in parse_overrides(getattr(args, "set", None)) if key == "ckpt_dir"]
    if overridden:
        return Path(overridden[-1]).resolve()
    if args.output:
        return Path(args.output).resolve() / "models"
    return Path(args.bundle).resolve() / "models"


def log_dir(args) -> Path:
    """Where the training run of ``args`` writes its logs (``eval/``, the bundle's ``output_dir``)."""
    overridden = [value for key, value in parse_overrides(getattr(args, "set", None)) if key == "output_dir"]
    if overridden:
        return Path(overridden[-1]).resolve()
    return (Path(args.output).resolve() if args.output else Path(args.bundle).resolve()) / "eval"


# ---------------------------------------------------------------------------------------------
# Before a run: everything that can be checked without training
# ---------------------------------------------------------------------------------------------
def _read_datalist(path: Path) -> dict[str, Any]:
    from pipeline.data.datalist import read_datalist_json

    data = read_datalist_json(path)
    if not isinstance(data.get("training"), list):
        raise ValueError(f"datalist {str(path)!r} has no 'training' list of case records: is it a datalist written "
                         "by `python -m pipeline prepare`?")
    return data


def _fold_count(data: Mapping[str, Any]) -> int:
    folds = data.get("folds")
    if isinstance(folds, int) and not isinstance(folds, bool) and folds > 0:
        return folds
    found = [r.get("fold") for r in data["training"] if isinstance(r, Mapping)]
    numbers = [f for f in found if isinstance(f, int) and not isinstance(f, bool)]
    return max(numbers) + 1 if numbers else 0


def check_training_inputs(datalist: str | Path, fold: int | str) -> dict[str, Any]:
    """Check what a training run needs before the bundle starts, so that bad input fails at once with one
    message instead of a traceback minutes later.

    Checked: the datalist is readable JSON with a ``training`` list; ``fold`` is one of its folds (or
    ``"all"``); every training record is usable (:func:`pipeline.data.validation.check_records`: a unique plain
    ``case_id``, one file per channel, a label, channels that agree with the record's modality map) and its
    image and label files exist and are not empty; the fold leaves both a training and a validation set; the
    dataset profile the datalist names exists.

    Args:
        datalist: the datalist JSON written by ``prepare``.
        fold: the validation fold (an int) or ``"all"``.

    Returns:
        The datalist, as read.

    Raises:
        FileNotFoundError: no such datalist, or its dataset profile is missing.
        ValueError: a malformed datalist, a fold out of range (the message gives the valid range), an empty
            training or validation set. The message names the datalist.
        pipeline.errors.CaseError: a bad training record or a missing or empty file, naming the case and the file.
    """
    from pipeline.data.datalist import load_datalist
    from pipeline.data.validation import check_records
    from pipeline.errors import CaseError

    path = Path(datalist).resolve()
    data = _read_datalist(path)
    if fold != ALL_FOLDS:
        n_folds = _fold_count(data)
        if n_folds == 0:
            raise ValueError(f"datalist {str(path)!r} assigns no folds to its training records: prepare it with "
                             "--folds N, or train on every training case with --fold all")
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
            raise ValueError(f"--fold {fold} is out of range: datalist {str(path)!r} has {n_folds} fold(s), "
                             f"0..{n_folds - 1}; choose one of them, or --fold all to train on every training case")
    records = load_datalist(path, "training")
    channels = [str(c) for c in data.get("channels") or []] or None
    check_records(records, path, "training", channels, require_files=True, require_label=True)
    for record in records:
        image = record["image"]
        for file in [*([image] if isinstance(image, str) else image), record["label"]]:
            if os.path.isfile(file) and os.path.getsize(file) == 0:
                raise CaseError(record.get("case_id"), str(file), "the file is empty (0 bytes); copy it again or "
                                "leave the case out (prepare --skip-incomplete)")
    if fold != ALL_FOLDS:
        validation = [r for r in records if r.get("fold") == fold]
        training = [r for r in records if r.get("fold") != fold]
        if not training:
            raise ValueError(f"fold {fold} of datalist {str(path)!r} leaves no case to train on: all "
                             f"{len(records)} training case(s) are in fold {fold}; prepare more cases or more folds, "
                             "or train with --fold all")
        if not validation:
            raise ValueError(f"fold {fold} of datalist {str(path)!r} has no validation case: no training record is "
                             f"in fold {fold}; choose another --fold, or prepare the datalist again")
    elif not records:
        raise ValueError(f"datalist {str(path)!r} has no training case")
    profile = profile_path(data)
    if not profile.is_file():
        raise FileNotFoundError(f"dataset profile {str(profile)!r} named by datalist {str(path)!r} not found")
    return data


def trained_plans(args) -> dict[str, Any] | None:
    """The plans a run of ``args`` trains with (``--plans`` with the run's ``--set`` overrides applied), as
    written to ``models/trained_plans.json``; ``None`` without ``--plans``.

    Raises:
        FileNotFoundError, ValueError: no such plans file, or an unreadable one.
    """
    if not args.plans:
        return None
    from pipeline.data.plans import load_plans

    plans = load_plans(args.plans)
    for key, value in parse_overrides(args.set):
        if key in PLANNED_KEYS:  # the run's --set wins over the plans: keep what was really trained
            try:
                plans[PLAN_SOURCES.get(key, key)] = json.loads(value)
            except ValueError:
                raise ValueError(f"--set {key}={value}: the value must be JSON, e.g. {key}=[64,64,2]") from None
        elif key.startswith(NETWORK_DEF_PREFIX):  # e.g. network_def#norm=batch: predict must build the same
            plans.setdefault(NETWORK_OVERRIDES, {})[key] = value
    return plans


def _check_resumable_with(plans: Mapping[str, Any] | None, models: Path, args) -> None:
    """Refuse a run whose plans contradict those of the checkpoints it would resume from."""
    from pipeline.engines import training_checkpoints

    resume = dict(parse_overrides(args.set)).get("resume", "True").strip().lower() not in ("false", "0", "no")
    existing = models / TRAINED_PLANS
    if not resume or not training_checkpoints(models) or not existing.is_file():
        return
    from pipeline.data.plans import load_plans

    try:
        old = load_plans(existing)
    except (OSError, ValueError):
        return
    if plans is None:
        raise ValueError(f"{models} holds checkpoints trained with plans ({existing}); resuming them needs the same "
                         "--plans, or train into another --output")
    keys = [PLAN_SOURCES.get(k, k) for k in ARCHITECTURE_KEYS] + [NETWORK_OVERRIDES]
    differ = [k for k in keys if old.get(k) != plans.get(k)]
    if differ:
        raise ValueError(f"{models} holds checkpoints of another network: its {existing.name} differs in "
                         f"{', '.join(differ)} from this run's plans, so they cannot be resumed; train into another "
                         "--output, or pass the plans they were trained with")


def _checkpoint_stamps(models: Path) -> dict[str, int]:
    """``name -> mtime`` of the checkpoint files in ``models`` (temporary files left out)."""
    if not models.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in models.glob("*.pt") if p.is_file() and not p.name.startswith(".")}


# ---------------------------------------------------------------------------------------------
# One trainer per folder
# ---------------------------------------------------------------------------------------------
LOCK_NAME = ".train.lock"


class TrainingLockedError(ValueError):
    """Another training run holds the checkpoint folder (:class:`TrainingLock`)."""


class TrainingLock:
    """The lock of a checkpoint folder: one training run at a time writes there.

    The lock is ``<folder>/.train.lock``, held with ``flock`` (released by the kernel when its holders die, also
    by ``kill -9``) and holding the holder's PID, host, start time and command, and the PID of its bundle run;
    the bundle run inherits the descriptor, so the folder stays locked until both have exited. A lock file whose
    holders are gone is stale: it is taken over (:attr:`taken_over` then holds what it said). Where the file
    system has no ``flock``, a lock whose PID is alive on this host (or that comes from another host) counts as
    held.

    Use it as a context manager (``with TrainingLock(folder) as lock: ...``), which creates the folder.

    Raises (on entry):
        TrainingLockedError: a live run holds it; the message names the folder and that run's PID and host.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.taken_over: dict[str, Any] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> TrainingLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @staticmethod
    def _read(fd: int) -> dict[str, Any] | None:
        try:
            text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace").strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return {"unreadable": text[:200]}
        return value if isinstance(value, dict) else {"unreadable": text[:200]}

    def _write(self) -> None:
        data = (json.dumps(self.info, indent=1) + "\n").encode()
        try:  # best effort: on a full disk the lock still holds, only its description is missing
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
            os.fsync(self.fd)
        except OSError:
            pass

    def _flock(self, fd: int) -> bool | None:
        """True: locked; False: held by another; None: this file system cannot flock."""
        try:
            import fcntl
        except ImportError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            return None
        return True

    def holder_alive(self, holder: Mapping[str, Any] | None) -> bool:
        """Whether the run a lock file describes may still run (used where ``flock`` is unavailable)."""
        if not holder:
            return False
        if holder.get("host") not in (None, socket.gethostname()):
            return True  # another host's run cannot be checked from here
        return any(process_alive(holder.get(key)) for key in ("pid", "child_pid") if holder.get(key))

    def describe(self, holder: Mapping[str, Any] | None) -> str:
        """``PID 123 on host h (started ...; its bundle run is PID 124)``, from a lock file's content."""
        if not holder or "pid" not in holder:
            return f"a run whose lock {self.path} does not say which"
        text = f"PID {holder.get('pid')} on host {holder.get('host', '?')}"
        extra = [f"started {holder['started']}"] if holder.get("started") else []
        if holder.get("child_pid"):
            extra.append(f"its bundle run is PID {holder['child_pid']}")
        return text + (f" ({'; '.join(extra)})" if extra else "")

    def _busy(self, holder: Mapping[str, Any] | None) -> TrainingLockedError:
        pid = (holder or {}).get("pid")
        stop = f" (`kill {pid}` stops it after the current iteration, with a checkpoint)" if pid else ""
        return TrainingLockedError(
            f"another training run is using {self.folder}: {self.describe(holder)}. Two trainers in one folder "
            f"would overwrite each other's checkpoints, so this one does not start. Wait for that run to end or stop "
            f"it{stop}, then run the same command again to resume; if no such run is active, remove {self.path}"
        )

    def acquire(self) -> TrainingLock:
        """Take the lock (creating the folder), or raise :class:`TrainingLockedError`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._flock(fd)
                previous = self._read(fd)
                if locked is False or (locked is None and self.holder_alive(previous)):
                    raise self._busy(previous)
                try:  # a holder that released meanwhile removed the file: lock the one now at the path
                    current = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = False
            except BaseException:
                os.close(fd)
                raise
            if not current:
                os.close(fd)
                continue
            self.fd, self.taken_over = fd, previous
            self.info = {"pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}
            self._write()
            return self
        raise TrainingLockedError(f"could not take the lock {self.path}: it keeps being replaced; is another run "
                                  "starting in the same folder?")

    def record_child(self, pid: int) -> None:
        """Record the PID of the bundle run (which inherited the lock) in the lock file."""
        if self.fd is not None:
            self.info["child_pid"] = int(pid)
            self._write()

    def release(self) -> None:
        """Remove the lock file and let go of the lock (a no-op when not held)."""
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def _signal_name(status: int) -> str | None:
    """The signal that ended a bundle run: exit status 128+N (a clean stop) or -N (killed by it)."""
    number = -status if status < 0 else status - 128 if 128 < status < 160 else None
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _undo_failed_run(plans_file: Path, previous_plans: bytes | None, created: Sequence[Path]) -> list[str]:
    """Undo a failed run that wrote no checkpoint: its trained plans (the previous ones are put back) and the
    folders it created (removed whole; folders that must be empty by now, such as the checkpoint folder, are left
    to :func:`_remove_if_empty`)."""
    from pipeline.io import atomic_path

    undone = []
    if previous_plans is None:
        if plans_file.is_file():
            plans_file.unlink()
            undone.append(str(plans_file))
    elif plans_file.is_file() and plans_file.read_bytes() != previous_plans:
        with atomic_path(plans_file) as tmp:
            tmp.write_bytes(previous_plans)
        undone.append(f"{plans_file} (the previous one put back)")
    for folder in created:
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            undone.append(f"{folder}{os.sep}")
    return undone


def _remove_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def run_train(args) -> int:
    """Train a bundle on one fold of a datalist; returns the exit status of the bundle run.

    Before anything is written, the inputs are checked (:func:`check_training_inputs`, the plans, that the
    checkpoints to resume are of the same network) and the checkpoint folder is locked (:class:`TrainingLock`:
    a second run in the same folder refuses, with exit status 2). Holding the lock, the run clears the temporary
    files an interrupted run left in its checkpoint folder, and, with ``--plans``, writes the plans beside the
    checkpoints (``models/trained_plans.json``) so that ``predict`` rebuilds the same network.

    A run that fails before writing any checkpoint leaves nothing behind: its trained plans (the previous ones
    are restored) and the folders it created are removed. SIGTERM or Ctrl-C stop the bundle run after the current
    iteration with its final checkpoint (``last.pt``); the same command then resumes. Exit status: the bundle
    run's; 128+N after signal N (143 for SIGTERM, 130 for Ctrl-C).

    Raises:
        FileNotFoundError, ValueError, pipeline.errors.CaseError: bad input (see :func:`check_training_inputs`),
            or another run holds the folder (:class:`TrainingLockedError`).
    """
    from pipeline.engines import latest_checkpoint, remove_stale_checkpoint_temporaries

    check_bundle(args.bundle, "train.json")
    datalist = check_training_inputs(args.datalist, args.fold)
    plans = trained_plans(args)
    command = train_command(args, datalist)
    models, logs = checkpoint_dir(args), log_dir(args)
    output = Path(args.output).resolve() if args.output else None
    print(f"train: {Path(args.bundle).name}, fold {args.fold} of {args.datalist}")
    # the folders this run creates: removed again if it fails before writing any checkpoint
    created = [folder for folder in dict.fromkeys([output, models, logs]) if folder is not None and not folder.exists()]
    with TrainingLock(models) as lock:
        if lock.taken_over:
            print(f"train: took over the stale lock of {lock.describe(lock.taken_over)}, which no longer runs")
        removed = remove_stale_checkpoint_temporaries(models)
        if removed:
            print(f"train: removed {len(removed)} temporary file(s) that an interrupted run left in {models}: "
                  + ", ".join(p.name for p in removed))
        _check_resumable_with(plans, models, args)
        before = _checkpoint_stamps(models)
        plans_file = models / TRAINED_PLANS
        previous_plans = plans_file.read_bytes() if plans_file.is_file() else None
        if plans is not None:
            from pipeline.data.plans import write_plans

            write_plans(plans, plans_file)
        status = run_command(command, pass_fds=[lock.fd], on_start=lambda child: lock.record_child(child.pid),
                             condense_tracebacks=not getattr(args, "debug", False))
        nothing_written = status != 0 and _checkpoint_stamps(models) == before
        undone = []
        if nothing_written:
            undone = _undo_failed_run(plans_file, previous_plans, [f for f in created if f not in (output, models)])
    if nothing_written:  # now that the lock file is gone, the folders this run created are empty
        undone += [f"{folder}{os.sep}" for folder in (models, output) if folder in created and _remove_if_empty(folder)]
    if status == 0:
        return 0
    latest = latest_checkpoint(models) if models.is_dir() else None
    if latest is not None:
        resume = f"the last complete checkpoint is {latest}: run the same command again to resume from it"
    else:
        resume = "no checkpoint was written, so the same command starts afresh"
    cleaned = f"; removed what it had written ({', '.join(undone)})" if undone else ""
    name = _signal_name(status)
    if name in ("SIGTERM", "SIGINT", "SIGHUP"):
        print(f"train: stopped by {name}{cleaned}; {resume}", file=sys.stderr)
        return 128 + int(signal.Signals[name])
    if name is not None:
        print(f"error: the training run was killed by {name}{cleaned}; {resume}", file=sys.stderr)
        return 128 + int(signal.Signals[name])
    print(f"error: training failed (the bundle run exited with status {status}; its log above says why){cleaned}; "
          f"{resume}", file=sys.stderr)
    return status


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


# signals that stop a training run cleanly (after the current iteration, with its final checkpoint)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _checkpoint_write_failure(err: BaseException | None) -> BaseException | None:
    from pipeline.engines import CheckpointWriteError

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, CheckpointWriteError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_training(trainer: SupervisedTrainer, checkpoint_dir: str | Path | None = None) -> None:
    """A bundle's training step (its ``run`` list): ``trainer.run()``, stopped cleanly by a signal.

    SIGTERM, SIGINT (Ctrl-C) and SIGHUP make the trainer stop after the current iteration (Ignite's
    ``terminate``: the final checkpoint handler then writes ``last.pt``, from which the same command resumes; after
    the last iteration of an epoch, once the epoch's handlers have run: validation, LR step, epoch checkpoint);
    later signals change nothing (SIGKILL stops at once). Signals that are ignored (``nohup``) stay ignored, and
    a distributed run (``torchrun``) keeps the default handling. A checkpoint that cannot be written (a full
    disk) ends the run with its one-paragraph message instead of a traceback.

    Args:
        trainer: the bundle's trainer.
        checkpoint_dir: the run's checkpoint folder, named in the message after a stop.

    Raises:
        SystemExit: with status 128+N after a stop by signal N (the trainer has completed, checkpoint written),
            or with the message (status 1) when a checkpoint could not be written.
    """
    from pipeline.distributed import is_distributed
    from pipeline.engines import latest_checkpoint

    received: list[int] = []

    def stop(signum, frame) -> None:
        if not received:
            trainer.logger.warning(f"{signal.Signals(signum).name} received: stopping after the current iteration "
                                   "and writing the final checkpoint (SIGKILL stops at once, losing this epoch)")
        received.append(signum)

    def after_iteration(engine) -> None:
        # the last iteration of an epoch stops after the epoch's own handlers (validation, LR step, checkpoint),
        # so that the resumed run does not miss them
        length = engine.state.epoch_length
        if received and not (length and engine.state.iteration % length == 0):
            engine.terminate()

    def after_epoch(engine) -> None:
        if received:
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, after_iteration)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, after_epoch)  # the last handler of the epoch
    previous = {}
    if threading.current_thread() is threading.main_thread() and not is_distributed():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, stop)
    try:
        trainer.run()
    except Exception as err:
        failure = _checkpoint_write_failure(err)
        if failure is None:
            raise
        raise SystemExit(f"error: {failure}") from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        trainer.remove_event_handler(after_iteration, Events.ITERATION_COMPLETED)
        trainer.remove_event_handler(after_epoch, Events.EPOCH_COMPLETED)
    if received:
        state = trainer.state
        length = state.epoch_length or 1
        done = f"{state.iteration // length} complete epoch(s)" + (" and part of the next" if state.iteration % length else "")
        latest = latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
        where = f"; {latest} holds it" if latest else ""
        trainer.logger.warning(f"training stopped by {signal.Signals(received[0]).name} after iteration {state.iteration} "
                               f"({done}){where}: run the same command again to resume")
        raise SystemExit(128 + int(received[0]))
