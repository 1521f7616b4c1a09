"""Pixel preprocessing: 8-bit to [0, 1], and the three `PREPROCESSING` modes.

- `dynamic`: every time an image is used, each pixel is redrawn as a
  Bernoulli(p=pixel) 0/1 value (dynamic binarization, a regularizer for Bernoulli
  decoders).
- `static`: pixels are drawn as 0/1 once, with a fixed seed.
- `continuous`: grey levels in [0, 1] as they are (uint8 k becomes k / 255).

A fixed ("static") draw is keyed by the image's position i in its split, not by the
batch it arrives in: image i gets the i-th block of one seeded numpy draw over the whole
split (`keyed_uniform_np`, which jumps ahead in the PCG64 stream). The same image gets
the same 0/1 pixels in a streamed, shuffled or differently batched pipeline, and the
bundled digits the same 0/1 images as every earlier vae-tf figure. Evaluation splits use `EVAL_BINARIZATION_SEED` for every run, the usual
protocol for reporting likelihoods on binarized MNIST.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from vae_tf.data.spec import DataError

PREPROCESSING = ("dynamic", "static", "continuous")
EVAL_BINARIZATION_SEED = 0

def check_preprocessing(preprocessing: str) -> None:
    if preprocessing not in PREPROCESSING:
        raise DataError(
            f"unknown preprocessing {preprocessing!r}; use one of {', '.join(PREPROCESSING)}"
        )


def keyed_uniform_np(keys: Any, image_shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform numbers in [0, 1) for the images at positions `keys` of their split.

    Image i gets the i-th block of `np.random.default_rng(seed).random((N, *image_shape),
    dtype=np.float32)`, reached by advancing the PCG64 stream instead of drawing what
    comes before it: the same numbers as a draw over the whole split (the protocol of
    every earlier vae-tf figure), whatever the batch, order or source.

    Args:
        keys: int array [B] of positions in the split.
        image_shape: (H, W, C).
        seed: int.

    Returns:
        float32 [B, H, W, C].
    """
    keys = np.asarray(keys, np.int64).reshape(-1)
    size = int(np.prod(image_shape))
    out = np.empty((len(keys), size), np.float32)
    state = np.random.PCG64(seed).state
    bits = np.random.PCG64()

    def draw(first: int, count: int) -> np.ndarray:
        bits.state = state
        offset = first * size  # float32 draws use one 32-bit half of a 64-bit output each
        bits.advance(offset // 2)
        generator = np.random.Generator(bits)
        if offset % 2:
            generator.integers(0, 2**32, dtype=np.uint32)
        return generator.random(count * size, dtype=np.float32)

    if len(keys) and np.array_equal(keys, keys[0] + np.arange(len(keys))):
        out[:] = draw(int(keys[0]), len(keys)).reshape(len(keys), size)  # a run of keys: one draw
    else:
        for row, key in enumerate(keys):
            out[row] = draw(int(key), 1)
    return out.reshape((len(keys), *image_shape))


def keyed_uniform(keys: tf.Tensor, image_shape: tuple[int, ...], seed: int) -> tf.Tensor:
    """`keyed_uniform_np` inside a TensorFlow graph: keys int64 [B] -> float32 [B, H, W, C]."""
    shape = tuple(int(d) for d in image_shape)
    uniform = tf.numpy_function(
        lambda k: keyed_uniform_np(k, shape, seed), [keys], tf.float32, stateful=False
    )
    return tf.ensure_shape(uniform, [None, *shape])


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
