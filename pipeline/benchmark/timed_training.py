"""A training run through the bundle's ``train.json`` (MONAI ``ConfigWorkflow``), timed per iteration with
Ignite events: :class:`TrainingStats` and the run that fills them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class TrainingStats:
    """Per-iteration timings of a training run (Ignite events).

    Attributes:
        data_s: seconds from ``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED`` (waiting for the data loader).
        step_s: seconds from ``ITERATION_STARTED`` to ``ITERATION_COMPLETED`` (batch to device, forward,
            loss, backward, optimiser step, iteration handlers).
        setup_s: seconds from building the workflow to the first iteration (parsing, caching the data).
        wall_s: seconds of ``trainer.run()``.
        batch_size, patch_size, samples_per_case: the batches the iterations trained on.
        epochs: epochs completed.
    """

    data_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    setup_s: float = 0.0
    wall_s: float = 0.0
    batch_size: int = 0
    patch_size: list[int] = field(default_factory=list)
    samples_per_case: int = 0
    epochs: int = 0

    def measured(self) -> tuple[list[float], list[float]]:
        """The iterations that count: all but the first (warm-up), unless it is the only one."""
        if len(self.step_s) > 1:
            return self.data_s[1:], self.step_s[1:]
        return self.data_s, self.step_s

    @property
    def iterations_per_s(self) -> float:
        """Iterations per second over the measured iterations (data wait + step)."""
        data, step = self.measured()
        total = sum(data) + sum(step)
        return len(step) / total if total > 0 else float("nan")

    @property
    def data_share(self) -> float:
        """Share of the measured iterations' time spent waiting for data."""
        data, step = self.measured()
        total = sum(data) + sum(step)
        return sum(data) / total if total > 0 else float("nan")


def _attach_timers(trainer: Any, stats: TrainingStats) -> None:
    from ignite.engine import Events

    marks: dict[str, float] = {}

    def mark(name: str) -> Callable[[Any], None]:
        def handler(engine: Any) -> None:
            marks[name] = time.perf_counter()
        return handler

    def batch_done(engine: Any) -> None:
        stats.data_s.append(time.perf_counter() - marks["batch"])

    def step_done(engine: Any) -> None:
        stats.step_s.append(time.perf_counter() - marks["step"])

    trainer.add_event_handler(Events.GET_BATCH_STARTED, mark("batch"))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, batch_done)
    trainer.add_event_handler(Events.ITERATION_STARTED, mark("step"))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, step_done)


def _train(
    bundle: Path, datalist: Path, profile: Path, run_dir: Path, overrides: Sequence[tuple[str, Any]],
    budget_s: float | None, device: torch.device,
) -> tuple[nn.Module, TrainingStats]:
    """Train through the bundle's ``train.json`` with MONAI's ``ConfigWorkflow``, timing every iteration.

    Returns:
        The trained network (eval mode) and the :class:`TrainingStats`.
    """
    from monai.bundle import ConfigWorkflow

    started = time.perf_counter()
    epochs = 1 if budget_s is None else 1000
    settings: dict[str, Any] = {
        "datalist": str(datalist), "fold": 0, "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir / "eval"), "epochs": epochs, "val_interval": epochs + 1, "resume": False,
        "time_budget_s": budget_s, "device": str(device), "learning_rate": 0.003,
    }
    settings.update(dict(overrides))
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / "train.json"), str(profile)],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **settings,
    )
    workflow.initialize()
    parser = workflow.parser
    stats = TrainingStats(
        batch_size=int(parser.get_parsed_content("batch_size")),
        patch_size=[int(p) for p in parser.get_parsed_content("patch_size")],
        samples_per_case=int(parser.get_parsed_content("samples_per_case")),
    )
    trainer = parser.get_parsed_content("train#trainer")
    _attach_timers(trainer, stats)
    first: dict[str, float] = {}

    def first_iteration(engine: Any) -> None:
        first.setdefault("t", time.perf_counter())

    from ignite.engine import Events

    trainer.add_event_handler(Events.GET_BATCH_STARTED, first_iteration)
    run_started = time.perf_counter()
    workflow.run()
    stats.wall_s = time.perf_counter() - run_started
    stats.setup_s = first.get("t", run_started) - started
    stats.epochs = int(trainer.state.epoch)
    network = parser.get_parsed_content("network")
    workflow.finalize()
    return network.eval(), stats
