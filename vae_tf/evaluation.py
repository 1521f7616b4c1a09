"""Likelihood evaluation: negative ELBO and IWAE negative log-likelihood over a set of
images, in nats per image (and in bits per dimension where the likelihood is a
probability of discrete pixel values), with standard errors over images; and the
out-of-distribution report (log p(x) of test digits against uniform noise, inverted
digits and other datasets, with the AUROC of log p(x) as a detector)."""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from vae_tf.config import RunConfig, UsageError
from vae_tf.data import DataError, ImageOptions, Splits, eval_images, load_splits
from vae_tf.losses import bits_per_dim
from vae_tf.model import VAE
from vae_tf.progress import Progress


def eval_split(
    run_config: RunConfig, spec: str | None = None, split: str = "test"
) -> tuple[np.ndarray, np.ndarray, Splits]:
    """Images and labels of one split of `spec` (default: the run's training data),
    carved with the run's held-out settings and preprocessed for evaluation (static
    binarization for binarized runs).

    Returns:
        (images [N, H, W, C] in [0, 1], labels [N], the Splits they came from). Where
        the source has no test split, "test" is its held-out test slice
        (`splits.has_test_split` is False).
    """
    t = run_config.train
    splits = load_splits(
        spec or t.data, validation_fraction=t.validation_fraction, test_fraction=t.test_fraction,
        split_seed=t.split_seed, data_dir=t.data_dir, manual_dir=t.manual_dir, image_options=ImageOptions.of(t),
    )
    # Read once as stored (uint8 for 8-bit sources), then preprocessed into float32.
    part = splits.split(split).cached()
    images, labels = part.array, part.labels
    if len(images) == 0:
        fraction = {"validation": "validation_fraction", "test": "test_fraction"}.get(split, "")
        raise DataError(
            f"{spec or t.data} has no {split} images with this run's {fraction}={getattr(t, fraction, None)}; "
            f"evaluate another --split."
        )
    return eval_images(images, t.preprocessing), labels, splits


def _mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    stderr = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(np.mean(values)), stderr


# Likelihoods that give probabilities to discrete pixel values, and the values.
_DISCRETE_LIKELIHOODS = {"bernoulli": "binary pixels (0 or 1)", "logistic_mixture": "8-bit pixels k/255"}


def bits_per_dim_undefined(likelihood: str, images: np.ndarray) -> str | None:
    """None when bits per dimension are defined for `likelihood` on `images`, else why not.

    Bits/dim, nats / (H W C ln 2), is the code length of a discrete image per pixel
    value. It is defined for a likelihood that gives probabilities to discrete values,
    on images made of those values: "bernoulli" on binary pixels, "logistic_mixture"
    on 8-bit pixels k/255. "gaussian" and "continuous_bernoulli" are densities on
    [0, 1]: their log p(x) depends on the units and is not a code length (a discrete
    model's bits/dim compares with theirs only after dequantization, which is not
    done here); "bernoulli" on grey levels is a cross-entropy, not a probability.
    """
    if likelihood not in _DISCRETE_LIKELIHOODS:
        return (f"{likelihood} is a density on [0, 1], not a probability of discrete pixel values: its log p(x) "
                "is not a code length, so bits/dim is not defined")
    x = np.asarray(images, np.float32)
    if likelihood == "bernoulli":
        on_grid = np.all((x == 0) | (x == 1))
    else:
        on_grid = np.all(np.abs(x * 255 - np.round(x * 255)) < 1e-3)
    if not on_grid:
        return (f"the images are not {_DISCRETE_LIKELIHOODS[likelihood]}, the values {likelihood} gives "
                "probabilities to, so bits/dim is not defined")
    return None


