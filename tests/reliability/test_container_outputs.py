"""The ISLES 2024 container's outputs live in subfolders (``images/stroke-lesion-segmentation/output.mha``, or one
folder per case): only those known subfolders are results, a run replaces them and nothing else, names from case
data stay one plain component, and evaluate pairs them through the manifest or the case folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.__main__ import main
from pipeline.errors import CaseError
from pipeline.formats import isles2024_output_name, parse_isles2024_output_name
from pipeline.manifest import ManifestEntry, manifest_csv, read_manifest
from pipeline.paths import path_under
from pipeline.predict.names import planned_output_names
from pipeline.predict.publishing import existing_outputs, publish_results


def write_mha(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.uint8).transpose(2, 1, 0)))
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))
    return path


def lesion() -> np.ndarray:
    mask = np.zeros((12, 12, 3), np.uint8)
    mask[3:7, 3:7, 1] = 1
    return mask


def test_output_names_and_their_reading():
    assert isles2024_output_name() == "images/stroke-lesion-segmentation/output.mha"
    assert isles2024_output_name("sub-stroke0001") == "sub-stroke0001/images/stroke-lesion-segmentation/output.mha"
    with pytest.raises(CaseError, match="case_id"):
        isles2024_output_name("../escape")
    assert parse_isles2024_output_name("/o/sub-1/images/stroke-lesion-segmentation/output.mha") == (True, "sub-1")
    assert parse_isles2024_output_name("images/stroke-lesion-segmentation/output.mha") == (True, None)
    assert parse_isles2024_output_name("/o/sub-1/output.mha") == (False, None)
    with pytest.raises(CaseError, match="would both write"):  # two records, one name: refused before any work
        planned_output_names([{"case_id": "a"}, {"case_id": "b"}], "isles2024")
    assert planned_output_names([{"case_id": "a"}, {"case_id": "b"}], "isles2024", case_folders=True) == {
        "a": ["a/images/stroke-lesion-segmentation/output.mha"], "b": ["b/images/stroke-lesion-segmentation/output.mha"]}


def test_a_relative_output_path_stays_inside_the_folder(tmp_path):
    assert path_under(tmp_path, "a/b/c.mha", "a", "output name") == tmp_path / "a" / "b" / "c.mha"
    for bad in ("../c.mha", "a/../../c.mha", "a//c.mha", "/etc/c.mha", "a/.hidden/c.mha"):
        with pytest.raises(CaseError):
            path_under(tmp_path, bad, "a", "output name")


def test_the_manifest_takes_relative_paths_of_plain_names_only(tmp_path):
    def manifest(file: str) -> None:
        entry = ManifestEntry("run-1", "a", file, "written", "model.pt", "", "2026-01-01T00:00:00+00:00")
        (tmp_path / "manifest.csv").write_text(manifest_csv([entry]))

    manifest("a/images/stroke-lesion-segmentation/output.mha")
    assert read_manifest(tmp_path)[0].file == "a/images/stroke-lesion-segmentation/output.mha"
    for bad in ("../a.mha", "a/../b.mha", "a//b.mha", "/abs.mha", "a\\b.mha"):
        manifest(bad)
        with pytest.raises(ValueError, match="not a plain file name"):
            read_manifest(tmp_path)


def test_publishing_replaces_the_earlier_container_outputs_and_nothing_of_the_users(tmp_path):
    output, staging = tmp_path / "out", tmp_path / "out" / ".staging-1-run"
    old_single = write_mha(output / isles2024_output_name(), lesion())
    old_case = write_mha(output / isles2024_output_name("sub-old"), lesion())
    mine = [output / "images" / "notes.txt", output / "sub-old" / "images" / "other.txt", output / "data" / "x.mha"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    assert sorted(existing_outputs(output)) == sorted([old_single, old_case])
    new = write_mha(staging / isles2024_output_name("sub-new"), lesion())
    (staging / "manifest.csv").write_text("run_id,case_id,file,status\n")
    published = publish_results(staging, output)
    assert output / isles2024_output_name("sub-new") in published and not new.exists()
    assert not old_single.exists() and not old_case.exists()
    assert not (output / "images" / "stroke-lesion-segmentation").exists()  # emptied result folders go
    assert all(p.read_text() == "mine" for p in mine)  # the user's files stay, and the folders that hold them


def test_evaluate_pairs_container_outputs_by_manifest_case_and_by_case_folder(tmp_path, capsys):
    truth = tmp_path / "truth"
    for case in ("sub-1", "sub-2"):
        write_mha(truth / f"{case}.mha", lesion())
    batch = tmp_path / "batch"  # no manifest: the folder above images/ names the case
    for case in ("sub-1", "sub-2"):
        write_mha(batch / isles2024_output_name(case), lesion())
    assert main(["evaluate", "--pred", str(batch), "--truth", str(truth), "--metrics", "isles2024",
                 "--out", str(tmp_path / "e1" / "m.csv")]) == 0
    assert "2 scored" in capsys.readouterr().out
    single = tmp_path / "output"  # the container's run: its manifest names the case
    write_mha(single / isles2024_output_name(), lesion())
    entry = ManifestEntry("run-1", "sub-2", isles2024_output_name(), "written", "model.pt", "", "2026-01-01T00:00:00+00:00")
    (single / "manifest.csv").write_text(manifest_csv([entry]))
    assert main(["evaluate", "--pred", str(single), "--truth", str(truth), "--metrics", "isles2024",
                 "--out", str(tmp_path / "e2" / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert "1 scored" in out and "dice                1.000" in out
