"""The report: overlay PNGs per case, training curves from TensorBoard and CSV logs, report.md linking them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.evaluation import evaluate_predictions
from pipeline.report import lesion_slice, read_training_scalars, write_report

SHAPE = (24, 20, 4)


def write_image(path: Path, data: np.ndarray, dtype=np.uint8) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), np.diag([0.9, 0.9, 5.0, 1.0])), str(path))
    return str(path)


@pytest.fixture
def evaluated(tmp_path):
    """Two cases with perfusion maps, truths and predictions, evaluated with the threshold baseline."""
    records = []
    for index in (1, 2):
        folder = tmp_path / "data" / f"case_{index}"
        truth = np.zeros(SHAPE, dtype=np.uint8)
        truth[5:12, 6:12, 2] = 1
        truth[6:10, 7:11, 1] = 1
        cbf = np.full(SHAPE, 50.0)
        cbf[truth != 0] = 5.0
        tmax = np.full(SHAPE, 1.5)
        tmax[3:15, 4:15, :] = 8.0
        maps = {
            "CBF": write_image(folder / "cbf.nii.gz", cbf, np.float32),
            "CBV": write_image(folder / "cbv.nii.gz", np.full(SHAPE, 4.0), np.float32),
            "MTT": write_image(folder / "mtt.nii.gz", np.full(SHAPE, 6.0), np.float32),
            "Tmax": write_image(folder / "tmax.nii.gz", tmax, np.float32),
        }
        label = write_image(folder / "ot.nii.gz", truth)
        write_image(tmp_path / "pred" / f"case_{index}.nii.gz", np.roll(truth, index, axis=0))
        records.append({
            "case_id": f"case_{index}",
            "label": os.path.relpath(label, tmp_path / "data"),
            "image": [os.path.relpath(p, tmp_path / "data") for p in maps.values()],
            "modalities": {k: os.path.relpath(p, tmp_path / "data") for k, p in maps.items()},
        })
    datalist = tmp_path / "data" / "datalist.json"
    datalist.write_text(json.dumps({"training": records, "testing": []}))
    out = tmp_path / "eval" / "metrics.csv"
    return evaluate_predictions(tmp_path / "pred", datalist, out, baseline="threshold"), out


def linked_files(report: Path) -> list[Path]:
    text = report.read_text(encoding="utf-8")
    return [report.parent / target for target in re.findall(r"\]\(([^)]+\.png)\)", text)]


def test_report_writes_an_overlay_per_case_and_links_it(evaluated, tmp_path):
    result, _ = evaluated
    report = write_report(tmp_path / "report", result)
    pngs = sorted((tmp_path / "report" / "cases").glob("*.png"))
    assert [p.name for p in pngs] == ["case_1.png", "case_2.png"]
    for png in pngs:
        height, width, _ = matplotlib.image.imread(png).shape
        assert width > 3 * height  # four map panels side by side
    links = linked_files(report)
    assert set(pngs) <= set(links) and all(p.is_file() for p in links)
    text = report.read_text(encoding="utf-8")
    assert "threshold mean ± std" in text and "model minus threshold" in text
    assert "## Clinical volumes" in text


def test_training_curves_from_tensorboard_events_and_a_csv(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "logs" / "fold0"))
    for step in range(4):
        writer.add_scalar("train_loss", 1.0 / (step + 1), step)
        writer.add_scalar("val_mean_dice", 0.1 * step, step)
    writer.close()
    (tmp_path / "logs" / "history.csv").write_text("epoch,lr,val_hd95\n0,0.01,12\n1,0.005,9\n")
    scalars = read_training_scalars([tmp_path / "logs"])
    assert set(scalars) == {"train_loss", "val_mean_dice", "lr", "val_hd95"}
    assert scalars["train_loss"]["fold0"][3] == (3.0, pytest.approx(0.25))
    report = write_report(tmp_path / "report", logs=[tmp_path / "logs"])
    curves = tmp_path / "report" / "training_curves.png"
    assert curves.is_file() and curves in linked_files(report)
    assert matplotlib.image.imread(curves).shape[0] > 100


def test_report_command_rebuilds_the_report_from_the_evaluation_files(evaluated, tmp_path, capsys):
    _, metrics = evaluated
    assert main(["report", "--metrics", str(metrics), "--out", str(tmp_path / "again")]) == 0
    report = tmp_path / "again" / "report.md"
    assert report.is_file() and len([p for p in linked_files(report) if p.is_file()]) >= 2


def test_evaluate_command_writes_the_report_when_asked(evaluated, tmp_path):
    _, metrics = evaluated
    datalist = tmp_path / "data" / "datalist.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(datalist), "--out",
                 str(tmp_path / "e2" / "m.csv"), "--report", str(tmp_path / "e2" / "report")]) == 0
    assert (tmp_path / "e2" / "report" / "cases" / "case_1.png").is_file()


def test_a_report_needs_an_evaluation_or_logs(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        write_report(tmp_path / "report")


def test_the_overlay_slice_is_the_one_with_most_lesion():
    truth = np.zeros(SHAPE, dtype=bool)
    truth[2:4, 2:4, 1] = True
    truth[2:8, 2:8, 3] = True
    assert lesion_slice(truth) == 3
    assert lesion_slice(np.zeros(SHAPE, dtype=bool)) == SHAPE[2] // 2
