"""A split of a source (`Split`: images in a fixed order, in memory or streamed) and the
three splits of one source (`Splits`), with the held-out slices carved by a seeded
permutation.

Pixels stay 8-bit (uint8 0..255) until a batch is formed, unless the source itself
stores floats in [0, 1] (a float `.npz` file). Two kinds of split:

- `ArraySplit`: an in-memory array [N, H, W, C] (the bundled digits, IDX and `.npz`
  files, and any split cached in memory);
- `StreamSplit`: images read and decoded in the `tf.data` pipeline, one element at a
  time (a folder of pictures, a TFDS dataset); memory does not grow with N.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from vae_tf.data.preprocessing import to_unit
from vae_tf.data.spec import DataError

_MATERIALIZE_BATCH = 256


class Split:
    """`count` images of `image_shape` in a fixed order, with int32 labels (-1: none).

    Attributes:
        count: int. Number of images.
        image_shape: (H, W, C).
        dtype: tf.uint8 (0..255) or tf.float32 ([0, 1]): how pixels are stored.
    """

    count: int
    image_shape: tuple[int, int, int]
    dtype: tf.DType

    def elements(self, *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """Dataset of (image [H, W, C] in `dtype`, label int32, key int64): key is the
        image's position in this split. With `shuffle`, a new order every pass
        (reproducible from `seed`)."""
        raise NotImplementedError

    def select(self, indices: np.ndarray) -> Split:
        """The split made of the images at sorted `indices`, in that order."""
        raise NotImplementedError

    @property
    def in_memory(self) -> bool:
        return False

    def cached(self, progress: Callable[[int, int], None] | None = None) -> ArraySplit:
        """This split read once into memory as an `ArraySplit` (pixels kept in `dtype`)."""
        images = np.empty((self.count, *self.image_shape), self.dtype.as_numpy_dtype)
        labels = np.empty(self.count, np.int32)
        filled = 0
        for image, label, _ in self.elements().batch(_MATERIALIZE_BATCH).as_numpy_iterator():
            images[filled : filled + len(image)] = image
            labels[filled : filled + len(image)] = label
            filled += len(image)
            if progress is not None:
                progress(filled, self.count)
        if filled != self.count:
            raise DataError(f"expected {self.count} images but read {filled}; the source changed while reading it")
        return ArraySplit(images, labels)

    def head(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `n` images as float32 [n, H, W, C] in [0, 1], and their labels [n]."""
        n = min(n, self.count)
        if n == 0:
            return np.zeros((0, *self.image_shape), np.float32), np.zeros(0, np.int32)
        image, label, _ = next(iter(self.elements().take(n).batch(n)))
        return to_unit(image).numpy(), label.numpy()

    # Whole-split arrays, for small data, tests and evaluation.

    @property
    def images(self) -> np.ndarray:
        """Every image as float32 [N, H, W, C] in [0, 1] (read into memory)."""
        return self.cached().images_unit()

    @property
    def labels(self) -> np.ndarray:
        """Every label, int32 [N]."""
        return self.cached().labels


