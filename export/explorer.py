"""`explorer.json`: what the in-browser explorer (`vae-tf explore`, the page in `web/`)
needs beside the decoder files, computed at export time from the model and held-out
images of its run's data.

- `pca`: the principal directions of the encoder's codes (posterior means,
  `VAE.encode_mean`) of the held-out images, their mean, the codes' standard deviation
  along each direction and the span the page's pad and sliders cover: the 0.5th to
  99.5th percentile of the projected codes, widened by 10% on each side, so the pad
  covers the data and little else.
- `points`: the held-out codes projected on the first two directions, with their labels
  (the dots drawn on the pad).
- `examples`: a few held-out codes per class, with labels (interpolation end points).
- `prior`: the model's own prior p(z) (p(z|y) for a class-conditional mixture), as the
  page samples it: N(0, I), or a mixture of Gaussians given by its log weights,
  locations and either per-dimension scales (`scale_diag`) or lower-triangular scale
  matrices (`scale_tril`, the VampPrior of a full-covariance posterior).

Written by `export_run` (and, for an export made before this file existed, by
`write_explorer(run_dir, export_dir)`, which first checks that the run's model is the
one the export holds).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from vae_tf.export.validate import ExportError

EXPLORER = "explorer.json"
EXPLORER_FORMAT = 1
NUM_DIRECTIONS = 8  # two for the pad, the rest for sliders
NUM_POINTS = 500
EXAMPLES_PER_CLASS = 2
PERCENTILES = (0.5, 99.5)
MARGIN = 0.1
ENCODE_BATCH = 500


def _floats(array, digits: int = 9):
    """Nested lists of floats with `digits` significant digits (9 round-trips float32)."""
    array = np.asarray(array, np.float64)
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(array).tolist() if array.size else array.tolist()


def heldout_images(run_config) -> tuple[np.ndarray, np.ndarray, str]:
    """Held-out images of the run's data as evaluation sees them, their labels and the
    split's name: the validation split, or the test slice where there is none (a picture
    chooses nothing, so either is fair)."""
    from vae_tf.config import UserError
    from vae_tf.evaluation import eval_split

    errors = []
    for split in ("validation", "test"):
        try:
            images, labels, _ = eval_split(run_config, None, split)
            return images, labels, split
        except UserError as err:  # no images in this split: try the other
            errors.append(str(err))
    raise ExportError(f"{EXPLORER}: no held-out images of {run_config.train.data} to encode: {' '.join(errors)}")


def prior_parameters(model) -> dict:
    """The model's prior p(z) as plain data: {"type": "normal"} for N(0, I), else a
    mixture of Gaussians {"type": "mixture", "per_class", "log_weights" [(C,) K],
    "loc" [(C,) K, D], and "scale_diag" [(C,) K, D] or "scale_tril" [(C,) K, D, D]}
    (with the leading class axis C when the mixture is per class)."""
    import tensorflow as tf

    c = model.config
    if c.prior == "normal":
        return {"type": "normal"}
    per_class = bool(getattr(model, "mixture_prior", None) is not None and model.mixture_prior.num_classes)
    prior = model.prior(tf.range(c.num_classes)) if per_class else model.prior()
    components = prior.components_distribution
    log_weights = tf.nn.log_softmax(prior.mixture_distribution.logits_parameter()).numpy()
    loc = components.mean().numpy()
    params = {"type": "mixture", "per_class": per_class, "log_weights": _floats(log_weights), "loc": _floats(loc)}
    try:
        covariance = components.covariance().numpy().astype(np.float64)
    except NotImplementedError:  # tfd.Independent(tfd.Normal) (the VampPrior of a diagonal posterior)
        params["scale_diag"] = _floats(components.stddev().numpy())
        return params
    if np.all(covariance * (1 - np.eye(c.latent_dim)) == 0):
        params["scale_diag"] = _floats(np.sqrt(np.diagonal(covariance, axis1=-2, axis2=-1)))
    else:
        params["scale_tril"] = _floats(np.linalg.cholesky(covariance))
    return params


def explorer_metadata(model, images: np.ndarray, labels: np.ndarray, source: dict | None = None) -> dict:
    """The contents of `explorer.json` for `model`, from held-out `images` [N, H, W, C]
    (as evaluation sees them) and their int `labels` [N]."""
    c = model.config
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64)
    if len(images) < 2:
        raise ExportError(f"{EXPLORER}: needs at least 2 held-out images to find principal directions, got {len(images)}.")
    label_ids = labels.astype(np.int32) if c.conditional else None
    codes = np.concatenate([
        model.encode_mean(images[i:i + ENCODE_BATCH], None if label_ids is None else label_ids[i:i + ENCODE_BATCH]).numpy()
        for i in range(0, len(images), ENCODE_BATCH)
    ]).astype(np.float64)
    mean = codes.mean(axis=0)
    centered = codes - mean
    _, singular, vt = np.linalg.svd(centered, full_matrices=False)
    k = min(NUM_DIRECTIONS, c.latent_dim, len(vt))
    directions = vt[:k]
    # A deterministic sign: each direction's largest component is positive.
    signs = np.sign(directions[np.arange(k), np.argmax(np.abs(directions), axis=1)])
    directions = directions * signs[:, None]
    projected = centered @ directions.T  # [N, k]
    variance = singular**2 / (len(codes) - 1)
    lo, hi = np.percentile(projected, PERCENTILES, axis=0)
    span = hi - lo
    ranges = np.stack([lo - MARGIN * span, hi + MARGIN * span], axis=1)

    examples = []
    for label in np.unique(labels):
        for index in np.flatnonzero(labels == label)[:EXAMPLES_PER_CLASS]:
            examples.append({"label": int(label), "index": int(index), "z": _floats(codes[index].astype(np.float32))})

    return {
        "format_version": EXPLORER_FORMAT,
        "latent_dim": c.latent_dim,
        "image_shape": list(c.image_shape),
        "conditional": c.conditional,
        "num_classes": c.num_classes,
        "source": {
            **(source or {}),
            "num_images": len(images),
            "codes": "posterior means (VAE.encode_mean) of held-out images, as evaluation sees them",
        },
        "pca": {
            "mean": _floats(mean.astype(np.float32)),
            "directions": _floats(directions.astype(np.float32)),
            "stddev": _floats(np.sqrt(variance[:k])),
            "explained_variance_ratio": _floats(variance[:k] / variance.sum()),
            "range": _floats(ranges),
            "range_rule": f"percentiles {PERCENTILES[0]} to {PERCENTILES[1]} of the projected codes, "
                          f"widened by {MARGIN:g} of that span on each side",
        },
        "points": {
            "coords": np.round(projected[:NUM_POINTS, :2], 4).tolist(),
            "labels": labels[:NUM_POINTS].tolist(),
        },
        "examples": examples,
        "prior": prior_parameters(model),
    }


def run_explorer_metadata(model, run_config) -> dict:
    """`explorer_metadata` on the held-out images of the run's own data."""
    images, labels, split = heldout_images(run_config)
    return explorer_metadata(model, images, labels, source={"data": run_config.train.data, "split": split})


