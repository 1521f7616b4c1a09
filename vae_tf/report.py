"""`vae-tf report RUN_DIR`: every picture of a trained run, and an `index.html` that
shows them with captions and numbers.

Writes into the run directory:

    index.html                  the page (open it in a browser)
    report/samples.png          prior samples (one row per digit for a conditional model)
    report/reconstructions.png  held-out digits beside their reconstructions
    report/interpolation.png    decoded straight lines between two encoded digits
    report/manifold.png         decoded 2-D latent grid (latent size 2), or a 2-D slice
                                through the first two principal directions of the codes
    report/latent_scatter.png   held-out encodings coloured by label (PCA for latent > 2)
    report/training_curves.png  per-epoch -ELBO, loss, reconstruction and KL
    report/ood_histogram.png    -log p(x) of held-out digits, uniform noise and inverted digits
    report/report.json          the numbers shown on the page

The report/ files are written into a staging directory that replaces report/ at the
end, then index.html: an error or Ctrl-C on the way leaves the previous report (or
none) and no partial one.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import sys
import time

import numpy as np

from vae_tf import fileio, interrupts, plots
from vae_tf.config import RunConfig, UsageError, write_text_atomic
from vae_tf.evaluation import auroc, eval_split, marginal_log_prob, ood_images, per_image_scores
from vae_tf.training import load_run

REPORT_DIR = "report"
PICTURES = (
    "samples.png",
    "reconstructions.png",
    "interpolation.png",
    "manifold.png",
    "latent_scatter.png",
    "training_curves.png",
    "ood_histogram.png",
)


def _pca(codes: np.ndarray, k: int = 2):
    """Mean [D], principal directions [k, D], their standard deviations [k] and the
    explained-variance ratios [k] of codes [N, D] (numpy SVD)."""
    mean = codes.mean(axis=0)
    _, s, vt = np.linalg.svd(codes - mean, full_matrices=False)
    variance = s**2 / max(len(codes) - 1, 1)
    return mean, vt[:k], np.sqrt(variance[:k]), variance[:k] / variance.sum()


def _interpolation_pairs(labels: np.ndarray, conditional: bool, num_pairs: int) -> list[tuple[int, int]]:
    """Indices of image pairs: different digits, or the same digit for a conditional
    model (its label is fixed along the path; the latent carries the style)."""
    pairs = []
    for i in range(num_pairs):
        a = int(np.flatnonzero(labels == (2 * i) % 10)[0]) if np.any(labels == (2 * i) % 10) else i
        if conditional:
            same = np.flatnonzero(labels == labels[a])
            b = int(same[1]) if len(same) > 1 else a
        else:
            wanted = (2 * i + 1) % 10
            others = np.flatnonzero(labels == wanted)
            b = int(others[0]) if len(others) else (a + 1) % len(labels)
        pairs.append((a, b))
    return pairs


def _staging_dir(run_dir: str) -> str:
    """Where `write_report` writes the report/ files before it moves them into place."""
    return os.path.join(run_dir, f".{REPORT_DIR}.tmp-{os.getpid()}")


def _removes_staging_on_failure(write):
    """An error or Ctrl-C in `write_report` removes its staging directory: a report is
    replaced whole or not at all."""

    @functools.wraps(write)
    def wrapper(run_dir, *args, **kwargs):
        try:
            return write(run_dir, *args, **kwargs)
        except BaseException:
            fileio.rmtree(_staging_dir(run_dir))
            raise

    return wrapper


@_removes_staging_on_failure
def write_report(
    run_dir: str,
    data: str | None = None,
    num_samples: int = 200,
    *,
    max_images: int = 500,
    seed: int = 0,
    progress: bool = True,
) -> str:
    """Writes the pictures of a run and its `index.html`; returns the index path.

    Args:
        run_dir: a run directory written by `vae_tf.train`.
        data: dataset spec for the held-out images (default: the run's training data).
            Its test split is used, or its held-out slice where it has none.
        num_samples: k of the IWAE log p(x) behind the OOD histogram and the NLL.
        max_images: held-out images used for the scatter, the NLL and the OOD
            histogram (and as many noise and inverted images).
        seed: seed of the noise images and of the latent samples.
        progress: print progress of the log p(x) computation to stderr.
    """
    start = time.perf_counter()
    model, run_config = load_run(run_dir)
    cfg, t = model.config, run_config.train
    images, labels, splits = eval_split(run_config, data, "test")
    images = images[:max_images]
    labels = labels[:max_images] if labels is not None else None
    split_name = "test split" if splits.has_test_split else f"held-out test slice (test_fraction {t.test_fraction})"
    if cfg.conditional and labels is None:
        raise UsageError(f"a conditional model needs labelled data, but {data or t.data} has no labels.")
    y = labels if cfg.conditional else None
    out = _staging_dir(run_dir)  # moved to run_dir/report at the end
    fileio.rmtree(out)
    fileio.makedirs(out)
    path = lambda name: os.path.join(out, name)  # noqa: E731
    captions: dict[str, str] = {}
    numbers: dict = {"data": data or t.data, "split": split_name, "num_images": int(len(images))}

    # Prior samples.
    plots.save_prior_samples(model, path("samples.png"), seed=seed)
    if cfg.conditional:
        captions["samples.png"] = (
            "Images drawn from the model (z from the prior, the mean of p(x|z) shown), ten per requested "
            + ("class: each row was generated with the label of the class it names." if cfg.class_names
               else "digit: row i was generated with label i.")
        )
    else:
        captions["samples.png"] = "64 images drawn from the model: z from the prior p(z), the mean of p(x|z) shown."

    # Reconstructions.
    n = min(32, len(images))
    recon = model.reconstruct(images[:n], None if y is None else y[:n]).numpy()
    plots.save_reconstructions(images[:n], recon, path("reconstructions.png"),
                               f"{n} held-out digits (input) and their reconstructions")
    captions["reconstructions.png"] = (
        f"Held-out digits ({split_name}, as the model sees them) above the mean of p(x|z) at the posterior's "
        "deterministic code."
    )

    # Codes of the held-out images.
    codes = model.encode_mean(images, y).numpy()

    # Interpolation.
    steps = 10
    pairs = _interpolation_pairs(labels if labels is not None else np.zeros(len(images), int), cfg.conditional, 5)
    rows, row_labels = [], []
    alphas = np.linspace(0.0, 1.0, steps)[:, None]
    for a, b in pairs:
        z = (1 - alphas) * codes[a] + alphas * codes[b]
        label = None if y is None else np.full([steps], y[a])
        decoded = model.decode(z.astype(np.float32), label).mean().numpy()
        rows.append(np.concatenate([images[a : a + 1], decoded, images[b : b + 1]]))
        row_labels.append(f"{labels[a]} → {labels[b]}" if labels is not None else f"pair {len(rows)}")
    plots.save_interpolations(np.stack(rows), path("interpolation.png"),
                              "interpolation between two encoded digits (inputs at both ends)", row_labels)
    captions["interpolation.png"] = (
        f"Each row: a held-out digit (left), the decoded images at {steps} evenly spaced points on the straight "
        "line between the two digits' codes, and the second digit (right)."
        + (" The model is conditional: both ends share a digit and the label is held fixed, so the path "
           "changes style, not class." if cfg.conditional else "")
    )

    # Latent manifold.
    g = 20
    manifold_label = None
    if cfg.conditional:
        manifold_label = int(labels[0])
    if cfg.latent_dim == 2:
        lo, hi = np.percentile(codes, 1, axis=0), np.percentile(codes, 99, axis=0)
        xs, ys = np.linspace(lo[0], hi[0], g), np.linspace(hi[1], lo[1], g)
        z = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
        xlabel, ylabel = "z[0]", "z[1]"
        extent = (lo[0], hi[0], lo[1], hi[1])
        title = "2-D latent manifold: decoded grid over the codes' 1st-99th percentiles"
        captions["manifold.png"] = (
            f"The decoder's output on a {g}x{g} grid of the 2-D latent space, spanning the 1st to 99th "
            "percentile of the held-out codes along each axis (axes in latent units)."
        )
    else:
        mean, directions, sds, ratio = _pca(codes)
        a = np.linspace(-2.0, 2.0, g)
        aa, bb = np.meshgrid(a, a[::-1])
        z = (mean + (aa.reshape(-1, 1) * sds[0]) * directions[0] + (bb.reshape(-1, 1) * sds[1]) * directions[1])
        z = z.astype(np.float32)
        xlabel = f"PC 1 ({100 * ratio[0]:.0f}% of code variance), sd units"
        ylabel = f"PC 2 ({100 * ratio[1]:.0f}% of code variance), sd units"
        extent = (-2.0, 2.0, -2.0, 2.0)
        title = f"2-D slice of the {cfg.latent_dim}-D latent space (first two principal directions)"
        captions["manifold.png"] = (
            f"The latent space has {cfg.latent_dim} dimensions, so this is not the full manifold: the decoder's "
            f"output on a {g}x{g} grid in the plane through the mean of the held-out codes spanned by their first "
            "two principal directions, ±2 standard deviations along each."
        )
    if manifold_label is not None:
        title += f", class {cfg.class_names[manifold_label]!r}" if cfg.class_names else f", digit {manifold_label}"
        captions["manifold.png"] += f" Decoded with label {manifold_label} (conditional model)."
    decoded = model.decode(z, None if manifold_label is None else np.full([len(z)], manifold_label)).mean().numpy()
    plots.save_manifold(decoded.reshape(g, g, *decoded.shape[1:]), path("manifold.png"), title, xlabel, ylabel, extent)

    # Scatter of codes.
    if cfg.latent_dim == 2:
        projected, sx, sy = codes, "z[0]", "z[1]"
        scatter_title = f"held-out codes coloured by label ({len(codes)} digits)"
    else:
        mean, directions, _, ratio = _pca(codes)
        projected = (codes - mean) @ directions.T
        sx, sy = (f"PC {i + 1} ({100 * ratio[i]:.0f}% of variance)" for i in range(2))
        scatter_title = f"held-out codes, PCA of {cfg.latent_dim}-D latents, coloured by label"
    plots.save_latent_scatter(projected, labels, path("latent_scatter.png"), scatter_title, sx, sy)
    captions["latent_scatter.png"] = (
        "The posterior's deterministic code of each held-out digit, coloured by its true label"
        + (" (projected on the codes' first two principal directions)." if cfg.latent_dim > 2 else ".")
        + (" The model is conditional: the label is given to the decoder, so the codes need not separate digits."
           if cfg.conditional else "")
    )

    # Training curves.
    history_path = os.path.join(run_dir, "history.json")
    if fileio.exists(history_path):
        with fileio.open_file(history_path) as f:
            history = json.load(f).get("history", {})
        plots.save_training_curves(history, path("training_curves.png"),
                                   f"training curves ({len(history.get('loss', []))} epochs)")
        captions["training_curves.png"] = (
            "Per-epoch averages in nats per image: -ELBO, the loss actually minimized (differs from -ELBO with "
            "beta, warm-up, free bits or IWAE), the reconstruction term and the KL; dashed: validation."
        )
    else:
        captions["training_curves.png"] = "No history.json in the run directory: no training curves."

    # Likelihoods and the OOD histogram (the slow part).
    if progress:
        print(f"computing log p(x) with IWAE k={num_samples} for {len(images)} held-out digits and as many "
              "noise and inverted images" + (" (labels marginalized: 10x the work)" if cfg.conditional else ""),
              file=sys.stderr)
    scores = per_image_scores(model, images, labels, num_samples=num_samples, seed=seed, progress=progress)
    numbers["neg_elbo"] = float(-scores["elbo"].mean())
    numbers["iwae_nll"] = float(-scores["log_prob"].mean())
    numbers["iwae_nll_stderr"] = float(scores["log_prob"].std(ddof=1) / math.sqrt(len(images)))
    numbers["iwae_samples"] = int(num_samples)
    ood = {
        "in_distribution": scores["log_prob"] if not cfg.conditional else marginal_log_prob(
            model, images, num_samples=num_samples, seed=seed, progress=progress)
    }
    for name, x in ood_images(model, images, seed=seed).items():
        if progress:
            print(f"log p(x) of {name}", file=sys.stderr)
        ood[name] = marginal_log_prob(model, x, num_samples=num_samples, seed=seed, progress=progress)
    aurocs = {name: auroc(ood["in_distribution"], v) for name, v in ood.items() if name != "in_distribution"}
    numbers["ood"] = {
        name: {"mean_log_prob": float(v.mean()), **({"auroc": aurocs[name]} if name in aurocs else {})}
        for name, v in ood.items()
    }
    noise_kind = "Bernoulli(0.5) pixels" if cfg.likelihood == "bernoulli" else "uniform grey levels"
    plots.save_ood_histogram(
        {"held-out digits" if k == "in_distribution" else k: v for k, v in ood.items()},
        path("ood_histogram.png"), f"log-likelihood of held-out digits vs out-of-distribution inputs (k={num_samples})",
        {"uniform_noise": aurocs["uniform_noise"], "inverted": aurocs["inverted"]},
    )
    captions["ood_histogram.png"] = (
        f"-log p(x) (IWAE, k={num_samples}) of {len(images)} held-out digits, as many images of uniform noise "
        f"({noise_kind}) and the same digits inverted (1 - x). AUROC: how often log p(x) ranks a held-out digit "
        "above an out-of-distribution image (1 = perfect detector, 0.5 = chance)."
        + (" The conditional model's log p(x) marginalizes the label uniformly." if cfg.conditional else "")
    )
    numbers["seconds"] = time.perf_counter() - start
    write_text_atomic(path("report.json"), json.dumps(numbers, indent=2) + "\n")
    index = os.path.join(run_dir, "index.html")
    with interrupts.held():  # the new report/ and its index.html, or the old ones
        fileio.replace_directory(out, os.path.join(run_dir, REPORT_DIR))
        write_text_atomic(index, _html(run_dir, run_config, numbers, captions))
    return index


def _html(run_dir: str, run_config: RunConfig, numbers: dict, captions: dict[str, str]) -> str:
    cfg = run_config.model
    esc = html.escape
    options = (
        f"{cfg.architecture} {cfg.likelihood} VAE, latent {cfg.latent_dim}, posterior {cfg.posterior}, "
        f"prior {cfg.prior}" + (", conditional" if cfg.conditional else "")
        + (f", beta {cfg.beta}" if cfg.beta != 1 else "")
        + (f", KL warm-up {cfg.kl_warmup_steps} steps" if cfg.kl_warmup_steps else "")
        + (f", free bits {cfg.free_bits}" if cfg.free_bits else "")
        + (f", IWAE k={cfg.iwae_samples} objective" if cfg.iwae_samples > 1 else "")
    )
    ood_rows = "".join(
        f"<tr><td>{esc(name.replace('_', ' '))}</td><td>{v['mean_log_prob']:.1f}</td>"
        f"<td>{v['auroc']:.3f}</td></tr>" if "auroc" in v else
        f"<tr><td>held-out digits</td><td>{v['mean_log_prob']:.1f}</td><td>-</td></tr>"
        for name, v in numbers["ood"].items()
    )
    figures = []
    for name in PICTURES:
        if fileio.exists(os.path.join(run_dir, REPORT_DIR, name)):
            figures.append(
                f'<figure><img src="{REPORT_DIR}/{name}" alt="{esc(name)}">'
                f"<figcaption><b>{esc(name)}</b>: {esc(captions.get(name, ''))}</figcaption></figure>"
            )
        else:
            figures.append(f"<p><b>{esc(name)}</b>: {esc(captions.get(name, 'not written'))}</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vae-tf report: {esc(os.path.basename(fileio.absolute(run_dir).rstrip("/")))}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ margin-top: .4em; font-size: .95em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .25em .7em; text-align: right; }}
</style></head><body>
<h1>vae-tf report</h1>
<p>Run <code>{esc(fileio.absolute(run_dir))}</code>: {esc(options)}; data <code>{esc(str(numbers['data']))}</code>,
{numbers['num_images']} images of its {esc(numbers['split'])}.</p>
<h2>Likelihood</h2>
<table><tr><th>-ELBO (nats)</th><th>IWAE NLL, k={numbers['iwae_samples']} (nats)</th></tr>
<tr><td>{numbers['neg_elbo']:.2f}</td><td>{numbers['iwae_nll']:.2f} ± {numbers['iwae_nll_stderr']:.2f}</td></tr></table>
<h2>Out-of-distribution detection with log p(x)</h2>
<table><tr><th>source</th><th>mean log p(x) (nats)</th><th>AUROC</th></tr>{ood_rows}</table>
<h2>Pictures</h2>
{''.join(figures)}
<p><small>Written by <code>vae-tf report</code> in {numbers['seconds']:.0f} s.</small></p>
</body></html>
"""
