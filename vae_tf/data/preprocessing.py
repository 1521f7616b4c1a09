"""Pixel preprocessing: 8-bit to [0, 1], and the three `PREPROCESSING` modes.

- `dynamic`: every time an image is used, each pixel is redrawn as a
  Bernoulli(p=pixel) 0/1 value (dynamic binarization, a regularizer for Bernoulli
  decoders).
- `static`: pixels are drawn as 0/1 once, with a fixed seed.
- `continuous`: grey levels in [0, 1] as they are (uint8 k becomes k / 255).

A fixed ("static") draw is keyed by the image's position in its split and the pixel's
position in the image, not by the batch it arrives in: the uniform number of pixel p of
image i is a hash of (seed, i, p) (`keyed_uniform`). The same image gets the same 0/1
pixels in a streamed, shuffled or differently batched pipeline, in numpy and in
TensorFlow. Evaluation splits use `EVAL_BINARIZATION_SEED` for every run, the usual
protocol for reporting likelihoods on binarized MNIST.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from vae_tf.data.spec import DataError

PREPROCESSING = ("dynamic", "static", "continuous")
EVAL_BINARIZATION_SEED = 0

# lowbias32 (Chris Wellons' integer hash): two multiply-xorshift rounds, full avalanche.
_M1, _M2 = 0x7FEB352D, 0x846CA68B
_GOLDEN = 0x9E3779B9


def check_preprocessing(preprocessing: str) -> None:
    if preprocessing not in PREPROCESSING:
        raise DataError(
            f"unknown preprocessing {preprocessing!r}; use one of {', '.join(PREPROCESSING)}"
        )


def _hash32_np(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32, copy=True)
    x ^= x >> np.uint32(16)
    x *= np.uint32(_M1)
    x ^= x >> np.uint32(15)
    x *= np.uint32(_M2)
    x ^= x >> np.uint32(16)
    return x


def _hash32_tf(x: tf.Tensor) -> tf.Tensor:
    shift = lambda v, n: tf.bitwise.right_shift(v, tf.constant(n, tf.uint32))  # noqa: E731
    x = tf.bitwise.bitwise_xor(x, shift(x, 16))
    x = x * tf.constant(_M1, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, shift(x, 15))
    x = x * tf.constant(_M2, tf.uint32)
    return tf.bitwise.bitwise_xor(x, shift(x, 16))


def keyed_uniform_np(keys: Any, image_shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform numbers in [0, 1) keyed by (seed, image key, pixel index), numpy.

    Args:
        keys: int array [N]: each image's position in its split.
        image_shape: (H, W, C).
        seed: int.

    Returns:
        float32 [N, H, W, C], multiples of 2^-24; equal to `keyed_uniform` in TensorFlow.
    """
    keys = np.asarray(keys, np.int64).astype(np.uint32)  # low 32 bits
    base = _hash32_np(np.asarray([seed & 0xFFFFFFFF], np.uint32))[0]
    per_image = _hash32_np((keys * np.uint32(_GOLDEN)) ^ base)
    pixels = np.arange(int(np.prod(image_shape)), dtype=np.uint32).reshape(image_shape)
    bits = _hash32_np(pixels[np.newaxis] + per_image.reshape((-1,) + (1,) * len(image_shape)))
    return (bits >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def keyed_uniform(keys: tf.Tensor, image_shape: tuple[int, ...], seed: int) -> tf.Tensor:
    """`keyed_uniform_np` in TensorFlow: keys int64 [B] -> float32 [B, H, W, C]."""
    keys = tf.cast(tf.bitwise.bitwise_and(tf.cast(keys, tf.int64), 0xFFFFFFFF), tf.uint32)
    base = tf.constant(_hash32_np(np.asarray([seed & 0xFFFFFFFF], np.uint32))[0], tf.uint32)
    per_image = _hash32_tf(tf.bitwise.bitwise_xor(keys * tf.constant(_GOLDEN, tf.uint32), base))
    n = int(np.prod(image_shape))
    pixels = tf.constant(np.arange(n, dtype=np.uint32).reshape(image_shape))
    bits = _hash32_tf(pixels[tf.newaxis] + tf.reshape(per_image, [-1] + [1] * len(image_shape)))
    return tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * (2.0**-24)


def to_unit(images: tf.Tensor) -> tf.Tensor:
    """uint8 0..255 -> float32 k / 255; float32 [0, 1] unchanged."""
    if images.dtype == tf.float32:
        return images
    return tf.cast(images, tf.float32) / 255.0


def binarize(images: Any, seed: int, keys: Any = None) -> np.ndarray:
    """Static binarization: one Bernoulli(p=pixel) draw per pixel, keyed by image.

    Args:
        images: float array in [0, 1] (or uint8 0..255), [N, H, W, C] or [N, H, W].
        seed: int. Same seed, same draw.
        keys: int array [N] or None. The images' positions in their split
            (defaults to 0..N-1): an image is drawn the same way wherever it appears.

    Returns:
        float32 array of 0/1 values, same shape as `images`.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255.0)
    images = images.astype(np.float32, copy=False)
    if images.ndim == 0 or images.size == 0:
        return images.copy()
    keys = np.arange(len(images)) if keys is None else np.asarray(keys)
    out = np.empty(images.shape, np.float32)
    chunk = max(1, (1 << 22) // max(1, images[0].size))  # ~16 MB of uniforms at a time
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        uniform = keyed_uniform_np(keys[start : start + chunk], part.shape[1:], seed)
        out[start : start + chunk] = (uniform < part).astype(np.float32)
    return out


def eval_images(images: Any, preprocessing: str, seed: int = EVAL_BINARIZATION_SEED) -> np.ndarray:
    """The images evaluation splits use for a preprocessing mode (numpy).

    `dynamic` and `static` give one keyed binarization with `seed` (image i of the
    array keyed by i, as in the split's pipeline), so every evaluation sees the same
    0/1 images; `continuous` returns the images as float32 in [0, 1].

    Args:
        images: float array in [0, 1] or uint8, e.g. [N, H, W, C], in split order.
        preprocessing: str. One of `PREPROCESSING`.
        seed: int. Binarization seed. Defaults to `EVAL_BINARIZATION_SEED`.

    Returns:
        float32 array, same shape as `images`.
    """
    check_preprocessing(preprocessing)
    images = np.asarray(images)
    if preprocessing == "continuous":
        if images.dtype == np.uint8:
            return images.astype(np.float32) / np.float32(255.0)
        return images.astype(np.float32, copy=False)
    return binarize(images, seed)


def finish_batch(
    images: tf.Tensor, keys: tf.Tensor, draw_seed: tf.Tensor | None, *, mode: str, seed: int
) -> tf.Tensor:
    """A batch of raw pixels -> the float32 [B, H, W, C] images the model sees.

    Args:
        images: uint8 or float32 [B, H, W, C].
        keys: int64 [B]. Positions of the images in their split.
        draw_seed: int64 scalar or None. The batch's seed for `dynamic`.
        mode: "dynamic" (fresh draw from `draw_seed`), "static" (keyed draw with
            `seed`) or "continuous".
        seed: int. Seed of the keyed draw.
    """
    images = to_unit(images)
    if mode == "continuous":
        return images
    if mode == "dynamic":
        uniform = tf.random.stateless_uniform(tf.shape(images), seed=tf.stack([draw_seed, 0]))
    else:
        uniform = keyed_uniform(keys, tuple(images.shape[1:]), seed)
    return tf.cast(uniform < images, tf.float32)
