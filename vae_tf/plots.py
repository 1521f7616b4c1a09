"""PNG pictures: image grids (prior samples, reconstructions beside their inputs).

Grey images (C = 1) are drawn as ink, dark on white (1 is black, the `gray_r`
colormap); colour images (C = 3, RGB) as they are, on a white background.

Matplotlib runs on the non-interactive Agg backend; every file is rendered in memory,
written to a temporary path and renamed into place (a path may be a tf.io.gfile URL
such as gs://bucket/run/samples.png: see `vae_tf.fileio`).
"""

from __future__ import annotations

import io
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vae_tf import fileio  # noqa: E402


def tile(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles [N, H, W, C] images in [0, 1] into one canvas: [rows*(H+pad)+pad,
    cols*(W+pad)+pad] for grey images (C = 1), with a third axis of 3 for RGB (C = 3).

    The background is blank paper: 0 for grey images (white under the `gray_r`
    colormap, where ink is 1), 1 (white) for colour ones.
    """
    images = np.asarray(images, dtype=np.float32)
    n, h, w, c = images.shape
    if c not in (1, 3):
        raise ValueError(
            f"pictures show grey (C = 1) or RGB (C = 3) images, got {c} channels (shape {list(images.shape)})."
        )
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 0.0 if c == 1 else 1.0, np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = images[i]
    return canvas[..., 0] if c == 1 else canvas


def show(ax, canvas: np.ndarray, **kwargs):
    """Draws a `tile` canvas on `ax`: grey [H, W] as ink dark on white (`gray_r`, 0..1),
    RGB [H, W, 3] in colour (clipped to [0, 1])."""
    if canvas.ndim == 2:
        return ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest", **kwargs)
    return ax.imshow(np.clip(canvas, 0.0, 1.0), interpolation="nearest", **kwargs)


def save_figure(fig, path: str | os.PathLike) -> str:
    """Saves `fig` as PNG through a temporary file and closes it; returns the path."""
    path = os.fspath(path)
    fileio.makedirs(os.path.dirname(fileio.absolute(path)))
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    fileio.write_atomic(path, png.getvalue())
    return path


def save_grid(images: np.ndarray, path: str | os.PathLike, title: str, ncols: int | None = None) -> str:
    """Writes a grid of [N, H, W, C] images in [0, 1] as a PNG (grey: ink dark on white;
    RGB: in colour)."""
    canvas = tile(images, ncols)
    scale = canvas.shape[1] / 40  # inches: about 2.5 screen pixels per image pixel at dpi 100
    fig, ax = plt.subplots(figsize=(max(3.0, scale), max(3.0, scale * canvas.shape[0] / canvas.shape[1]) + 0.4))
    show(ax, canvas)
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, path)


def save_labeled_rows(rows: list[np.ndarray], row_labels: list[str], path: str | os.PathLike, title: str) -> str:
    """One row of images per entry of `rows` ([n, H, W, C] each), labelled on the left."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.45 * n + 1.0, 0.55 * len(rows) + 0.6), squeeze=False)
    for ax, images, label in zip(axes[:, 0], rows, row_labels):
        show(ax, tile(images, ncols=n, pad=1))
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return save_figure(fig, path)


def save_prior_samples(model, path: str | os.PathLike, seed: int = 0) -> str:
    """samples.png of a VAE: 64 draws from the prior in an 8-wide grid, or, for a
    conditional model, one labelled row of ten per class (row i drawn with label i)."""
    c = model.config
    if not c.conditional:
        return save_grid(model.sample(64, seed=seed).numpy(), path, "64 samples from the prior", ncols=8)
    k = c.num_classes
    grid = model.sample(k * 10, seed=seed, label=np.repeat(np.arange(k), 10)).numpy()
    names = list(c.class_names) if c.class_names else [f"digit {i}" for i in range(k)]
    return save_labeled_rows(
        [grid[i * 10 : (i + 1) * 10] for i in range(k)], names, path,
        "samples from the prior, one row per requested " + ("class" if c.class_names else "digit"),
    )


def save_reconstructions(inputs: np.ndarray, reconstructions: np.ndarray, path: str | os.PathLike, title: str) -> str:
    """Inputs (top row of each pair) above their reconstructions (bottom row)."""
    n = len(inputs)
    per_row = min(n, 16)
    rows, labels = [], []
    for start in range(0, n, per_row):
        rows += [inputs[start : start + per_row], reconstructions[start : start + per_row]]
        labels += ["input", "recon."]
    return save_labeled_rows(rows, labels, path, title)


def save_interpolations(rows: np.ndarray, path: str | os.PathLike, title: str, row_labels: list[str] | None = None) -> str:
    """Rows of images [R, S, H, W, C]: each row walks from its first image to its last."""
    rows = list(np.asarray(rows))
    labels = row_labels or [f"pair {i + 1}" for i in range(len(rows))]
    return save_labeled_rows(rows, labels, path, title)


def save_manifold(images: np.ndarray, path: str | os.PathLike, title: str, xlabel: str, ylabel: str,
                  extent: tuple[float, float, float, float]) -> str:
    """A [G, G, H, W, C] grid of decoded latents: images[i, j] decodes the latent at
    x = the j-th of G values across `extent[0:2]` and y = the i-th of G values down
    `extent[3]..extent[2]` (row 0 is the top, the largest y)."""
    g1, g2 = images.shape[:2]
    canvas = tile(images.reshape(g1 * g2, *images.shape[2:]), ncols=g2, pad=0)
    fig, ax = plt.subplots(figsize=(7.0, 7.4))
    show(ax, canvas, extent=extent)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(fig, path)


def save_latent_scatter(codes: np.ndarray, labels: np.ndarray | None, path: str | os.PathLike, title: str,
                        xlabel: str = "z[0]", ylabel: str = "z[1]") -> str:
    """Scatter of 2-D codes [N, 2], coloured by integer label (tab10) with a legend."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    if labels is None:
        ax.scatter(codes[:, 0], codes[:, 1], s=6, alpha=0.7)
    else:
        cmap = plt.get_cmap("tab10")
        for k in np.unique(labels):
            sel = labels == k
            ax.scatter(codes[sel, 0], codes[sel, 1], s=7, alpha=0.75, color=cmap(int(k) % 10), label=str(k))
        ax.legend(title="label", markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(fig, path)


def save_training_curves(history: dict[str, list[float]], path: str | os.PathLike, title: str) -> str:
    """Per-epoch -ELBO, reconstruction and KL (training and validation) and the loss
    actually minimized, in nats per image, from a run's `history.json` history."""
    epochs = np.asarray(history.get("epoch", range(len(history.get("loss", [])))), np.float64) + 1
    panels = [
        ("-ELBO (nats)", "elbo", -1.0),
        ("loss minimized (nats)", "loss", 1.0),
        ("reconstruction E_q[-log p(x|z)] (nats)", "reconstruction", 1.0),
        ("KL(q(z|x) || p(z)) (nats)", "kl", 1.0),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4))
    for ax, (name, key, sign) in zip(axes, panels):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(epochs[: len(values)], sign * np.asarray(values, np.float64), style, marker="o", ms=3,
                        label="validation" if prefix else "training")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def save_ood_histogram(scores: dict[str, np.ndarray], path: str | os.PathLike, title: str,
                       aurocs: dict[str, float] | None = None) -> str:
    """Histograms of -log p(x) (nats, log-scaled axis) per source, so that digits
    (~100 nats) and noise (~thousands) share one plot."""
    aurocs = aurocs or {}
    nll = {name: -np.asarray(v, np.float64) for name, v in scores.items()}
    low = max(1e-3, min(float(v.min()) for v in nll.values()))
    high = max(float(v.max()) for v in nll.values())
    bins = np.geomspace(low * 0.9, high * 1.1, 80)
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    colors = plt.get_cmap("tab10")
    for i, (name, values) in enumerate(nll.items()):
        label = f"{name.replace('_', ' ')}: mean -log p(x) {values.mean():.0f} nats"
        if name in aurocs:
            label += f", AUROC {aurocs[name]:.3f}"
        ax.hist(values, bins=bins, alpha=0.55, color=colors(i), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("-log p(x), nats per image (log scale; lower = more probable)")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
