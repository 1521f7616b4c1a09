"""PNG pictures: image grids (prior samples, reconstructions beside their inputs).

Matplotlib runs on the non-interactive Agg backend; every file is written to a
temporary path and renamed into place.
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles [N, H, W, C] images in [0, 1] into one [rows*(H+pad), cols*(W+pad)] array."""
    images = np.asarray(images, dtype=np.float32)
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    canvas = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = images[i]
    return canvas[..., 0] if c == 1 else canvas


def save_figure(fig, path: str | os.PathLike) -> str:
    """Saves `fig` as PNG through a temporary file and closes it; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def save_grid(images: np.ndarray, path: str | os.PathLike, title: str, ncols: int | None = None) -> str:
    """Writes a grid of [N, H, W, C] images in [0, 1] (ink dark on white) as a PNG."""
    canvas = tile(images, ncols)
    scale = 0.35 * canvas.shape[1] / 30
    fig, ax = plt.subplots(figsize=(max(3.0, scale), max(3.0, scale * canvas.shape[0] / canvas.shape[1]) + 0.4))
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, path)


def save_labeled_rows(rows: list[np.ndarray], row_labels: list[str], path: str | os.PathLike, title: str) -> str:
    """One row of images per entry of `rows` ([n, H, W, C] each), labelled on the left."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.45 * n + 1.0, 0.55 * len(rows) + 0.6), squeeze=False)
    for ax, images, label in zip(axes[:, 0], rows, row_labels):
        ax.imshow(tile(images, ncols=n, pad=1), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return save_figure(fig, path)


def save_reconstructions(inputs: np.ndarray, reconstructions: np.ndarray, path: str | os.PathLike, title: str) -> str:
    """Inputs (top row of each pair) above their reconstructions (bottom row)."""
    n = len(inputs)
    per_row = min(n, 16)
    rows, labels = [], []
    for start in range(0, n, per_row):
        rows += [inputs[start : start + per_row], reconstructions[start : start + per_row]]
        labels += ["input", "recon."]
    return save_labeled_rows(rows, labels, path, title)
