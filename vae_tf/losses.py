"""Pure pieces of the VAE objectives. Every function works per example: inputs and
outputs are in nats, shaped [B] (or [k, B] for k latent samples per image), and the
caller averages over the (global) batch.
"""

from __future__ import annotations

import math

import tensorflow as tf


def kl_weight(step: tf.Tensor, beta: float, warmup_steps: int) -> tf.Tensor:
    """The KL weight at optimizer step `step`: `beta`, ramped linearly from 0 at step 0
    to `beta` at step `warmup_steps` when warm-up is on (Bowman et al., 2016; Sonderby
    et al., 2016)."""
    if warmup_steps <= 0:
        return tf.constant(beta, tf.float32)
    ramp = tf.minimum(1.0, tf.cast(step, tf.float32) / float(warmup_steps))
    return beta * ramp


def apply_free_bits(kl: tf.Tensor, free_bits: float) -> tf.Tensor:
    """KL charged by the loss: max(kl, free_bits) per image, so the optimizer gains
    nothing from pushing an image's KL below `free_bits` nats (Kingma et al., 2016)."""
    if free_bits <= 0:
        return kl
    return tf.maximum(kl, free_bits)


def free_bits_shortfall(kl: tf.Tensor, free_bits: float) -> tf.Tensor:
    """max(0, free_bits - kl) per image [B]: what free bits add to the IWAE loss.

    Free bits for the importance-weighted objective: -IWAE_k + max(0, free_bits - KL),
    with KL = (1/k) sum_i [log q(z_i|x) - log p(z_i)] over the bound's own k samples.
    At k = 1 this is exactly the ELBO's reconstruction + max(KL, free_bits) (with that
    one-sample KL); for any k the loss is raised by the shortfall of an image whose KL
    is below the floor, and the gradient that would push its KL lower is cancelled
    to first order (-IWAE_k contains about +KL), as with the ELBO.
    """
    return tf.maximum(free_bits - kl, 0.0)


def log_mean_exp(log_w: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """log(mean(exp(log_w))) along `axis`, computed stably."""
    k = tf.cast(tf.shape(log_w)[axis], log_w.dtype)
    return tf.reduce_logsumexp(log_w, axis=axis) - tf.math.log(k)


def negative_elbo(log_px_z: tf.Tensor, kl: tf.Tensor, kl_scale: tf.Tensor | float = 1.0) -> tf.Tensor:
    """-ELBO = E_q[-log p(x|z)] + kl_scale * KL(q(z|x) || p(z)).

    Args:
        log_px_z: log p(x|z) [k, B] for k posterior samples per image.
        kl: KL per image [B] (analytic, or a Monte Carlo estimate).
        kl_scale: weight on the KL (beta, warm-up).

    Returns:
        [B] nats per image.
    """
    return -tf.reduce_mean(log_px_z, axis=0) + kl_scale * kl


def iwae_log_weights(log_px_z, log_pz, log_qz, kl_scale=1.0):
    """log w = log p(x|z) + kl_scale * (log p(z) - log q(z|x)), each [k, B].

    With kl_scale = 1 these are the importance weights of the IWAE bound.
    """
    return log_px_z + kl_scale * (log_pz - log_qz)


def iwae_bound(log_w: tf.Tensor) -> tf.Tensor:
    """The importance-weighted bound log (1/k) sum_i w_i [B] from log weights [k, B]
    (Burda et al., 2016); k = 1 gives the ELBO, k -> inf gives log p(x)."""
    return log_mean_exp(log_w, axis=0)


def dreg_weights(log_w: tf.Tensor) -> tf.Tensor:
    """The normalized importance weights w~_i = w_i / sum_j w_j [k, B] of log weights
    [k, B], held constant for the gradient (`tf.stop_gradient`)."""
    return tf.stop_gradient(tf.nn.softmax(log_w, axis=0))


def dreg_surrogate(log_w: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """-sum_i w~_i log w_i [B]: a surrogate whose gradient with respect to the
    generative parameters (decoder, prior) is that of -IWAE_k, sum_i w~_i grad log w_i
    (Burda et al., 2016). Its value is not the bound; report `iwae_bound` beside it."""
    return -tf.reduce_sum(weights * log_w, axis=0)


def dreg_path_scale(weights: tf.Tensor, kl_scale: tf.Tensor | float = 1.0) -> tf.Tensor:
    """What the doubly reparameterized gradient (DReG, Tucker et al., 2019) multiplies
    the surrogate's gradient at each latent sample z_i by before it reaches the
    encoder, [k, B]: w~_i at kl_scale = 1, so that the encoder's gradient is
    -sum_i w~_i^2 d log w_i / dz_i dz_i/dphi, with log q's parameters held constant.

    For log w = log p(x|z) + s (log p(z) - log q(z|x)) (a KL weight s, as in warm-up)
    the score-function term rewrites to (1 - s) w~_i + s w~_i^2 instead.
    """
    return (1.0 - kl_scale) + kl_scale * weights


def bits_per_dim(nats_per_image: float, num_pixels: int) -> float:
    """Converts nats per image to bits per pixel."""
    return nats_per_image / (num_pixels * math.log(2.0))
