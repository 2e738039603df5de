"""The report's figures: matplotlib on its Agg backend (no display needed), and saving a figure atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from pipeline.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        # zlib's fastest level: the default level took a large share of a figure's time, for files a little larger
        fig.savefig(tmp, dpi=110, bbox_inches="tight", facecolor="white", pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return path
