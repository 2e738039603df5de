"""The weights of an exported bundle: the checkpoint a training run wrote, as ``models/model.pt`` (a bare state
dict) and ``models/model.ts`` (TorchScript, from MONAI's ``ckpt_export``), and the score the run recorded.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import CaseError

BEST_MODEL = "model.pt"
FINAL_MODEL = "last.pt"
TORCHSCRIPT = "model.ts"
# the entry of a training checkpoint (last.pt) under which AtomicCheckpointSaver keeps the best validation score
BEST_SCORE_KEY = "best_metric"


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint to export: a file, or a ``train --output`` folder or its ``models/`` folder (its best model
    ``model.pt``, else ``last.pt``: :func:`pipeline.predict.models.run_checkpoint`).

    Raises:
        FileNotFoundError: no such file, or a folder without either checkpoint.
    """
    from pipeline.predict.models import run_checkpoint

    path = Path(path).expanduser().resolve()
    if path.is_file():
        return path
    found = run_checkpoint(path) if path.is_dir() else None
    if found is not None:
        return found
    raise FileNotFoundError(f"checkpoint {str(path)!r} not found: give a checkpoint file or a train --output folder "
                            f"(with models/{BEST_MODEL} or models/{FINAL_MODEL})")


def network_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The network's state dict in ``checkpoint`` (a bare state dict, or a training checkpoint's ``"model"``).

    Raises:
        CaseError: the file does not load with ``weights_only=True`` or holds no state dict.
    """
    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file; the message names it
        raise CaseError(None, str(checkpoint), f"cannot be loaded as PyTorch weights ({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CaseError(None, str(checkpoint), "holds no state dict of a network (expected a 'model' entry)")
    return state


def recorded_score(checkpoint: Path) -> dict[str, Any] | None:
    """The best validation score the training run of ``checkpoint`` recorded, or ``None``.

    :class:`pipeline.training.checkpoints.AtomicCheckpointSaver` keeps it in the training checkpoint
    (``last.pt`` beside the best model, or the checkpoint itself when it is one) under ``"best_metric"``:
    ``{"best_metric": float, "best_metric_epoch": int, ...}``.

    Returns:
        ``{"mean_dice": float, "epoch": int, "source": Path}`` or ``None`` when no file holds a score.
    """
    from pipeline.training.checkpoints import recorded_best_metric

    for candidate in (checkpoint, checkpoint.parent / FINAL_MODEL):
        best = recorded_best_metric(candidate) if candidate.is_file() else None
        if best is not None:
            return {"mean_dice": best[0], "epoch": best[1], "source": candidate}
    return None


def write_weights(state: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``state`` as a bare state dict (``torch.load(weights_only=True)`` reads it), fsynced.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def md5sum(path: Path) -> str:
    """The MD5 hex digest of a file (the model zoo's ``large_files.yml`` hash)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Run in a child whose working directory is the bundle folder: the vendored ``scripts`` package is imported from
# there, and the project's own package is made unimportable, so that a module the vendoring missed fails here.
_EXPORT_SCRIPT = textwrap.dedent("""
    import importlib.abc, sys
    class _NoProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pipeline" or name.startswith("pipeline."):
                raise ImportError(f"the exported bundle imports {name}, which it does not vendor")
            return None
    sys.meta_path.insert(0, _NoProject())
    sys.path.insert(0, ".")
    from monai.bundle import ckpt_export
    ckpt_export(net_id="network_def", filepath=sys.argv[1], ckpt_file=sys.argv[2],
                meta_file="configs/metadata.json", config_file="configs/inference.json", bundle_root=".")
""")


def export_torchscript(bundle: Path, weights: Path, out: Path) -> Path:
    """``out``: the network of ``bundle/configs/inference.json`` with ``weights``, as TorchScript, written by
    MONAI's ``ckpt_export`` in a child process that cannot import this project (only the bundle's ``scripts``).

    Raises:
        RuntimeError: ``ckpt_export`` failed (its last lines of output are in the message).
    """
    result = subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT, str(out), str(weights)], cwd=str(bundle),
                            capture_output=True, text=True)
    if result.returncode != 0 or not out.is_file():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"ckpt_export of the exported bundle failed (exit status {result.returncode}):\n{tail}")
    return out
