"""The layout registry: detect which layout a dataset root has and read its cases with the right profile.

Layouts: ``isles2018`` (TRAINING/TESTING case folders of SMIR folders), ``isles2022`` (BIDS rawdata and
derivatives, MRI), ``isles2024`` (BIDS raw_data and derivatives, CT perfusion maps on the NCCT grid), ``nnunet`` (nnU-Net raw: dataset.json, imagesTr, labelsTr) and ``msd`` (a datalist JSON,
this project's own included).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.data import dicom, isles2018, isles2022, isles2024, msd, nnunet
from pipeline.data.profiles import PROFILES_DIR, DatasetProfile, load_profile
from pipeline.data.records import CaseRecord
from pipeline.errors import LayoutError


@dataclass(frozen=True)
class Layout:
    """One dataset layout.

    Attributes:
        name: the ``--layout`` name.
        looks_like: ``root -> bool``, True when ``root`` has this layout.
        discover: ``(root, profile, problems=None) -> list[CaseRecord]``, the layout's reader; given a
            ``problems`` list, it leaves a malformed case out and describes it there instead of raising.
        default_profile: ``root -> DatasetProfile``, the profile used when none is given.
        expects: what the layout looks like on disk, for error messages.
    """

    name: str
    looks_like: Callable[[Path], bool]
    discover: Callable[..., list[CaseRecord]]
    default_profile: Callable[[Path], DatasetProfile]
    expects: str


def available_profiles() -> list[DatasetProfile]:
    """Return every readable profile under ``configs/datasets/`` (a malformed one is warned about and skipped)."""
    profiles = []
    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        try:
            profiles.append(load_profile(path))
        except (OSError, ValueError) as err:
            warnings.warn(f"{path}: dataset profile skipped ({err})", stacklevel=2)
    return profiles


def profile_for_channels(channels: list[str], where: Path | str) -> DatasetProfile:
    """Return the profile whose modalities cover ``channels`` (names compared case-insensitively).

    When several profiles cover them, the one whose channels are exactly those names wins.

    Args:
        channels: the dataset's channel names.
        where: the dataset, for the error message.

    Raises:
        LayoutError: no profile, or more than one, fits; the message asks for ``--profile``.
    """
    wanted = {c.lower() for c in channels}
    # a DICOM profile chooses series by their descriptions: it is for the dicom layout only, never a NIfTI dataset's
    covering = [p for p in available_profiles()
                if p.layout != "dicom" and wanted <= {m.lower() for m in p.modalities}]
    if len(covering) > 1:
        exact = [p for p in covering if {c.lower() for c in p.channels} == wanted]
        covering = exact if len(exact) == 1 else covering
    if len(covering) == 1:
        return covering[0]
    if covering:
        fitting = f"several profiles fit ({', '.join(p.name for p in covering)})"
    else:
        fitting = "no profile knows them all"
    raise LayoutError(
        f"{where}: channels {', '.join(channels)}: {fitting}; choose one with --profile "
        f"(a name under {PROFILES_DIR} or a path to a profile YAML)"
    )


def _msd_default_profile(root: Path) -> DatasetProfile:
    channels = msd.channel_names(root)
    # A datalist this project wrote records its profile and channel choice: keep both when re-reading it.
    name = msd.datalist_profile_name(root)
    if name is not None:
        try:
            return load_profile(name).with_channels(channels)
        except (OSError, ValueError):
            pass
    return profile_for_channels(channels, root)


LAYOUTS: dict[str, Layout] = {
    "isles2018": Layout(
        "isles2018", isles2018.looks_like, isles2018.discover, lambda root: load_profile("isles2018"), isles2018.EXPECTS
    ),
    "isles2022": Layout(
        # an ISLES 2024 folder named rawdata/ (as the challenge describes it) is BIDS too: its NCCT tells them apart
        "isles2022", lambda root: isles2022.looks_like(root) and not isles2024.looks_like(root), isles2022.discover,
        lambda root: load_profile("isles2022"), isles2022.EXPECTS
    ),
    "isles2024": Layout(
        "isles2024", isles2024.looks_like, isles2024.discover, lambda root: load_profile("isles2024"), isles2024.EXPECTS
    ),
    "nnunet": Layout(
        "nnunet", nnunet.looks_like, nnunet.discover,
        lambda root: profile_for_channels(nnunet.channel_names(root), root), nnunet.EXPECTS,
    ),
    "dicom": Layout(
        "dicom", dicom.looks_like, dicom.discover, lambda root: load_profile("dicom_ctp"), dicom.EXPECTS
    ),
    "msd": Layout("msd", msd.looks_like, msd.discover, _msd_default_profile, msd.EXPECTS),
}


def detect_layout(root: str | Path) -> str:
    """Return the name of the one layout that ``root`` has.

    Raises:
        LayoutError: ``root`` does not exist, no layout matches (the message lists what each layout
            looks for), or several match (the message names them and asks for ``--layout``).

    A folder that holds images in one layout and also a datalist JSON (typically the datalist that
    ``prepare`` wrote beside the data) is read as the image layout, so ``prepare`` can be re-run.
    """
    root = Path(root)
    if not root.exists():
        raise LayoutError(f"dataset root {str(root)!r} does not exist")
    matches = [name for name, layout in LAYOUTS.items() if layout.looks_like(root)]
    if len(matches) == 2 and "msd" in matches and root.is_dir():
        matches.remove("msd")
    if len(matches) == 1:
        return matches[0]
    if not matches:
        looked_for = "; ".join(f"{name}: {layout.expects}" for name, layout in LAYOUTS.items())
        hint = ""
        if root.name.lower() in ("training", "testing"):
            hint = f". For ISLES 2018, give the folder that holds {root.name}/ ({str(root.parent)!r})"
        raise LayoutError(f"no known dataset layout found in {str(root)!r}. Looked for {looked_for}{hint}")
    raise LayoutError(
        f"{str(root)!r} matches several layouts ({', '.join(matches)}); choose one with --layout"
    )


def discover_cases(
    root: str | Path,
    layout: str = "auto",
    profile: DatasetProfile | str | Path | None = None,
    problems: list[dict] | None = None,
) -> tuple[str, DatasetProfile, list[CaseRecord]]:
    """Read the cases of a dataset.

    Args:
        root: the dataset root (for ``msd``, the datalist JSON itself may be given).
        layout: a name in :data:`LAYOUTS`, or ``auto`` to detect it.
        profile: a profile, a profile name or YAML path, or ``None`` for the layout's default
            (``isles2018`` and ``isles2022`` by name; for ``nnunet``/``msd`` the profile whose
            modalities cover the dataset's channel names).
        problems: when a list is given, each case the reader cannot make a record of (an empty or
            ambiguous modality folder, an unreadable case folder, a malformed datalist record) is left out
            of the records and appended there as ``{"case_id", "split", "file", "reason"}``, so that the
            caller reports it with the other per-case problems (``prepare --skip-incomplete``); when
            ``None``, such a case raises :class:`CaseError`.

    Returns:
        ``(layout name, profile, records)``.

    Raises:
        LayoutError: unknown layout, none or several detected, no default profile fits, the root does
            not have the layout, or no case was found.
        CaseError: a case is malformed (and ``problems`` is ``None``).
        FileNotFoundError, ValueError: the named profile is missing or malformed.
    """
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose one of auto, {', '.join(LAYOUTS)}")
    elif not root.exists():
        raise LayoutError(f"dataset root {str(root)!r} does not exist")
    entry = LAYOUTS[layout]
    if profile is None:
        profile = entry.default_profile(root)
    elif not isinstance(profile, DatasetProfile):
        profile = load_profile(profile)
    records = entry.discover(root, profile) if problems is None else entry.discover(root, profile, problems)
    if not records and not problems:
        raise LayoutError(f"no cases found in {str(root)!r} read as layout {layout!r} (expected {entry.expects})")
    return layout, profile, records
