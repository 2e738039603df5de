"""What the benchmark needs before it measures: the synthetic dataset with its datalist and plans (written
with :func:`~pipeline.data.synthetic.write_synthetic_dataset` and :func:`~pipeline.data.prepare.prepare_dataset`),
the channels of the benchmarked model, the plans sized for a short CPU training, and the test cases with their
ground truth."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.benchmark.bundle import _bundle_parser
from pipeline.planning.cpu_budget import DEMO_CHANNELS, cpu_budget_plans

if TYPE_CHECKING:
    from pipeline.benchmark.options import BenchmarkOptions


def _synthetic_dataset(
    workdir: Path, cases: int, test_cases: int, seed: int, channels: Sequence[str], log: Callable[[str], None] = print
) -> Path:
    """Write the synthetic dataset under ``workdir/data`` and its datalist, fingerprint and plans beside it.

    The same as ``synth --overwrite`` and ``prepare``, called as library functions, stacking ``channels``
    (those the model is or was trained on).

    Args:
        workdir: the folder that receives ``data/``, ``datalist.json``, ``plans.json`` and the fingerprint.
        cases, test_cases: synthetic training and test cases.
        seed: the seed of the synthetic data and of the fold assignment.
        channels: the channel order of the datalist.
        log: receives the progress lines of the preparation.

    Returns:
        The datalist JSON written.

    Raises:
        ValueError: from :func:`~pipeline.data.synthetic.write_synthetic_dataset` (e.g. ``cases`` below 1).
        CaseError, LayoutError: from :func:`~pipeline.data.prepare.prepare_dataset` (e.g. a channel not written).
    """
    from pipeline.data.prepare import prepare_dataset
    from pipeline.data.synthetic import write_synthetic_dataset

    data, datalist = workdir / "data", workdir / "datalist.json"
    write_synthetic_dataset(data, cases=cases, test_cases=test_cases, seed=seed, overwrite=True)
    folds = min(5, max(2, cases))
    return prepare_dataset(data, datalist, folds=folds, seed=seed, channels=list(channels), log=log).datalist_path


def _model_channels(options: "BenchmarkOptions") -> list[str]:
    """The channels of the benchmarked model: those in the checkpoint's plans, else the demo's.

    Raises:
        FileNotFoundError: a checkpoint is given but its plans are not found.
    """
    from pipeline.planning.plans import load_plans
    from pipeline.planning.bundle_settings import TRAINED_PLANS

    if options.checkpoint is None:
        return DEMO_CHANNELS.split(",")
    plans = Path(options.plans) if options.plans else Path(options.checkpoint).parent / TRAINED_PLANS
    if not plans.is_file():
        raise FileNotFoundError(f"plans {str(plans)!r} not found: give --plans, the plans the checkpoint was trained with")
    return list(load_plans(plans).get("channels") or DEMO_CHANNELS.split(","))


def _training_plans(workdir: Path, quick: bool) -> Path:
    """The planned network sized for a short CPU budget (as the demo sizes it), written beside the datalist."""
    from pipeline.planning.plans import load_plans, write_plans

    plans = cpu_budget_plans(load_plans(workdir / "plans.json"), quick=quick)
    return write_plans(plans, workdir / "benchmark_plans.json")


def _test_cases(bundle: Path, datalist: Path, profile: Path, overrides: Sequence[tuple[str, Any]]) -> list[dict]:
    """The synthetic test cases with their ground truth, through the bundle's validation preprocessing."""
    from pipeline.data.datalist import load_datalist
    from pipeline.evaluation import GROUND_TRUTH_FOLDER, load_cases

    root = Path(json.loads(datalist.read_text()).get("root") or datalist.parent / "data")
    if not root.is_absolute():
        root = (datalist.parent / root).resolve()
    _, truths = load_cases(root / GROUND_TRUTH_FOLDER)
    by_id = {(t.case_id, t.smir_id): t.label for t in truths}
    parser = _bundle_parser(bundle, "train.json", profile, [("datalist", str(datalist)), *overrides])
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    cases = []
    for record in load_datalist(datalist, "testing"):
        label = by_id.get((record["case_id"], record.get("smir_id")))
        if label is None:
            continue
        item = preprocessing(dict(record, label=label))
        image = torch.as_tensor(item["image"]).float()[None]
        truth = torch.as_tensor(item["label"])[0].numpy() > 0.5
        cases.append({"case_id": record["case_id"], "image": image, "label": truth})
    if not cases:
        raise ValueError(f"{datalist}: no test case with ground truth under {root / GROUND_TRUTH_FOLDER}")
    return cases
