"""Several processes or GPUs on ``torch.distributed``: the pieces the ``multi_gpu_*.json`` overlays reference.

A bundle's ``multi_gpu_train.json`` / ``multi_gpu_inference.json`` is merged after its ``train.json`` /
``inference.json`` and run under ``torchrun`` (which sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``):

- :func:`init_distributed` joins the process group (nccl on GPUs, gloo on CPUs) and pins the GPU;
- :func:`distributed_device` is this process's device (``cuda:LOCAL_RANK`` or the CPU);
- :func:`rank_share` gives each rank its part of a datalist (MONAI ``partition_dataset``), so that a
  ``CacheDataset`` built on it caches that part only, and inference predicts each case once;
- :func:`handlers_for_rank` keeps the handlers that log or save on rank 0 only;
- :func:`same_on_every_rank` checks that the ranks agree on a value (e.g. the checkpoint resumed from);
- :func:`torchrun_command` turns a ``python -m monai.bundle run`` line into its ``torchrun`` form.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from monai.data import partition_dataset
from monai.handlers import CheckpointSaver, MLFlowHandler, StatsHandler, TensorBoardHandler

logger = logging.getLogger(__name__)

# handlers that only write (logs, event files, checkpoints, MLflow runs) and take part in no collective operation;
# MetricsSaver is not one of them: it all-gathers on every rank and writes on its `save_rank` itself.
# (MONAI's tracking settings also disable their MLFlowHandlers off rank 0, with `is_not_rank0`.)
RANK_ZERO_ONLY = (StatsHandler, TensorBoardHandler, CheckpointSaver, MLFlowHandler)


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group with more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world size)``: from the initialized process group, else from torchrun's ``RANK`` and
    ``WORLD_SIZE`` environment variables, else ``(0, 1)``.

    Raises:
        ValueError: ``RANK``/``WORLD_SIZE`` are not integers or the rank is not below the world size.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as err:
        raise ValueError(f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: not integers") from err
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return rank, world


def distributed_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.

    Raises:
        RuntimeError: CUDA is available but ``LOCAL_RANK`` is not set (not started by ``torchrun``),
            or names a GPU that this machine does not have.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        raise RuntimeError(
            "LOCAL_RANK is not set: the multi_gpu_* configs run under torchrun, e.g. "
            "`torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"[...]\"`"
        )
    if int(local_rank) >= torch.cuda.device_count():
        raise RuntimeError(
            f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPU(s): "
            "start at most that many processes per node (--nproc_per_node)"
        )
    return torch.device(f"cuda:{int(local_rank)}")


def init_distributed(backend: str | None = None, quiet_other_ranks: bool = True) -> torch.device:
    """Join the ``torch.distributed`` process group that ``torchrun`` set up, when not joined yet,
    and make this process's GPU the current one.

    Args:
        backend: ``nccl``, ``gloo``, ...; default nccl when CUDA is available, else gloo.
        quiet_other_ranks: on ranks other than 0, raise the root logger's level to WARNING, so that
            only rank 0 logs progress (warnings and errors of every rank still show).

    Returns:
        This process's device (:func:`distributed_device`).

    Raises:
        RuntimeError: not started by ``torchrun`` (no ``MASTER_ADDR``/``RANK``/``WORLD_SIZE``), or no such GPU.
    """
    if not dist.is_initialized():
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"{', '.join(missing)} not set: the multi_gpu_* configs run under torchrun, e.g. "
                "`torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"[...]\"`"
            )
        dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    device = distributed_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world = rank_and_world_size()
    if quiet_other_ranks and rank > 0:
        logging.getLogger().setLevel(logging.WARNING)
    logger.info(f"rank {rank} of {world} ({dist.get_backend()}) on {device}")
    return device


def destroy_distributed() -> None:
    """Leave the process group, if one was joined (a bundle's ``finalize`` step)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_share(
    data: Sequence[Any], even_divisible: bool = False, shuffle: bool = False, seed: int = 0, what: str = "record"
) -> list[Any]:
    """This rank's share of ``data`` (MONAI ``partition_dataset``: record ``i`` goes to rank ``i % world size``,
    after a shuffle with ``seed`` when ``shuffle``; every rank computes the same partition).

    A ``CacheDataset`` built on the share caches only that share. With one process the data is
    returned whole.

    Args:
        data: the records (e.g. from :func:`pipeline.data.datalist.load_datalist`).
        even_divisible: pad with repeated records so that every rank gets as many (training: every
            rank must run as many iterations); ``False`` gives each record to exactly one rank
            (inference), and a rank beyond the number of records gets none.
        shuffle: shuffle before sharing (so that folds sorted by case do not land on one rank).
        seed: the shuffle's seed, the same on every rank.
        what: the name of a record in messages.

    Returns:
        The records of this rank (rank and world size from :func:`rank_and_world_size`).

    Raises:
        ValueError: ``even_divisible`` with fewer records than ranks.
    """
    data = list(data)
    rank, world = rank_and_world_size()
    if world == 1:
        return data
    if len(data) < world:
        if even_divisible:
            raise ValueError(f"{len(data)} {what}(s) cannot be shared by {world} processes: start at most {len(data)}")
        # MONAI's partition_dataset refuses fewer records than partitions; one record per rank then
        share = data[rank : rank + 1]
    else:
        shares = partition_dataset(data, num_partitions=world, shuffle=shuffle, seed=seed, even_divisible=even_divisible)
        share = shares[rank]
        sizes = [len(s) for s in shares]
        logger.info(f"{len(data)} {what}(s) shared by {world} processes: {sizes} (rank {rank}: {len(share)})")
    return share


