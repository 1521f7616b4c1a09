"""Likelihood evaluation: negative ELBO and IWAE negative log-likelihood over a set of
images, in nats per image, with standard errors over images."""

from __future__ import annotations

import math
import time

import numpy as np
import tf_keras as keras

from vae_tf.losses import bits_per_dim
from vae_tf.model import VAE


def _mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    stderr = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(np.mean(values)), stderr


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

    Returns:
        {"elbo": [N], "log_prob": [N]} in nats.
    """
    if len(images) == 0:
        raise ValueError("no images to evaluate.")
    if model.config.conditional and labels is None:
        raise ValueError("a conditional model needs the labels of the images it evaluates.")
    elbos, log_probs = [], []
    bar = keras.utils.Progbar(len(images), unit_name="image") if progress else None
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        y = None if labels is None or not model.config.conditional else labels[start : start + batch_size]
        elbos.append(model.elbo(x, y, num_samples=1, seed=seed).numpy())
        log_probs.append(model.log_prob(x, y, num_samples=num_samples, seed=seed).numpy())
        if bar is not None:
            bar.add(len(x))
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
    """Test negative ELBO and IWAE NLL in nats per image, each with its standard error.

    Returns a dict with `neg_elbo`, `neg_elbo_stderr`, `iwae_nll`, `iwae_nll_stderr`,
    `iwae_bits_per_dim`, `num_images`, `iwae_samples` and `seconds`.
    """
    start = time.perf_counter()
    scores = per_image_scores(
        model, images, labels, num_samples=num_samples, batch_size=batch_size, seed=seed, progress=progress
    )
    neg_elbo, neg_elbo_se = _mean_and_stderr(-scores["elbo"])
    nll, nll_se = _mean_and_stderr(-scores["log_prob"])
    return {
        "neg_elbo": neg_elbo,
        "neg_elbo_stderr": neg_elbo_se,
        "iwae_nll": nll,
        "iwae_nll_stderr": nll_se,
        "iwae_bits_per_dim": bits_per_dim(nll, int(np.prod(images.shape[1:]))),
        "num_images": int(len(images)),
        "iwae_samples": int(num_samples),
        "seconds": time.perf_counter() - start,
    }