def write_json(metadata: dict, path: str) -> dict:
    """Writes `metadata` to `path`; returns the manifest's entry for it."""
    text = json.dumps(metadata, separators=(",", ":"), sort_keys=True) + "\n"
    with open(path, "w") as f:
        f.write(text)
    data = text.encode()
    return {
        "path": os.path.basename(path),
        "format": f"vae-tf explorer metadata v{EXPLORER_FORMAT}",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "contents": "PCA of held-out codes (pad and sliders), projected points, example codes, prior parameters; "
                    "read by the in-browser explorer (vae-tf explore)",
    }


def write_explorer(run_dir: str, export_dir: str) -> dict:
    """Adds `explorer.json` to an existing export of `run_dir` (an export made before the
    explorer existed) and records it in its manifest; returns the manifest entry.

    The run's model must reproduce the export's golden images (within the SavedModel's
    tolerance), so the metadata describes the exported weights. Nothing else in the
    export changes.
    """
    from vae_tf.config import RunConfig
    from vae_tf.export.runtime import MANIFEST
    from vae_tf.training import load

    manifest_path = os.path.join(export_dir, MANIFEST)
    if not os.path.exists(manifest_path):
        raise ExportError(f"{export_dir} is not an exported model: {MANIFEST} is missing.")
    with open(manifest_path) as f:
        manifest = json.load(f)
    model = load(run_dir)
    c = model.config
    if (c.latent_dim, c.conditional, list(c.image_shape)) != (manifest["latent_dim"], manifest["conditional"],
                                                              manifest["image_shape"]):
        raise ExportError(
            f"{run_dir} is not the model exported to {export_dir}: latent {c.latent_dim}, conditional {c.conditional}, "
            f"images {list(c.image_shape)} vs the export's {manifest['latent_dim']}, {manifest['conditional']}, "
            f"{manifest['image_shape']}."
        )
    golden = manifest["golden"]
    label = None if golden["label"] is None else np.asarray(golden["label"], np.int32)
    image = model.decode(np.asarray(golden["z"], np.float32), label).mean().numpy()
    diff = float(np.max(np.abs(image - np.asarray(golden["image"], np.float32))))
    tolerance = manifest["tolerances"]["saved_model"]
    if not diff <= tolerance:
        raise ExportError(
            f"{run_dir} is not the model exported to {export_dir}: its decoder differs from the export's golden "
            f"images by {diff:.3g} (tolerance {tolerance:g})."
        )
    metadata = run_explorer_metadata(model, RunConfig.load(os.path.join(run_dir, "config.json")))
    tmp = os.path.join(export_dir, f".{EXPLORER}.tmp")
    entry = write_json(metadata, tmp)
    entry["path"] = EXPLORER
    manifest["explorer"] = entry
    manifest_tmp = os.path.join(export_dir, f".{MANIFEST}.tmp")
    with open(manifest_tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(export_dir, EXPLORER))
    os.replace(manifest_tmp, manifest_path)
    return entry
