"""Training-time augmentation: random translations of a batch.

On a few thousand images a VAE's decoder learns the training digits themselves (the
bundled digits' default run ends at -ELBO 92 on its training batches against 108 on the
validation slice). Moving every training image by a random whole number of pixels, a
fresh offset per image and pass, is the cheapest way to show it more digits.
Evaluation splits are never moved: the model is scored on the images as they are.
"""

from __future__ import annotations

import tensorflow as tf

from vae_tf.data.spec import DataError

# Keeps the offsets' random stream apart from the binarization draws of the same seed.
SHIFT_SEED_SALT = 0x5EED5


def check_shift(max_shift: int, image_shape) -> None:
    """DataError unless 0 <= max_shift < the image's height and width (the reflected
    border must come from the image itself)."""
    height, width = int(image_shape[0]), int(image_shape[1])
    if not 0 <= max_shift < min(height, width):
        raise DataError(
            f"augment shift {max_shift} must be in [0, {min(height, width)}) for {height}x{width} images; "
            "use --augment-shift 1 or 2"
        )


def random_shift(images: tf.Tensor, max_shift: int, seed: tf.Tensor) -> tf.Tensor:
    """Each image moved by its own (dy, dx), each uniform on {-max_shift, ..., max_shift}
    pixels; the pixels that come in are the image's border reflected (`tf.pad`'s
    REFLECT: zeros where the border is black, as on MNIST).

    Args:
        images: float32 [B, H, W, C], any pixel scale (binarized 0/1 stays 0/1).
        max_shift: int >= 0, below H and W. 0 returns `images`.
        seed: int64 scalar; the same seed moves the same batch the same way.

    Returns:
        float32 [B, H, W, C].
    """
    if max_shift == 0:
        return images
    height, width = images.shape[1], images.shape[2]
    offsets = tf.random.stateless_uniform(
        [tf.shape(images)[0], 2], seed=tf.stack([tf.cast(seed, tf.int64), tf.constant(SHIFT_SEED_SALT, tf.int64)]),
        minval=0, maxval=2 * max_shift + 1, dtype=tf.int32,
    )
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]], mode="REFLECT")
    # Output row r of image b is padded row r + offset_b: offset max_shift is no move.
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    moved = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(moved, cols, axis=2, batch_dims=1)
