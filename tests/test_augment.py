"""Random translations of training images (`--augment-shift N`, `vae_tf.data.augment`):
each image moved by its own offset in {-N..N}^2, the border reflected in, reproducible
from the seed and redrawn every pass; evaluation images never move."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from vae_tf.cli import _run_config_from_args, build_parser
from vae_tf.config import ConfigError, TrainConfig
from vae_tf.data import DataError, load_datasets, make_pipeline
from vae_tf.data.augment import random_shift


def _dots(n: int, size: int = 9) -> np.ndarray:
    """n images, one bright pixel in the middle."""
    images = np.zeros((n, size, size, 1), np.float32)
    images[:, size // 2, size // 2, 0] = 1.0
    return images


def _offsets(moved: np.ndarray, size: int = 9) -> list[tuple[int, int]]:
    out = []
    for image in moved[..., 0]:
        (r,), (c,) = np.nonzero(image)
        out.append((int(r) - size // 2, int(c) - size // 2))
    return out


def test_each_image_moves_by_its_own_offset_within_the_bound():
    moved = random_shift(tf.constant(_dots(400)), 2, tf.constant(7, tf.int64)).numpy()
    assert moved.shape == (400, 9, 9, 1) and moved.dtype == np.float32
    assert (moved.sum(axis=(1, 2, 3)) == 1).all()  # one pixel each, nothing lost or doubled
    offsets = _offsets(moved)
    assert {o for o in offsets} == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # all 25, uniform-ish
    counts = np.unique(np.array(offsets), axis=0, return_counts=True)[1]
    assert counts.min() >= 5


def test_same_seed_same_moves_other_seed_other_moves_zero_is_identity():
    x = tf.constant(_dots(64))
    a = random_shift(x, 1, tf.constant(3, tf.int64)).numpy()
    assert np.array_equal(a, random_shift(x, 1, tf.constant(3, tf.int64)).numpy())
    assert not np.array_equal(a, random_shift(x, 1, tf.constant(4, tf.int64)).numpy())
    assert random_shift(x, 0, tf.constant(3, tf.int64)) is x


def test_the_border_is_reflected_in_not_zero_filled():
    ones = tf.ones((32, 6, 6, 3))
    assert np.array_equal(random_shift(ones, 2, tf.constant(1, tf.int64)).numpy(), np.ones((32, 6, 6, 3), np.float32))


def test_training_batches_move_evaluation_batches_do_not():
    plain = load_datasets("bundled", seed=5)
    moved = load_datasets("bundled", seed=5, augment_shift=1)
    (xp, yp), (xm, ym) = next(iter(plain.train)), next(iter(moved.train))
    xp, xm = xp.numpy(), xm.numpy()
    assert np.array_equal(yp.numpy(), ym.numpy())  # the same images, in the same order
    # The same 0/1 draws, moved: MNIST's border is almost always black, so nearly every
    # image keeps its pixels (one whose stroke touches the border reflects at most a row
    # or column of it in; which batch comes first depends on the global seed).
    kept = xp.sum(axis=(1, 2, 3)) - xm.sum(axis=(1, 2, 3))
    assert (kept == 0).mean() > 0.95 and np.abs(kept).max() <= 28
    assert (np.abs(xp - xm).sum(axis=(1, 2, 3)) > 0).mean() > 0.7  # 8 of 9 offsets move
    again = next(iter(moved.train))[0].numpy()  # a second pass draws new offsets
    assert not np.array_equal(xm, again)
    for name in ("validation", "test"):
        a, b = next(iter(getattr(plain, name)))[0].numpy(), next(iter(getattr(moved, name)))[0].numpy()
        assert np.array_equal(a, b)


def test_the_shift_is_checked():
    with pytest.raises(ConfigError, match="augment_shift"):
        TrainConfig(augment_shift=-1)
    with pytest.raises(DataError, match=r"augment shift 9 must be in \[0, 9\) for 9x9 images"):
        make_pipeline(_dots(8), np.zeros(8, np.int32), batch_size=4, augment_shift=9)
    args = build_parser().parse_args(["train", "--data", "bundled", "--out", "x", "--augment-shift", "1"])
    assert _run_config_from_args(args).train.augment_shift == 1


# === Copies (`--augment-copies R`, batch augmentation) ===


def test_copies_repeat_each_image_with_its_own_draw_and_offset():
    grey = np.full((8, 9, 9, 1), 0.5, np.float32)
    labels = np.arange(8, dtype=np.int32)
    x, y = next(iter(make_pipeline(grey, labels, batch_size=4, copies=3)))
    x, y = x.numpy(), y.numpy()
    assert x.shape == (12, 9, 9, 1) and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert set(np.unique(x)) == {0.0, 1.0}
    for i in range(4):  # three copies of one image: three different 0/1 draws
        a, b, c = x[3 * i : 3 * i + 3]
        assert not (np.array_equal(a, b) or np.array_equal(b, c) or np.array_equal(a, c))
    # Without binarization, a shift still makes the copies differ, each moved on its own.
    x, _ = next(iter(make_pipeline(_dots(64), np.zeros(64, np.int32), batch_size=64, preprocessing="continuous",
                                   augment_shift=1, copies=4)))
    offsets = np.array(_offsets(x.numpy())).reshape(64, 4, 2)
    assert (x.numpy().sum(axis=(1, 2, 3)) == 1).all()
    assert np.mean([len({tuple(o) for o in image}) > 1 for image in offsets]) > 0.9


def test_copies_keep_the_steps_and_the_evaluation_batches():
    once = load_datasets("bundled", seed=5, batch_size=128)
    four = load_datasets("bundled", seed=5, batch_size=128, augment_copies=4, augment_shift=1)
    assert (four.steps_per_epoch, four.copies, once.copies) == (once.steps_per_epoch, 4, 1)
    x, y = next(iter(four.train))
    assert x.shape == (512, 28, 28, 1) and np.array_equal(y.numpy()[::4], next(iter(once.train))[1].numpy())
    a, b = next(iter(once.validation))[0].numpy(), next(iter(four.validation))[0].numpy()
    assert a.shape == b.shape and np.array_equal(a, b)


def test_the_copies_are_checked():
    with pytest.raises(ConfigError, match="augment_copies=0 must be > 0"):
        TrainConfig(augment_copies=0)
    with pytest.raises(ConfigError, match="would repeat every training image unchanged"):
        TrainConfig(augment_copies=2, preprocessing="static", augment_shift=0)
    assert TrainConfig(augment_copies=2, preprocessing="static", augment_shift=1).augment_copies == 2
    assert TrainConfig(augment_copies=1, preprocessing="continuous", augment_shift=0).augment_copies == 1
    with pytest.raises(DataError, match="would be identical"):
        make_pipeline(_dots(8), np.zeros(8, np.int32), batch_size=4, preprocessing="continuous", copies=2)
    with pytest.raises(DataError, match="copies must be a positive integer"):
        make_pipeline(_dots(8), np.zeros(8, np.int32), batch_size=4, copies=0)
    args = build_parser().parse_args(["train", "--data", "bundled", "--out", "x", "--augment-copies", "2"])
    assert _run_config_from_args(args).train.augment_copies == 2
    defaults = _run_config_from_args(build_parser().parse_args(["train", "--data", "bundled", "--out", "x"])).train
    assert (defaults.augment_copies, defaults.augment_shift) == (6, 1)
