"""From a dataset folder to a datalist: the one path every command takes.

:func:`prepare_dataset` is ``python -m pipeline prepare`` as a function (layout reader, channel selection,
per-case checks, folds, fingerprint and plans, the tables of left-out cases and notes); the CLI, the demo and
the benchmark call it. :func:`folder_datalist` is the same reading for ``predict --input FOLDER``: one split
of a folder written as a one-fold datalist.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.datalist import build_datalist, natural_key, read_datalist_json, select_channels, write_datalist
from pipeline.data.layouts import LAYOUTS, detect_layout, discover_cases
from pipeline.data.profiles import DatasetProfile, load_profile
from pipeline.errors import CaseError, LayoutError

SKIPPED_CASES_NAME = "skipped_cases.csv"
CASE_NOTES_NAME = "case_notes.csv"
SKIPPED_COLUMNS = ["case_id", "split", "file", "reason"]
NOTES_COLUMNS = ["case_id", "split", "channel", "file", "note"]


@dataclass
class PreparedDataset:
    """What :func:`prepare_dataset` wrote.

    Attributes:
        layout: the layout the folder was read as.
        profile: the dataset profile, with the chosen channel order.
        datalist_path: the datalist JSON.
        datalist: its content.
        fingerprint_dir: the folder of ``fingerprint.csv``/``.json`` (and ``plans.json`` when written).
        plans: the derived plans, or ``None`` when there was no training case.
        problems: the left-out cases, ``{"case_id", "split", "file", "reason"}``.
        notes: the empty or constant channels of kept cases.
        summary: the fingerprint summary.
    """

    layout: str
    profile: DatasetProfile
    datalist_path: Path
    datalist: dict[str, Any]
    fingerprint_dir: Path
    plans: dict[str, Any] | None
    problems: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def plans_path(self) -> Path | None:
        """``plans.json`` beside the fingerprint, or ``None`` when no plans were derived."""
        return None if self.plans is None else self.fingerprint_dir / "plans.json"


def describe_problem(problem: dict[str, Any]) -> str:
    """One indented line naming a left-out case, its split, its file when known, and the reason."""
    where = f"case {problem['case_id']!r} ({problem['split']})"
    if problem.get("file"):
        where += f", file {str(problem['file'])!r}"
    return f"  {where}: {problem['reason']}"


def _missing_channel_problems(records, incomplete, profile: DatasetProfile) -> list[dict[str, Any]]:
    """Problems for cases without a channel (or a training label), named by the file the layout expected."""
    by_key = {(r.case_id, r.split): r for r in records}
    label_name = profile.label_modality or "label"
    problems = []
    for item in incomplete:
        record = by_key[(item["case_id"], item["split"])]
        expected = record.extra.get("missing_files", {}) if isinstance(record.extra, dict) else {}
        first = item["missing"][0]
        found = sorted(list(record.modalities) + ([label_name] if record.label else []))
        problems.append({
            "case_id": item["case_id"], "split": item["split"],
            "file": expected.get("label" if first == label_name else first) or record.folder,
            "reason": f"missing modality {', '.join(repr(m) for m in item['missing'])} "
                      f"(found: {', '.join(found) or 'none'}); add it or choose other channels with --channels",
        })
    return problems


def _write_table(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """Write ``rows`` as CSV at ``path``, or remove an older run's file of that name when there are none."""
    from pipeline.io import atomic_write_text

    if not rows:
        path.unlink(missing_ok=True)
        return path
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: "" if r.get(c) is None else str(r[c]) for c in columns} for r in rows)
    return atomic_write_text(path, text.getvalue())


def _with_optional_channels(profile, records, log: Callable[[str], None]):
    """``profile`` with each of its optional channels appended that every case in ``records`` has; the others are
    left out with a line saying which case lacks them."""
    added = []
    for channel in [c for c in profile.optional_channels if c not in profile.channels]:
        lacking = [r.case_id for r in records if channel not in r.modalities]
        if lacking:
            log(f"  optional channel {channel} left out: {len(lacking)} case(s) lack it, e.g. {lacking[0]} "
                f"(--channels {','.join(profile.channels + [channel])} insists on it)")
        else:
            added.append(channel)
    return profile.with_channels(profile.channels + added) if added else profile


def _reader_profile(root: Path, layout: str, profile: DatasetProfile | None,
                    channels: list[str] | None) -> tuple[str, DatasetProfile | None]:
    """The layout to read ``root`` as and the profile its reader should get when ``channels`` are asked for: a reader
    that looks for the channels themselves (``dicom`` chooses one series per channel) must look for those.

    Args:
        root, layout: the dataset and its layout name or ``auto``.
        profile: the profile asked for, or ``None`` for the layout's default.
        channels: the channels asked for, or ``None``.

    Returns:
        ``(layout, profile)`` to give :func:`discover_cases`. Without ``channels`` both are returned as they came; with
        them, ``auto`` is resolved and a missing profile is the layout's default (still ``None`` when the layout is
        unknown or the root missing, which :func:`discover_cases` then reports). The caller sets the channel order.

    Raises:
        LayoutError: detection fails, or the layout's default profile cannot be chosen.
    """
    if not channels:
        return layout, profile
    name = detect_layout(root) if layout == "auto" else layout
    if profile is None and name in LAYOUTS and Path(root).exists():
        profile = LAYOUTS[name].default_profile(Path(root))
    return name, profile