def handlers_for_rank(handlers: Sequence[Any] | None) -> list[Any] | None:
    """The handlers this rank attaches: all of them on rank 0; on the other ranks all but those that
    only log or save (:data:`RANK_ZERO_ONLY`: ``StatsHandler``, TensorBoard handlers, ``CheckpointSaver``,
    ``MLFlowHandler``).

    Handlers that take part in collective operations (``MetricsSaver``, ``ValidationHandler``, metrics)
    stay on every rank, or rank 0 would wait for the others forever. MONAI lacks such a filter (its
    model-zoo configs slice the handler list by position).

    Args:
        handlers: the handlers of a trainer or evaluator, or ``None``.

    Returns:
        The handlers to attach (``None`` for ``None``).
    """
    if handlers is None:
        return None
    rank, _ = rank_and_world_size()
    handlers = list(handlers)
    if rank == 0:
        return handlers
    for handler in handlers:
        if isinstance(handler, TensorBoardHandler):
            _discard_event_files(handler)
    return [h for h in handlers if not isinstance(h, RANK_ZERO_ONLY)]


def _discard_event_files(handler: TensorBoardHandler) -> None:
    # a TensorBoard handler opens its event file when built, before it can be left out: close it and
    # remove this process's (still empty) event files, named events.out.tfevents.<time>.<host>.<pid>.<n>
    if not getattr(handler, "internal_writer", False):
        return
    writer = handler._writer
    log_dir = Path(writer.get_logdir())
    handler.close()
    for path in log_dir.glob(f"events.out.tfevents.*.{socket.gethostname()}.{os.getpid()}.*"):
        path.unlink(missing_ok=True)


def same_on_every_rank(value: Any, what: str) -> Any:
    """Check that every rank holds the same ``value`` (``torch.distributed.all_gather_object``);
    a no-op in a single process. Every rank must call it.

    Args:
        value: a picklable value, e.g. the checkpoint a run resumes from.
        what: what the value is, for the message.

    Returns:
        ``value``.

    Raises:
        RuntimeError: the ranks disagree; the message lists each rank's value.
    """
    if not is_distributed():
        return value
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        listing = "; ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
        raise RuntimeError(f"the processes disagree on {what} ({listing})")
    return value


def torchrun_command(command: Sequence[str], nproc: int) -> list[str]:
    """The ``torchrun`` form of a ``[python, -m, monai.bundle, run, ...]`` command: ``python -m
    torch.distributed.run --standalone --nproc_per_node N -m monai.bundle run ...`` (one node, a free
    rendezvous port chosen by torch).

    Args:
        command: the single-process command, the interpreter first.
        nproc: processes to start (one per GPU on a GPU machine).

    Returns:
        The argument list.

    Raises:
        ValueError: ``nproc`` below 1, or ``command`` does not start with ``python -m``.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    command = list(command)
    if len(command) < 3 or command[1] != "-m":
        raise ValueError(f"not a `python -m ...` command: {command[:3]}")
    return [command[0], "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *command[1:]]