def per_image_scores(
    model: VAE,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    num_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """ELBO and IWAE log p(x) per image.

    Args:
        images: [N, H, W, C] float32 in [0, 1] (binarized for a Bernoulli model).
        labels: [N] ints, required by a conditional model.
        num_samples: k of the IWAE estimate.
        batch_size: images per call; each call decodes at most 8,192 latents at once.
        progress: show progress on stderr (`vae_tf.progress.Progress`: a bar in a
            terminal, a few plain lines in a long run otherwise).

    Returns:
        {"elbo": [N], "log_prob": [N]} in nats.
    """
    if len(images) == 0:
        raise UsageError("no images to evaluate.")
    if model.config.conditional and labels is None:
        raise UsageError("a conditional model needs the labels of the images it evaluates.")
    elbos, log_probs = [], []
    bar = Progress(len(images), f"IWAE k={num_samples}") if progress else None
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            y = None if labels is None or not model.config.conditional else labels[start : start + batch_size]
            elbos.append(model.elbo(x, y, num_samples=1, seed=seed).numpy())
            log_probs.append(model.log_prob(x, y, num_samples=num_samples, seed=seed).numpy())
            if bar is not None:
                bar.add(len(x))
    finally:
        if bar is not None:
            bar.close()
    return {"elbo": np.concatenate(elbos), "log_prob": np.concatenate(log_probs)}


def evaluate_likelihood(
    model: VAE,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    num_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Test negative ELBO and IWAE NLL in nats per image, each with its standard error,
    and both in bits per dimension where those are defined (`bits_per_dim_undefined`).

    Returns a dict with `neg_elbo`, `neg_elbo_stderr`, `iwae_nll`, `iwae_nll_stderr`
    (nats per image), `neg_elbo_bits_per_dim`, `neg_elbo_bits_per_dim_stderr`,
    `iwae_bits_per_dim`, `iwae_bits_per_dim_stderr` (nats / (H W C ln 2); None where
    not defined), `bits_per_dim_defined`, `bits_per_dim_note` (the formula used, or why
    bits/dim is not defined), `num_images`, `iwae_samples` and `seconds`.
    """
    start = time.perf_counter()
    scores = per_image_scores(
        model, images, labels, num_samples=num_samples, batch_size=batch_size, seed=seed, progress=progress
    )
    neg_elbo, neg_elbo_se = _mean_and_stderr(-scores["elbo"])
    nll, nll_se = _mean_and_stderr(-scores["log_prob"])
    dims = int(np.prod(images.shape[1:]))
    undefined = bits_per_dim_undefined(model.config.likelihood, images)
    bits = (lambda nats: None) if undefined else (lambda nats: bits_per_dim(nats, dims))  # noqa: E731
    return {
        "neg_elbo": neg_elbo,
        "neg_elbo_stderr": neg_elbo_se,
        "iwae_nll": nll,
        "iwae_nll_stderr": nll_se,
        "neg_elbo_bits_per_dim": bits(neg_elbo),
        "neg_elbo_bits_per_dim_stderr": bits(neg_elbo_se),
        "iwae_bits_per_dim": bits(nll),
        "iwae_bits_per_dim_stderr": bits(nll_se),
        "bits_per_dim_defined": undefined is None,
        "bits_per_dim_note": undefined or f"bits/dim = nats / ({' x '.join(map(str, images.shape[1:]))} ln 2)",
        "num_images": int(len(images)),
        "iwae_samples": int(num_samples),
        "seconds": time.perf_counter() - start,
    }


# === Out-of-distribution report ===

OOD_SOURCES = ("uniform_noise", "inverted")


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of a score that should rank `positive` above `negative`.

    Computed from ranks (the Mann-Whitney U statistic), with ties counted as half:
    AUROC = P(s_pos > s_neg) + P(s_pos = s_neg) / 2. 1 is a perfect detector, 0.5 chance.
    """
    positive = np.asarray(positive, np.float64).ravel()
    negative = np.asarray(negative, np.float64).ravel()
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError(f"AUROC needs scores of both classes, got {len(positive)} positive and {len(negative)} negative.")
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    # Average 1-based ranks over runs of tied scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    n_pos, n_neg = len(positive), len(negative)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def ood_images(model: VAE, images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Out-of-distribution inputs in the model's data domain, one per image of `images`.

    - `uniform_noise`: independent uniform pixels; for a Bernoulli likelihood (binary
      digits) Bernoulli(0.5) pixels, else uniform grey levels in [0, 1].
    - `inverted`: 1 - x (white digits on black for binary digits stay binary).
    """
    images = np.asarray(images, np.float32)
    rng = np.random.default_rng(seed)
    if model.config.likelihood == "bernoulli":
        noise = (rng.random(images.shape) < 0.5).astype(np.float32)
    else:
        noise = rng.random(images.shape, dtype=np.float32)
    return {"uniform_noise": noise, "inverted": 1.0 - images}


def marginal_log_prob(
    model: VAE,
    images: np.ndarray,
    *,
    num_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """IWAE log p(x) [N] in nats, without labels.

    For a conditional model the label is marginalized with a uniform p(y):
    log p(x) = logsumexp_y log p(x|y) - log K (K times the work of one label).
    """
    images = np.asarray(images, np.float32)
    if len(images) == 0:
        raise UsageError("no images to evaluate.")
    expected = tuple(model.config.image_shape)
    if tuple(images.shape[1:]) != expected:
        raise UsageError(f"images of shape {list(images.shape)} do not match the model's image shape {list(expected)}.")
    if not model.config.conditional:
        return per_image_scores(
            model, images, num_samples=num_samples, batch_size=batch_size, seed=seed, progress=progress
        )["log_prob"]
    k = model.config.num_classes
    bar = Progress(len(images) * k, f"IWAE k={num_samples}, every label", unit="image x label") if progress else None
    per_label = np.empty((k, len(images)), np.float64)
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            for y in range(k):
                labels = np.full([len(x)], y, np.int32)
                per_label[y, start : start + len(x)] = model.log_prob(
                    x, labels, num_samples=num_samples, seed=seed).numpy()
                if bar is not None:
                    bar.add(len(x))
    finally:
        if bar is not None:
            bar.close()
    top = per_label.max(axis=0)
    return top + np.log(np.exp(per_label - top).sum(axis=0)) - math.log(k)


def ood_scores(
    model: VAE,
    images: np.ndarray,
    *,
    other: dict[str, np.ndarray] | None = None,
    num_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per-image log p(x) [N] of the in-distribution images and of each OOD source.

    Returns {"in_distribution": [N], "uniform_noise": [N], "inverted": [N], **{name: [M]}};
    every entry is a `marginal_log_prob` (labels marginalized for conditional models).
    """
    sources = {"in_distribution": np.asarray(images, np.float32), **ood_images(model, images, seed=seed)}
    for name, other_images in (other or {}).items():
        if name in sources:
            raise UsageError(f"other dataset name {name!r} clashes with a built-in source; choose another name.")
        sources[name] = np.asarray(other_images, np.float32)
    scores = {}
    for name, x in sources.items():
        if progress:
            print(f"log p(x) of {name} ({len(x)} images, IWAE k={num_samples})", file=sys.stderr)
        scores[name] = marginal_log_prob(
            model, x, num_samples=num_samples, batch_size=batch_size, seed=seed, progress=progress
        )
    return scores


def summarize_ood(scores: dict[str, np.ndarray]) -> dict:
    """The JSON summary of `ood_scores`: mean log p(x) (with its standard error) per
    source and the AUROC of log p(x) as a detector (in-distribution positive)."""
    inside = scores["in_distribution"]
    mean, stderr = _mean_and_stderr(inside)
    result = {
        "in_distribution": {"mean_log_prob": mean, "log_prob_stderr": stderr, "num_images": int(len(inside))},
        "sources": {},
    }
    for name, values in scores.items():
        if name == "in_distribution":
            continue
        mean, stderr = _mean_and_stderr(values)
        result["sources"][name] = {
            "mean_log_prob": mean,
            "log_prob_stderr": stderr,
            "auroc": auroc(inside, values),
            "num_images": int(len(values)),
        }
    return result


def ood_report(
    model: VAE,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    other: dict[str, np.ndarray] | None = None,
    num_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Out-of-distribution report: how well log p(x) tells test digits from
    uniform noise, inverted digits and (optionally) other datasets.

    Args:
        images: in-distribution test images [N, H, W, C], preprocessed as evaluation
            sees them (binarized for a Bernoulli model).
        labels: accepted for symmetry with `evaluate_likelihood`, unused: log p(x) is
            computed without labels (marginalized for a conditional model) so that
            every source is scored the same way.
        other: {name: images} of further OOD datasets, in the same pixel domain.
        num_samples: k of the IWAE estimate of log p(x).

    Returns:
        A dict: "in_distribution" ({"mean_log_prob", "log_prob_stderr", "num_images"}),
        "sources" ({name: {"mean_log_prob", "log_prob_stderr", "auroc", "num_images"}}),
        "iwae_samples" (k) and "labels_marginalized" (bool); log-probabilities in nats
        per image; AUROC of log p(x) with the in-distribution images as positives.
    """
    del labels
    scores = ood_scores(
        model, images, other=other, num_samples=num_samples, batch_size=batch_size, seed=seed, progress=progress
    )
    result = summarize_ood(scores)
    result.update(iwae_samples=int(num_samples), labels_marginalized=bool(model.config.conditional))
    return result
