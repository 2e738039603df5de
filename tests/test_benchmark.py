"""``python -m pipeline benchmark --quick``: a smoke run that writes every section with finite figures.

Not a timed test: nothing here asserts on speed, only that the benchmark runs end to end and reports.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.__main__ import build_parser, main
from pipeline.benchmark import SECTIONS, BenchmarkOptions, NetworkClock, command_line, run_benchmark, time_side_by_side
from pipeline.benchmark.targets import paired_difference


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    out = root / "results.md"
    options = BenchmarkOptions(out=out, quick=True, workdir=root / "work", device="cpu")
    result = run_benchmark(options, log=lambda line: None)
    return out, result


def test_quick_run_writes_every_section_in_order(quick_run):
    out, _ = quick_run
    text = out.read_text()
    positions = [text.find(f"\n## {section}\n") for section in SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(SECTIONS, positions) if p < 0]
    assert positions == sorted(positions)
    assert "python -m pipeline benchmark --quick" in text and "torch" in text and "MONAI" in text


def test_quick_run_ratios_are_finite_numbers(quick_run):
    _, result = quick_run
    assert result.ratios
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.ratios.values()), result.ratios
    assert all(timing.total > 0 for timings in result.inference.values() for timing in timings.values())


def test_quick_run_reports_every_pruned_level_and_the_training_share(quick_run):
    out, result = quick_run
    levels = [row["level"] for row in result.pruning]
    assert levels == list(range(1, len(levels) + 1)) and len(levels) >= 4
    assert 0.0 <= result.training.data_share <= 1.0 and result.training.iterations_per_s > 0
    text = out.read_text()
    assert all(f"| L{level} |" in text for level in levels)
    assert re.search(r"share of step time waiting for data \| \d+\.\d%", text)
    assert "| met |" in text


def test_the_cli_parses_the_benchmark_options():
    args = build_parser().parse_args(["benchmark", "--quick", "--repeats", "2", "--device", "cpu"])
    assert args.func.__name__ == "command_benchmark" and args.quick and args.repeats == 2


def test_the_written_command_repeats_the_run():
    line = command_line(BenchmarkOptions(quick=True, repeats=2, seed=3))
    assert line == "python -m pipeline benchmark --quick --repeats 2 --seed 3"


def test_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["benchmark", "--quick", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "r.md")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_side_by_side_timing_counts_the_network_calls_of_each_method():
    net = nn.Conv2d(1, 1, 3, padding=1).eval()
    x = torch.randn(1, 1, 8, 8)
    timings = time_side_by_side({"once": (net, lambda: net(x)), "twice": (net, lambda: (net(x), net(x)))}, 3, torch.device("cpu"))
    assert [timings["once"].calls, timings["twice"].calls] == [[1, 1, 1], [2, 2, 2]]
    assert all(t.network <= t.total for t in timings.values())
    with NetworkClock(net, torch.device("cpu")) as clock:
        net(x)
    assert clock.calls == 1 and clock.seconds > 0


def test_the_timing_input_is_a_head_sized_ellipse_on_every_slice():
    from pipeline.benchmark.scenarios import HEAD_SEMI_AXES, head_like_input
    from pipeline.inferers import foreground_box

    x = head_like_input(5, (256, 256, 8))
    assert x.shape == (1, 5, 256, 256, 8)
    inside = (x != 0).any(1)[0]
    assert torch.equal(inside[..., 0], inside[..., 7])
    assert math.isclose(float(inside.float().mean()), math.pi * HEAD_SEMI_AXES[0] * HEAD_SEMI_AXES[1], rel_tol=0.02)
    rows, cols, _ = foreground_box(x)
    assert rows.stop - rows.start == pytest.approx(2 * HEAD_SEMI_AXES[0] * 256, abs=2)
    assert cols.stop - cols.start == pytest.approx(2 * HEAD_SEMI_AXES[1] * 256, abs=2)
    assert torch.equal(x, head_like_input(5, (256, 256, 8)))  # seeded


def test_the_dice_comparison_is_paired_with_its_standard_error():
    rows = [{"a": 0.5, "b": 0.4}, {"a": 0.3, "b": 0.4}, {"a": 0.7, "b": 0.4}]  # differences 0.1, -0.1, 0.3
    mean, error = paired_difference(rows, "a", "b")
    assert mean == pytest.approx(0.1)
    assert error == pytest.approx(0.2 / np.sqrt(3))
    assert paired_difference(rows[:1], "a", "b") == (pytest.approx(0.1), 0.0)
    with pytest.raises(ValueError):
        paired_difference([], "a", "b")
