"""The training parts that the bundles' ``train.json`` references: the trainer with its fast-path switches, batch
preparation, and the training step that a signal stops cleanly.

Fast-path switches of ``train.json`` (all run on CPU too; only a GPU makes them pay):
``amp`` (autocast in bf16 where the device supports it, else fp16: :func:`pipeline.precision.amp_dtype`),
``cudnn_benchmark`` (CUDA only), ``channels_last`` (network and inputs: :func:`pipeline.networks.prepare_network`,
:class:`PrepareTrainingBatch`), ``cache_device`` (MONAI ``ToDeviced`` after the cached deterministic
transforms, so the random crops run on that device), ``compile`` (MONAI's ``torch.compile`` of the network).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import PrepareBatchDefault

from pipeline.networks.placement import channels_last_format
from pipeline.precision import AutocastInferer


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
    from pipeline.training.checkpoints import CheckpointWriteError

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
    from pipeline.training.checkpoints import latest_checkpoint

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