def prepare_dataset(
    root: str | Path,
    out: str | Path,
    *,
    layout: str = "auto",
    profile: str | None = None,
    channels: str | list[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    skip_incomplete: bool = False,
    fingerprint_dir: str | Path | None = None,
    strict: bool = False,
    log: Callable[[str], None] = print,
) -> PreparedDataset:
    """Read a dataset folder and write its datalist with folds, its fingerprint and its plans.

    Every per-case problem is found before anything is written and reported together, naming the case, the
    file and the reason: a case the layout reader cannot read (an empty or ambiguous modality folder, an
    unreadable folder), a missing channel or label, and a file whose content is unusable (unreadable, an
    unsupported data type such as bool or complex, off the reference grid, a label whose values are not
    0/1 after the profile's ``label_values``). Without ``skip_incomplete`` any of them fails and nothing is
    written; with it, those cases are left out and listed in ``skipped_cases.csv`` beside the datalist. An
    empty or constant channel is a warning, listed in ``case_notes.csv`` and the fingerprint summary
    (``strict`` fails such a case instead).

    Args:
        root: the dataset folder (any known layout) or an MSD datalist JSON.
        out: the datalist JSON to write.
        layout: ``auto`` or a layout name.
        profile: a profile name or YAML path (default: the layout's).
        channels: channel order overriding the profile's (comma-separated text or a list); without it, the
            profile's channels and those of its optional channels that every case has.
        folds, seed: the cross-validation folds and the seed of their assignment.
        skip_incomplete: leave out (and list) unusable cases instead of failing.
        fingerprint_dir: where the fingerprint and plans go (default: beside ``out``).
        strict: treat an empty or constant channel as a problem of its case.
        log: receives each progress line.

    Returns:
        The :class:`PreparedDataset` written.

    Raises:
        CaseError: ``out`` names an input of the dataset, or (without ``skip_incomplete``) a case is unusable.
        LayoutError: the folder cannot be read as a layout, or no usable case is left.
    """
    from pipeline.planning.fingerprint import compute_fingerprint, summarize_fingerprint, write_fingerprint

    root, out = Path(root), Path(out)
    problems: list[dict] = []  # per-case problems: {"case_id", "split", "file", "reason"}
    names = None
    if channels:
        names = [c.strip() for c in (channels.split(",") if isinstance(channels, str) else channels) if c.strip()]
    read_as, base = _reader_profile(root, layout, load_profile(profile) if profile else None, names)
    found_layout, chosen, records = discover_cases(
        root, read_as, base.with_channels(names) if names and base else base, problems=problems)
    how = "detected" if layout == "auto" else "as asked"
    log(f"prepare: {root} read as layout {found_layout!r} ({how}), profile {chosen.name!r}: "
        f"{len(records) + len(problems)} cases found")
    if channels:
        chosen = chosen.with_channels(names)
    else:
        chosen = _with_optional_channels(chosen, records, log)
    log(f"  channels in order: {', '.join(chosen.channels)}")
    inputs = {Path(p).resolve() for r in records for p in [*r.modalities.values(), r.label] if p}
    if out.resolve() in inputs | {root.resolve()}:
        raise CaseError(None, str(out), "--out names an input of the dataset; choose another datalist path")

    complete, incomplete = select_channels(records, chosen, skip_incomplete=True)
    problems += _missing_channel_problems(records, incomplete, chosen)

    # The files' content: data types, grids, label values, empty or constant channels.
    notes: list[dict] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, failures = compute_fingerprint(complete, chosen, strict=strict, notes=notes)
    for note in sorted({str(w.message) for w in caught if "pixdim" in str(w.message)}):
        log(f"  warning: {note}")
    problems += [{"case_id": f["case_id"], "split": f["split"], "file": f.get("file"),
                  "reason": f.get("reason") or f["error"]} for f in failures]
    problems.sort(key=lambda p: (p["split"] != "training", natural_key(str(p["case_id"]))))

    if problems and not skip_incomplete:
        raise CaseError(
            problems[0]["case_id"],
            problems[0].get("file"),
            f"{len(problems)} case(s) cannot be used; nothing was written. Fix them or leave them out with "
            "--skip-incomplete:\n" + "\n".join(describe_problem(p) for p in problems),
        )
    left_out = {(p["case_id"], p["split"]) for p in problems}
    kept = [r for r in complete if (r.case_id, r.split) not in left_out]
    if not kept:
        raise LayoutError(
            f"{root}: no usable case left; nothing was written. Every case was left out:\n"
            + "\n".join(describe_problem(p) for p in problems)
        )
    for note in notes[:20]:
        log(f"  warning: {note['note']}")
    if len(notes) > 20:
        log(f"  warning: and {len(notes) - 20} more empty or constant channel(s), listed in {CASE_NOTES_NAME}")

    datalist = build_datalist(kept, chosen, found_layout, root, out, n_folds=folds, seed=seed)
    summary = summarize_fingerprint(table, chosen)
    if summary.get("cases"):
        summary["channel_notes"] = [dict(n) for n in notes]
        summary["skipped_cases"] = [dict(p, file=None if p.get("file") is None else str(p["file"])) for p in problems]
    fingerprint_dir = Path(fingerprint_dir) if fingerprint_dir else out.parent
    _, fingerprint_json = write_fingerprint(table, summary, fingerprint_dir)
    plans = None
    if summary.get("training_cases"):
        from pipeline.planning.plans import derive_plans, write_plans

        plans = derive_plans(fingerprint_json)
        write_plans(plans, fingerprint_dir / "plans.json")
    write_datalist(datalist, out)
    log(f"  wrote {out}: {datalist['numTraining']} training records in {datalist['folds']} folds (seed {seed}), "
        f"{datalist['numTest']} test records")
    log(f"  wrote {fingerprint_dir / 'fingerprint.csv'} and {fingerprint_dir / 'fingerprint.json'}")
    if plans is not None:
        log(f"  wrote {fingerprint_dir / 'plans.json'}: {plans['configuration']}, patch {plans['patch_size']}, "
            f"strides {plans['strides']}, batch {plans['batch_size']}")

    skipped_csv = _write_table(out.parent / SKIPPED_CASES_NAME, problems, SKIPPED_COLUMNS)
    notes_csv = _write_table(out.parent / CASE_NOTES_NAME, notes, NOTES_COLUMNS)
    if problems:
        log(f"  left out {len(problems)} case(s) (listed in {skipped_csv}):")
        for p in problems:
            log(describe_problem(p))
    if notes:
        log(f"  {len(notes)} empty or constant channel(s) in {len({(n['case_id'], n['split']) for n in notes})} "
            f"kept case(s) (listed in {notes_csv})")
    return PreparedDataset(found_layout, chosen, out, datalist, fingerprint_dir, plans, problems, notes, summary)


def folder_datalist(folder: Path, split: str, work_dir: Path, layout: str = "auto",
                    channels: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the cases of one split of a dataset folder as a datalist under ``testing``.

    The folder is read with its layout reader (auto-detected); a case without a label counts as ``testing``.
    ``channels`` (those a model was trained on) are stacked in their order; without them, the profile's default
    channels and those of its optional channels that every case has, as ``prepare`` chooses them.

    Returns:
        ``(datalist path in work_dir, datalist dict)``.

    Raises:
        LayoutError, CaseError: from the layout readers, or a case without a channel.
        ValueError: the folder has no case of ``split``, or ``channels`` names a modality its profile does not know.
    """
    def trained_channels(profile: DatasetProfile) -> DatasetProfile:
        try:
            return profile.with_channels(channels)
        except ValueError as err:
            raise ValueError(f"{folder}: the model was trained on the channels {', '.join(channels)}, which this "
                             f"dataset cannot give ({err}); predict it with a model trained on its own "
                             "channels") from None

    read_as, base = _reader_profile(folder, layout, None, channels)
    found_layout, profile, records = discover_cases(folder, read_as, trained_channels(base) if base else None)
    records = [r for r in records if r.split == split]
    if not records:
        raise ValueError(f"{folder}: no {split} cases found (choose the split with --split)")
    for record in records:
        record.split = "testing"
    if not channels:
        profile = _with_optional_channels(profile, records, lambda _: None)
    else:
        profile = trained_channels(profile)
    records, _ = select_channels(records, profile, skip_incomplete=False)
    out = work_dir / "datalist.json"
    datalist = build_datalist(records, profile, found_layout, folder, out, n_folds=1, seed=0)
    write_datalist(datalist, out)
    return out, datalist


def input_datalist(input_path: Path, split: str, work_dir: Path, layout: str = "auto",
                   channels: list[str] | None = None) -> tuple[Path, str, dict]:
    """Resolve ``predict --input`` to a datalist file and split.

    A datalist JSON is used as it is; a folder goes through :func:`folder_datalist` (with ``channels``, the
    model's, when known).

    Returns:
        ``(datalist path, split to predict, datalist dict)``.

    Raises:
        LayoutError, CaseError: from the layout readers.
        ValueError: the folder has no case of ``split``, or the datalist file is not a JSON object.
    """
    if input_path.is_file():
        return input_path, split, read_datalist_json(input_path)
    path, datalist = folder_datalist(input_path, split, work_dir, layout, channels)
    return path, "testing", datalist