class ArraySplit(Split):
    """A split held in memory.

    Args:
        images: uint8 [N, H, W, C] (0..255) or float32 [N, H, W, C] in [0, 1].
        labels: int32 [N], -1 where unlabelled.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if images.dtype not in (np.uint8, np.float32) or images.ndim != 4:
            raise DataError(f"images must be uint8 or float32 [N, H, W, C], got {images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise DataError(f"{len(images)} images but labels of shape {labels.shape}; expected [{len(images)}]")
        self.array = images
        self._labels = labels.astype(np.int32, copy=False)
        self.count = len(images)
        self.image_shape = tuple(int(d) for d in images.shape[1:])
        self.dtype = tf.as_dtype(images.dtype)

    @property
    def in_memory(self) -> bool:
        return True

    def elements(self, *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((self.array, self._labels, np.arange(self.count, dtype=np.int64)))
        if shuffle:
            ds = ds.shuffle(max(self.count, 1), seed=seed, reshuffle_each_iteration=True)
        return ds

    def select(self, indices: np.ndarray) -> ArraySplit:
        return ArraySplit(self.array[indices], self._labels[indices])

    def cached(self, progress=None) -> ArraySplit:
        return self

    def head(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return _unit_np(self.array[:n]), self._labels[:n].copy()

    def images_unit(self) -> np.ndarray:
        return _unit_np(self.array)

    @property
    def images(self) -> np.ndarray:
        return self.images_unit()

    @property
    def labels(self) -> np.ndarray:
        return self._labels


def _unit_np(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images


class StreamSplit(Split):
    """A split whose images are read in the pipeline, one element at a time.

    Args:
        read: function () -> Dataset of (image [H, W, C] uint8, label int32) over the
            whole underlying sequence, in a fixed order (it is called once per
            `elements()`).
        total: int. Length of that underlying sequence.
        positions: int64 [N] sorted or None. The underlying positions that make up
            this split (None: all of them).
        image_shape: (H, W, C).
        name: str. Names the source in messages.
        read_subset: function (positions int64 [N], keys: Dataset of int64 keys in
            0..N-1) -> Dataset of (image, label, key), the image of key k being the one
            at underlying position positions[k], in the order of `keys`; or None.
            Sources that can read any element directly (a list of files) use it;
            others filter the whole sequence.
        shuffle_buffer: int. Elements buffered for shuffling when `read_subset` is
            None (the whole split is shuffled exactly otherwise).
    """

    def __init__(
        self,
        read: Callable[[], tf.data.Dataset],
        total: int,
        image_shape: tuple[int, int, int],
        *,
        positions: np.ndarray | None = None,
        name: str = "",
        read_subset: Callable[[np.ndarray, tf.data.Dataset], tf.data.Dataset] | None = None,
        shuffle_buffer: int = 10_000,
    ):
        self._read, self._read_subset = read, read_subset
        self.total = total
        self.positions = np.arange(total, dtype=np.int64) if positions is None else np.asarray(positions, np.int64)
        self.count = len(self.positions)
        self.image_shape = tuple(image_shape)
        self.dtype = tf.uint8
        self.name = name
        self.shuffle_buffer = shuffle_buffer

    def select(self, indices: np.ndarray) -> StreamSplit:
        return StreamSplit(
            self._read, self.total, self.image_shape, positions=self.positions[indices], name=self.name,
            read_subset=self._read_subset, shuffle_buffer=self.shuffle_buffer,
        )

    def elements(self, *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        keys = np.arange(self.count, dtype=np.int64)
        if self._read_subset is not None:
            if shuffle:
                # Shuffle what to read (cheap: positions), then read in that order.
                order = tf.data.Dataset.from_tensor_slices(keys).shuffle(
                    max(self.count, 1), seed=seed, reshuffle_each_iteration=True
                )
                return self._read_subset(self.positions, order)
            return self._read_subset(self.positions, tf.data.Dataset.from_tensor_slices(keys))
        ds = self._read()
        if self.count != self.total:
            # Underlying position -> key in this split, -1 where not part of it.
            lookup = np.full(self.total, -1, np.int64)
            lookup[self.positions] = keys
            table = tf.constant(lookup)
            ds = ds.enumerate().map(lambda i, element: (element[0], element[1], tf.gather(table, i)))
            ds = ds.filter(lambda image, label, key: key >= 0)
        else:
            ds = ds.enumerate().map(lambda i, element: (element[0], element[1], i))
        if shuffle:
            ds = ds.shuffle(min(self.shuffle_buffer, max(self.count, 1)), seed=seed, reshuffle_each_iteration=True)
        return ds


@dataclasses.dataclass
class Splits:
    """The three splits of one source.

    Args:
        train: Split. The training images.
        validation: Split. The source's own validation split, else a slice held out
            of train (see `carve`); may be empty.
        test: Split. The source's own test split, else a held-out slice; may be empty.
        image_shape: (H, W, C) of one image.
        num_classes: number of label classes, None when unlabelled.
        has_test_split: False when the source had no test split (test is then the
            held-out test slice).
        class_names: names of the classes (label i is `class_names[i]`), or None.
        notes: what reading the source skipped or decided, one line each (for
            example "skipped 2 unreadable images"), for the user to see.
    """

    train: Split
    validation: Split
    test: Split
    image_shape: tuple[int, int, int]
    num_classes: int | None
    has_test_split: bool
    class_names: tuple[str, ...] | None = None
    notes: tuple[str, ...] = ()

    @property
    def sizes(self) -> dict[str, int]:
        """Number of images per split: {"train": n, "validation": n, "test": n}."""
        return {"train": self.train.count, "validation": self.validation.count, "test": self.test.count}

    def split(self, name: str) -> Split:
        if name not in ("train", "validation", "test"):
            raise DataError(f"unknown split {name!r}; use train, validation or test")
        return getattr(self, name)

    # Whole-split arrays (float32 [N, H, W, C] in [0, 1], int32 [N]), for small data.
    train_images = property(lambda self: self.train.images)
    train_labels = property(lambda self: self.train.labels)
    validation_images = property(lambda self: self.validation.images)
    validation_labels = property(lambda self: self.validation.labels)
    test_images = property(lambda self: self.test.images)
    test_labels = property(lambda self: self.test.labels)


def carve(
    source: dict[str, Split],
    *,
    name: str,
    validation_fraction: float,
    test_fraction: float,
    split_seed: int,
) -> tuple[Split, Split, Split, bool]:
    """Train, validation and test splits of a source's own splits.

    A source's own validation and test splits are used as they are. Where it has
    none, slices of train are held out, from one permutation of its images drawn from
    `split_seed`: validation is the first `validation_fraction` of that order, test the
    last `test_fraction`, train the rest (each slice keeps the source order). The test
    slice does not depend on `validation_fraction`, and the same seed always holds out
    the same images. The fractions are checked by `load_splits`, before the source is read.

    Returns:
        (train, validation, test, has_test_split).
    """
    train = source["train"]
    if train.count == 0:
        raise DataError(f"{name} has no training images; point --data at a non-empty dataset")
    has_test_split = "test" in source
    n = train.count
    n_val = 0 if "validation" in source else int(round(validation_fraction * n))
    n_test = 0 if has_test_split else int(round(test_fraction * n))
    order = np.random.default_rng(split_seed).permutation(n)
    held_val = np.sort(order[:n_val])
    held_test = np.sort(order[n - n_test :] if n_test else order[:0])
    kept = np.sort(order[n_val : n - n_test])
    if len(kept) == 0:
        raise DataError(
            f"{name}: validation_fraction {validation_fraction} and test_fraction {test_fraction} leave "
            f"none of its {n} images for training; lower them"
        )
    validation = source["validation"] if "validation" in source else train.select(held_val)
    test = source["test"] if has_test_split else train.select(held_test)
    return train.select(kept), validation, test, has_test_split
