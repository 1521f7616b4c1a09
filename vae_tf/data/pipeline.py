"""Splits -> batched `tf.data` pipelines (`load_datasets`, `make_pipeline`).

Pixels stay as stored (uint8 for 8-bit sources) until a batch is formed; the batch is
then converted to float32 in [0, 1] and preprocessed in one vectorized op
(`preprocessing.finish_batch`). No float32 copy of a split is ever made.

- In-memory splits are batched by shuffling and batching indices, then gathering each
  batch from the whole array in one op (~1.4x faster than slicing per example).
- Streamed splits (folders, TFDS) decode in a parallel, order-preserving map, shuffle
  (a folder: its whole list of files; TFDS: a buffer), batch and prefetch. `cache`
  decides whether they are first read into memory as uint8 (`"memory"`), cached to
  files (`"file:PATH"`), streamed every epoch (`"none"`), or `"auto"`: in memory when
  the split's uint8 pixels fit in `AUTO_CACHE_BYTES`, streamed otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow as tf

from vae_tf.data.arrays import as_labels, as_pixels
from vae_tf.data.augment import SHIFT_SEED_SALT, check_shift, random_shift
from vae_tf.data.folders import FolderSplit
from vae_tf.data.preprocessing import EVAL_BINARIZATION_SEED, binarize, check_preprocessing, finish_batch
from vae_tf.data.sources import load_splits
from vae_tf.data.spec import DataError, DataSpec, ImageOptions
from vae_tf.data.splits import ArraySplit, Split, Splits

CACHE_MODES = ("auto", "memory", "none", "file:PATH")
AUTO_CACHE_BYTES = 1 << 30
# In-memory arrays larger than this are gathered batch by batch from numpy, not through a
# TensorFlow constant (which copies them).
LARGE_ARRAY_BYTES = 256 << 20


def check_cache(cache: str) -> None:
    if not isinstance(cache, str) or not (cache in CACHE_MODES[:3] or (cache.startswith("file:") and len(cache) > 5)):
        raise DataError(f"unknown cache {cache!r}; use one of {', '.join(CACHE_MODES)}")


def _check_batch_size(batch_size: int) -> None:
    is_int = isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
    if not is_int or batch_size <= 0:
        raise DataError(f"batch size must be a positive integer, got {batch_size!r}")


def check_copies(copies: int, preprocessing: str, augment_shift: int) -> None:
    """Raises DataError unless `copies` is a positive integer whose copies can differ:
    more than one needs "dynamic" preprocessing or an `augment_shift`."""
    if not isinstance(copies, (int, np.integer)) or isinstance(copies, bool) or copies < 1:
        raise DataError(f"copies must be a positive integer, got {copies!r}")
    if copies > 1 and preprocessing != "dynamic" and not augment_shift:
        raise DataError(
            f"{copies} copies of each image with preprocessing {preprocessing!r} and no shift would be identical; "
            "use copies=1 (--augment-copies 1), dynamic preprocessing or a shift (--augment-shift 1)"
        )


def split_pipeline(
    split: Split,
    *,
    batch_size: int,
    preprocessing: str,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    repeat: bool = False,
    file_cache: str | None = None,
    augment_shift: int = 0,
    copies: int = 1,
) -> tf.data.Dataset:
    """Batches one split into (images float32 [B, H, W, C], labels int32 [B]); with
    `copies` R, [B * R] of each (every image of the batch R times, next to each other).

    Args:
        split: Split.
        batch_size: int > 0.
        preprocessing: "dynamic" (a fresh Bernoulli draw per batch: batch k of a pass
            draws with the k-th number of a `tf.data.Dataset.random(seed)` stream,
            redrawn every pass), "static" (the keyed draw of `seed`) or "continuous".
        shuffle: bool. A new order every pass, reproducible from `seed`.
        seed: int. Seed of the shuffle and the draws.
        drop_remainder: bool. Every batch full.
        repeat: bool. Repeat forever.
        file_cache: str or None. For a streamed split: cache the decoded uint8
            elements in files with this prefix (shuffled afterwards with a buffer).
        augment_shift: int >= 0. Move each finished image by a random offset of up to
            this many pixels in each direction (`augment.random_shift`), drawn anew
            every pass from `seed`; 0 (the default) leaves images as they are.
        copies: int >= 1. Each image of a batch repeated this many times before it is
            binarized and moved, so that every copy gets its own draw and offset (batch
            augmentation); a copy needs "dynamic" preprocessing or `augment_shift` to
            differ. Defaults to 1.
    """
    check_preprocessing(preprocessing)
    check_shift(augment_shift, split.image_shape)
    check_copies(copies, preprocessing, augment_shift)
    if drop_remainder and batch_size > split.count:
        raise DataError(
            f"batch size {batch_size} is larger than the {split.count} images and "
            f"drop_remainder=True leaves no batch; use --batch-size <= {split.count}"
        )
    if isinstance(split, ArraySplit):
        array = split.array
        if preprocessing == "static":
            # Drawn once for the whole array (the same keyed draw), kept as 8 bits.
            array = (binarize(array, seed) * 255).astype(np.uint8)
            preprocessing = "continuous"
        all_labels = tf.constant(split.labels)
        ds = tf.data.Dataset.range(split.count)
        if shuffle:
            ds = ds.shuffle(max(split.count, 1), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if array.nbytes <= LARGE_ARRAY_BYTES:
            all_images = tf.constant(array)
            ds = ds.map(lambda index: (tf.gather(all_images, index), tf.gather(all_labels, index), index))
        else:
            # tf.constant would copy the array (two copies of a large split in RAM, and a
            # graph constant past protobuf's 2 GB): gather each batch from numpy instead.
            shape, dtype = (None, *split.image_shape), tf.as_dtype(array.dtype)

            def gather(index):
                images = tf.numpy_function(lambda i: array[i], [index], dtype, stateful=False)
                return tf.ensure_shape(images, shape), tf.gather(all_labels, index), index

            ds = ds.map(gather)
    else:
        if file_cache is not None:
            ds = split.elements().cache(file_cache)
            if shuffle:
                ds = ds.shuffle(min(10_000, max(split.count, 1)), seed=seed, reshuffle_each_iteration=True)
        else:
            ds = split.elements(shuffle=shuffle, seed=seed)
        # A filtered stream has unknown length; Keras needs it (steps_per_execution,
        # validation), and a source that changes under us fails loudly.
        ds = ds.apply(tf.data.experimental.assert_cardinality(split.count))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if copies > 1:
        ds = ds.map(lambda *batch: tuple(tf.repeat(t, copies, axis=0) for t in batch))
    if preprocessing == "dynamic":
        draw_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draw_seeds))
    else:
        ds = ds.map(lambda *batch: (batch, tf.constant(0, tf.int64)))

    def finish(batch, draw_seed):
        images, labels, keys = batch
        return finish_batch(images, keys, draw_seed, mode=preprocessing, seed=seed), labels

    in_memory = isinstance(split, ArraySplit)
    # A streamed split keeps a fixed number of finished batches ready: autotuned buffers
    # grow with the run (hundreds of MB of float32 batches) and memory must not.
    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE if in_memory else 2, deterministic=True)
    if augment_shift:
        shift_seeds = tf.data.Dataset.random(seed=seed ^ SHIFT_SEED_SALT, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, shift_seeds)).map(
            lambda batch, shift_seed: (random_shift(batch[0], augment_shift, shift_seed), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE if in_memory else 2, deterministic=True,
        )
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE if in_memory else 2)


def make_pipeline(
    images: Any,
    labels: Any,
    *,
    batch_size: int,
    preprocessing: str = "dynamic",
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    repeat: bool = False,
    augment_shift: int = 0,
    copies: int = 1,
) -> tf.data.Dataset:
    """Batches in-memory images into a `tf.data.Dataset` (see `split_pipeline`).

    Args:
        images: uint8 0..255 or float in [0, 1], [N, H, W, C] or [N, H, W].
        labels: int array [N].
        batch_size: int > 0. Images per batch.
        preprocessing: str. One of `PREPROCESSING`. Defaults to "dynamic".
        shuffle: bool. Shuffle the whole array each pass. Defaults to False.
        seed: int. Seed of the shuffle, the dynamic draws and the static
            binarization. Defaults to 0.
        drop_remainder: bool. Drop the last partial batch so every batch
            has shape [batch_size, ...]. Defaults to False.
        repeat: bool. Repeat forever. Defaults to False.
        augment_shift: int >= 0. Random translations of up to this many pixels
            (`split_pipeline`). Defaults to 0 (none).
        copies: int >= 1. Each image of a batch this many times, each copy drawn and
            moved on its own (`split_pipeline`). Defaults to 1.

    Returns:
        Dataset of (images float32 [B, H, W, C], labels int32 [B]).
    """
    check_preprocessing(preprocessing)
    _check_batch_size(batch_size)
    images = as_pixels(images, "images")
    if len(images) == 0:
        raise DataError("cannot build a pipeline from an empty dataset (0 images)")
    split = ArraySplit(images, as_labels(labels, len(images), "labels"))
    return split_pipeline(
        split, batch_size=batch_size, preprocessing=preprocessing, shuffle=shuffle, seed=seed,
        drop_remainder=drop_remainder, repeat=repeat, augment_shift=augment_shift, copies=copies,
    )


def eval_pipeline(split: Split, *, batch_size: int, preprocessing: str, file_cache: str | None = None) -> tf.data.Dataset:
    """An evaluation split in order, never redrawn: for `dynamic` and `static` one keyed
    binarization with `EVAL_BINARIZATION_SEED` (the same 0/1 images for every run)."""
    mode = "continuous" if preprocessing == "continuous" else "static"
    return split_pipeline(
        split, batch_size=batch_size, preprocessing=mode, seed=EVAL_BINARIZATION_SEED, file_cache=file_cache
    )


def prepare(split: Split, cache: str, name: str) -> tuple[Split, str | None, int]:
    """A split ready for its pipeline under `cache`: (split, file cache prefix or None,
    number of unreadable files skipped)."""
    if split.in_memory or split.count == 0:
        return split, None, 0
    nbytes = split.count * int(np.prod(split.image_shape))
    if cache == "memory" or (cache == "auto" and nbytes <= AUTO_CACHE_BYTES):
        if isinstance(split, FolderSplit):
            cached, skipped = split.cached_counting()
            return cached, None, skipped
        return split.cached(), None, 0
    skipped = 0
    if isinstance(split, FolderSplit):
        split, skipped = split.verified()
    file_cache = None
    if cache.startswith("file:"):
        prefix = os.path.expanduser(cache[len("file:"):])
        os.makedirs(os.path.dirname(os.path.abspath(prefix)) or ".", exist_ok=True)
        file_cache = f"{prefix}-{name}"
    return split, file_cache, skipped


@dataclasses.dataclass
class Datasets:
    """Train/validation/test pipelines of one source.

    Args:
        train: Dataset of (float32 [B, H, W, C], int32 [B]); shuffled each
            epoch, every batch full (drop_remainder, fixed shapes for XLA and
            tf.distribute), preprocessed as requested.
        validation: Dataset of the validation split; not shuffled, last
            batch may be partial; binarized once for `dynamic`/`static`. None when the
            split is empty (`validation_fraction=0`).
        test: Dataset of the test split, like `validation`.
        splits: Splits. The splits (cached ones in memory).
        preprocessing: str. One of `PREPROCESSING`.
        batch_size: int. Images per batch.
        steps_per_epoch: int. Train batches per epoch (N_train // batch_size).
        notes: tuple of str. What reading the data skipped or decided, for the user.
        copies: int. Copies of each image in a training batch (a train batch holds
            batch_size * copies images).
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    splits: Splits
    preprocessing: str
    batch_size: int
    steps_per_epoch: int
    notes: tuple[str, ...] = ()
    copies: int = 1


def load_datasets(
    spec: str | DataSpec,
    *,
    batch_size: int = 128,
    preprocessing: str = "dynamic",
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    image_options: ImageOptions | None = None,
    cache: str = "auto",
    splits: Splits | None = None,
    augment_shift: int = 0,
    augment_copies: int = 1,
) -> Datasets:
    """Opens a source and builds its train/validation/test pipelines.

    Evaluation splits for `dynamic` and `static` are binarized once with
    `EVAL_BINARIZATION_SEED`, independent of `seed`, so runs with different
    seeds are scored on the same 0/1 images.

    Args:
        spec: str or DataSpec. See `DataSpec.parse`.
        batch_size: int > 0, at most the training split size. Defaults to 128.
        preprocessing: str. One of `PREPROCESSING`. Defaults to "dynamic".
        validation_fraction: float in [0, 1). See `load_splits`. Defaults to 0.1.
        test_fraction: float in [0, 1). See `load_splits`. Defaults to 0.1.
        split_seed: int. Seed of the held-out slices. Defaults to 0.
        seed: int. Seed of the train shuffle and binarization. Defaults to 0.
        data_dir: path. TFDS data directory.
        manual_dir: path. TFDS manual download directory.
        image_options: ImageOptions. Size, channels, bad files.
        cache: str. For streamed sources: "auto", "memory", "none" or "file:PATH"
            (see the module docstring). Defaults to "auto".
        splits: Splits or None. Already opened splits of `spec` (skips `load_splits`).
        augment_shift: int >= 0. Training images only: random translations of up to
            this many pixels (`split_pipeline`). Defaults to 0 (none).
        augment_copies: int >= 1. Training batches only: each of the `batch_size`
            images `augment_copies` times, each copy binarized and moved on its own
            (`split_pipeline`'s `copies`); a training batch holds batch_size *
            augment_copies images. Defaults to 1.

    Returns:
        A `Datasets`.
    """
    check_preprocessing(preprocessing)
    _check_batch_size(batch_size)
    check_cache(cache)
    if splits is None:
        splits = load_splits(
            spec, validation_fraction=validation_fraction, test_fraction=test_fraction, split_seed=split_seed,
            data_dir=data_dir, manual_dir=manual_dir, image_options=image_options,
        )
    prepared, skipped = {}, 0
    for name in ("train", "validation", "test"):
        split, file_cache, n = prepare(splits.split(name), cache, name)
        prepared[name] = (split, file_cache)
        skipped += n
    notes = tuple(splits.notes) + ((f"skipped {skipped} image file(s) that cannot be decoded",) if skipped else ())
    splits = dataclasses.replace(
        splits, train=prepared["train"][0], validation=prepared["validation"][0], test=prepared["test"][0], notes=notes
    )
    n_train = splits.train.count
    if batch_size > n_train:
        raise DataError(
            f"batch size {batch_size} is larger than the {n_train} training images; "
            f"use --batch-size <= {n_train}"
        )
    train = split_pipeline(
        splits.train, batch_size=batch_size, preprocessing=preprocessing, shuffle=True, seed=seed,
        drop_remainder=True, file_cache=prepared["train"][1], augment_shift=augment_shift, copies=augment_copies,
    )
    validation, test = (
        eval_pipeline(prepared[name][0], batch_size=batch_size, preprocessing=preprocessing, file_cache=prepared[name][1])
        for name in ("validation", "test")
    )
    return Datasets(
        train=train,
        validation=validation if splits.validation.count else None,
        test=test,
        splits=splits,
        preprocessing=preprocessing,
        batch_size=batch_size,
        steps_per_epoch=n_train // batch_size,
        notes=notes,
        copies=augment_copies,
    )
