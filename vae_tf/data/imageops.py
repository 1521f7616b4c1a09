"""Per-image conversions shared by every source: channels and size (`ImageOptions`)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vae_tf.data.spec import ImageOptions

_CONVERT_BATCH = 512


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 [H, W, c] with c in 1..4 -> uint8 [H, W, channels].

    Grey from colour is ITU-R 601 luma (`tf.image.rgb_to_grayscale`), rounded; colour
    from grey repeats the channel; alpha (c = 2 or 4) is dropped.
    """
    c = tf.shape(image)[-1]
    colour = tf.cond(c >= 3, lambda: image[..., :3], lambda: tf.repeat(image[..., :1], 3, axis=-1))
    if channels == 3:
        return tf.ensure_shape(colour, [None, None, 3])

    def luma():
        grey = tf.image.rgb_to_grayscale(tf.cast(colour, tf.float32))
        return tf.cast(tf.clip_by_value(tf.round(grey), 0.0, 255.0), tf.uint8)

    grey = tf.cond(c >= 3, luma, lambda: image[..., :1])
    return tf.ensure_shape(grey, [None, None, 1])


def resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """uint8 [h, w, C] -> uint8 [H, W, C]: bilinear with antialiasing, rounded."""
    resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def transform(image: tf.Tensor, options: ImageOptions, channels: int, image_shape: tuple[int, int, int]) -> tf.Tensor:
    """One decoded uint8 image -> uint8 `image_shape`, converting channels to `channels`
    and resizing to `options.image_size` when set."""
    image = to_channels(image, channels)
    if options.image_size is not None:
        image = resize(image, options.image_size)
    return tf.ensure_shape(image, image_shape)


def transform_array(images: np.ndarray, options: ImageOptions) -> np.ndarray:
    """`ImageOptions` applied to an in-memory array [N, H, W, C] (uint8, or float32 in
    [0, 1], which is converted through 8 bits). Returns uint8 [N, H', W', C']."""
    if images.dtype != np.uint8:
        images = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    channels = options.channels or images.shape[-1]
    size = options.image_size or images.shape[1:3]
    shape = (*size, channels)
    out = np.empty((len(images), *shape), np.uint8)

    @tf.function
    def convert(batch):
        return tf.map_fn(lambda image: transform(image, options, channels, shape), batch,
                         fn_output_signature=tf.TensorSpec(shape, tf.uint8))

    for start in range(0, len(images), _CONVERT_BATCH):
        out[start : start + _CONVERT_BATCH] = convert(images[start : start + _CONVERT_BATCH]).numpy()
    return out
