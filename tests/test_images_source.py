"""`images:DIR`: folders of pictures the tests write themselves (grey and RGB, PNG,
JPEG, BMP and GIF, class subfolders, split folders, mixed sizes, corrupt, hidden and
non-image files), streamed or cached, and the TFDS source streamed from TFDS's files."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vae_tf import data
from vae_tf.data import DataError, ImageOptions


def shapes(n: int, size=(16, 16), seed: int = 0, grey: bool = False) -> np.ndarray:
    """n uint8 images [n, H, W, 3]: a coloured disc on a coloured background."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        background, ink = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.35) * min(h, w)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        out[i] = np.where(disc[..., None], ink, background)
    if grey:
        out[...] = out.mean(axis=-1, keepdims=True).astype(np.uint8)
    return out


def write_images(folder, images, fmt="png", mode="RGB", start=0):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(folder, f"img{start + i:04d}.{fmt}")
        picture = Image.fromarray(image) if mode == "RGB" else Image.fromarray(image[..., 0], mode="L")
        picture.save(path)
        paths.append(path)
    return paths


def read_all(spec, **kwargs):
    splits = data.load_splits(spec, **kwargs)
    return splits


# === Layouts ===


def test_flat_folder_is_unlabelled_and_lossless(tmp_path):
    images = shapes(20)
    write_images(tmp_path, images)
    splits = data.load_splits(f"images:{tmp_path}", validation_fraction=0.1, test_fraction=0.1)
    assert splits.sizes == {"train": 16, "validation": 2, "test": 2}
    assert splits.image_shape == (16, 16, 3) and splits.num_classes is None and splits.class_names is None
    assert not splits.train.in_memory  # listed, not read
    whole = data.load_splits(f"images:{tmp_path}", validation_fraction=0, test_fraction=0)
    np.testing.assert_array_equal(whole.train.cached().array, images)  # PNG is lossless, order kept
    assert (whole.train_labels == -1).all()
    held = np.sort(np.random.default_rng(0).permutation(20)[:2])
    np.testing.assert_array_equal(splits.validation.cached().array, images[held])


def test_class_folders_give_sorted_labels(tmp_path):
    for name, seed in (("zebra", 1), ("ant", 2), ("cat", 3)):
        write_images(tmp_path / name, shapes(4, seed=seed))
    write_images(tmp_path / "cat" / "kittens", shapes(2, seed=4))  # nested: still "cat"
    splits = data.load_splits(f"images:{tmp_path}", validation_fraction=0, test_fraction=0)
    assert splits.class_names == ("ant", "cat", "zebra") and splits.num_classes == 3
    np.testing.assert_array_equal(np.bincount(splits.train_labels), [4, 6, 4])
    first_ant = np.asarray(Image.open(tmp_path / "ant" / "img0000.png"))
    np.testing.assert_array_equal(splits.train.cached().array[0], first_ant)


def test_split_folders_are_the_splits(tmp_path):
    for split, n in (("train", 6), ("validation", 2), ("test", 3)):
        for name in ("a", "b"):
            write_images(tmp_path / split / name, shapes(n, seed=n))
    splits = data.load_splits(f"images:{tmp_path}")
    assert splits.sizes == {"train": 12, "validation": 4, "test": 6}
    assert splits.has_test_split and splits.class_names == ("a", "b")
    # Without validation/, validation is carved from train/.
    (tmp_path / "validation").rename(tmp_path / "later")
    os.rename(tmp_path / "later", tmp_path.parent / f"{tmp_path.name}-later")
    splits = data.load_splits(f"images:{tmp_path}", validation_fraction=0.25)
    assert splits.sizes == {"train": 9, "validation": 3, "test": 6}


def test_formats_grey_and_colour(tmp_path):
    colour = shapes(2, seed=5)
    write_images(tmp_path / "png", colour[:1], "png")
    write_images(tmp_path / "bmp", colour[1:], "bmp")
    write_images(tmp_path / "jpg", colour[:1], "jpg")
    write_images(tmp_path / "gif", colour[:1], "gif")
    splits = data.load_splits(f"images:{tmp_path}", validation_fraction=0, test_fraction=0)
    assert splits.class_names == ("bmp", "gif", "jpg", "png") and splits.image_shape == (16, 16, 3)
    pixels = splits.train.cached().array
    np.testing.assert_array_equal(pixels[0], colour[1])  # BMP: lossless
    np.testing.assert_array_equal(pixels[3], colour[0])  # PNG: lossless
    assert np.abs(pixels[2].astype(int) - colour[0]).mean() < 12  # JPEG: lossy
    assert np.abs(pixels[1].astype(int) - colour[0]).mean() < 40  # GIF: a 256-colour palette
    grey = tmp_path.parent / f"{tmp_path.name}-grey"
    write_images(grey, shapes(3, grey=True), mode="L")
    assert data.load_splits(f"images:{grey}").image_shape == (16, 16, 1)


def test_channels_and_image_size(tmp_path):
    images = shapes(3, size=(20, 30))
    write_images(tmp_path, images)
    options = ImageOptions(image_size=(10, 15), channels=1)
    splits = data.load_splits(f"images:{tmp_path}", validation_fraction=0, test_fraction=0, image_options=options)
    assert splits.image_shape == (10, 15, 1)
    pixels = splits.train.cached().array
    expected = tf.image.resize(tf.image.rgb_to_grayscale(images.astype(np.float32)), (10, 15), antialias=True)
    assert np.abs(pixels.astype(np.float32) - expected.numpy()).max() <= 1.0
    rgb = data.load_splits(f"images:{tmp_path}", image_options=ImageOptions(channels=3)).image_shape
    assert rgb == (20, 30, 3)


def test_mixed_sizes_name_two_files(tmp_path):
    write_images(tmp_path, shapes(2, size=(16, 16)))
    write_images(tmp_path, shapes(1, size=(12, 20)), start=2)
    with pytest.raises(DataError, match=r"different sizes: .*img0000.png is 16x16 and .*img0002.png is 12x20 "
                                        r"\(height x width\); pass --image-size H,W"):
        data.load_splits(f"images:{tmp_path}")
    resized = data.load_splits(f"images:{tmp_path}", image_options=ImageOptions(image_size=(8, 8)))
    assert resized.image_shape == (8, 8, 3)


def test_hidden_and_other_files_are_ignored(tmp_path):
    write_images(tmp_path, shapes(5))
    (tmp_path / ".DS_Store").write_bytes(b"\0\1junk")
    write_images(tmp_path / ".thumbnails", shapes(2, size=(4, 4)))  # hidden folder: ignored
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "labels.csv").write_text("a,b\n")
    splits = data.load_splits(f"images:{tmp_path}", validation_fraction=0, test_fraction=0)
    assert splits.sizes["train"] == 5 and splits.class_names is None
    assert splits.notes == ("ignored 2 file(s) that are not png, jpg, jpeg, bmp, gif",)


def test_empty_folder_single_image_and_mixed_layout(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no PNG/JPG/JPEG/BMP/GIF images"):
        data.load_splits(f"images:{empty}")
    with pytest.raises(DataError, match="is not a folder"):
        data.load_splits(f"images:{tmp_path / 'missing'}")
    single = tmp_path / "single"
    write_images(single, shapes(1))
    splits = data.load_splits(f"images:{single}")
    assert splits.sizes == {"train": 1, "validation": 0, "test": 0}
    with pytest.raises(DataError, match="batch size 128 is larger than the 1 training images; use --batch-size <= 1"):
        data.load_datasets(f"images:{single}")
    one = data.load_datasets(f"images:{single}", batch_size=1, preprocessing="continuous")
    assert one.steps_per_epoch == 1 and one.validation is None
    mixed = tmp_path / "mixed"
    write_images(mixed, shapes(1))
    write_images(mixed / "cats", shapes(1))
    with pytest.raises(DataError, match="images at its top level .*img0000.png.* and class folders .*cats"):
        data.load_splits(f"images:{mixed}")
    orphan = tmp_path / "orphan"
    write_images(orphan / "test", shapes(2))
    with pytest.raises(DataError, match="has test/ but no train/ folder"):
        data.load_splits(f"images:{orphan}")


def test_unreadable_files_are_named_or_skipped(tmp_path):
    write_images(tmp_path, shapes(8))
    (tmp_path / "broken.png").write_bytes(b"this is not a PNG")
    with pytest.raises(DataError, match=r"broken.png is not a readable image .*--skip-bad-images"):
        data.load_splits(f"images:{tmp_path}")
    splits = data.load_splits(f"images:{tmp_path}", image_options=ImageOptions(skip_bad_images=True))
    assert sum(splits.sizes.values()) == 8
    assert "skipped 1 file(s) that are not readable images" in splits.notes


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_truncated_file_is_found_when_decoding(tmp_path, cache):
    """A valid header with missing pixel data passes the listing; decoding names it."""
    write_images(tmp_path, shapes(8))
    whole = (tmp_path / "img0003.png").read_bytes()
    (tmp_path / "img0003.png").write_bytes(whole[: len(whole) // 2])
    spec = f"images:{tmp_path}"
    with pytest.raises(DataError, match=r"img0003.png cannot be decoded .*--skip-bad-images"):
        data.load_datasets(spec, batch_size=2, cache=cache, validation_fraction=0, test_fraction=0)
    ds = data.load_datasets(spec, batch_size=1, cache=cache, validation_fraction=0, test_fraction=0,
                            image_options=ImageOptions(skip_bad_images=True), preprocessing="continuous")
    assert ds.steps_per_epoch == 7 and ds.notes == ("skipped 1 image file(s) that cannot be decoded",)
    assert sum(1 for _ in ds.train) == 7


# === Pipelines: streamed, cached, the same batches ===


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    for name, seed in (("circles", 0), ("squares", 1)):
        write_images(root / name, shapes(40, seed=seed))
    return root


@pytest.mark.parametrize("preprocessing", ["dynamic", "static", "continuous"])
def test_cache_modes_give_the_same_batches(folder, tmp_path, preprocessing):
    runs = {}
    for cache in ("memory", "none", f"file:{tmp_path / 'cache'}"):
        ds = data.load_datasets(f"images:{folder}", batch_size=16, cache=cache, preprocessing=preprocessing, seed=3)
        runs[cache] = (batches(ds.train), batches(ds.train), batches(ds.validation), batches(ds.test))
        assert ds.splits.train.in_memory == (cache == "memory")
    memory = runs.pop("memory")
    streamed = runs.pop("none")
    for a, b in zip(memory, streamed):
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # Each epoch reshuffles; the file cache shuffles with a buffer (another order) but
    # scores the same validation and test images.
    assert not np.array_equal(memory[0][0][1], memory[1][0][1])
    (file_cached,) = runs.values()
    for a, b in zip(memory[2:], file_cached[2:]):
        for (xa, _), (xb, _) in zip(a, b):
            np.testing.assert_array_equal(xa, xb)


def test_static_binarization_is_keyed_by_image(folder):
    """A static draw depends on the image and the seed, not on the batch or the order."""
    splits = data.load_splits(f"images:{folder}", validation_fraction=0, test_fraction=0,
                              image_options=ImageOptions(channels=1))
    pixels = splits.train.cached().array
    expected = data.binarize(pixels, seed=7)
    assert set(np.unique(expected)) == {0.0, 1.0}
    for batch_size in (5, 16):
        ds = data.split_pipeline(splits.train, batch_size=batch_size, preprocessing="static", seed=7)
        np.testing.assert_array_equal(np.concatenate([x for x, _ in batches(ds)]), expected)
    shuffled = data.split_pipeline(splits.train, batch_size=8, preprocessing="static", seed=7, shuffle=True)
    got = np.concatenate([x for x, _ in batches(shuffled)])
    assert sorted(map(bytes, got.reshape(80, -1))) == sorted(map(bytes, expected.reshape(80, -1)))
    assert not np.array_equal(data.binarize(pixels, seed=8), expected)
    # The numpy and TensorFlow draws agree exactly.
    from vae_tf.data.preprocessing import keyed_uniform, keyed_uniform_np

    keys = np.array([0, 5, 2**33 + 1])
    np.testing.assert_array_equal(keyed_uniform(tf.constant(keys), (4, 4, 3), 11).numpy(),
                                  keyed_uniform_np(keys, (4, 4, 3), 11))


def test_pixels_stay_uint8_until_the_batch(folder):
    ds = data.load_datasets(f"images:{folder}", batch_size=16, preprocessing="continuous", cache="memory")
    assert ds.splits.train.array.dtype == np.uint8
    x, _ = next(iter(ds.train))
    assert x.dtype == tf.float32 and float(tf.reduce_max(x)) <= 1.0
    np.testing.assert_allclose(x.numpy() * 255, np.round(x.numpy() * 255), atol=1e-3)


def test_tfds_colour_dataset_streams(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from vae_tf.data import tfds_source

    monkeypatch.setattr(tfds_source, "_internet_reachable", lambda *a, **k: False)
    with tfds.testing.mock_data(num_examples=64):
        ds = data.load_datasets("tfds:cifar10", batch_size=16, cache="none", preprocessing="continuous")
        assert ds.splits.image_shape == (32, 32, 3) and ds.splits.num_classes == 10
        assert len(ds.splits.class_names) == 10  # the label feature's names (digits under the mock)
        assert not ds.splits.train.in_memory
        x, y = next(iter(ds.train))
        assert x.shape == (16, 32, 32, 3) and y.dtype == tf.int32
        assert ds.steps_per_epoch == 64 * 9 // 10 // 16


def test_tfds_colour_dataset_trains_one_epoch(monkeypatch, tmp_path):
    """`tfds.testing.mock_data` cifar10 (32x32 RGB, streamed) trains one epoch of a conv
    model on the defaults otherwise, and the loss is finite."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from vae_tf import RunConfig, TrainConfig, VAEConfig, train
    from vae_tf.data import tfds_source

    monkeypatch.setattr(tfds_source, "_internet_reachable", lambda *a, **k: False)
    config = RunConfig(
        model=VAEConfig(architecture="conv", conv_filters=(8, 16), dense_units=32, latent_dim=8),
        train=TrainConfig(data="tfds:cifar10", epochs=1, batch_size=16, cache="none"),
    )
    with tfds.testing.mock_data(num_examples=64):
        result = train(config, str(tmp_path / "run"), verbose=0)
    assert result.model.config.image_shape == (32, 32, 3)
    assert not result.datasets.splits.train.in_memory
    history = result.history["history"]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0]) and np.isfinite(history["val_elbo"][0])
    assert result.history["split_sizes"] == {"train": 58, "validation": 6, "test": 64}


def test_large_arrays_are_gathered_from_numpy(folder, monkeypatch):
    """Past `LARGE_ARRAY_BYTES` an in-memory split is gathered from numpy (no second
    copy in a TensorFlow constant): the same batches as the constant path."""
    from vae_tf.data import pipeline

    splits = data.load_splits(f"images:{folder}", validation_fraction=0, test_fraction=0)
    cached = splits.train.cached()
    small = batches(data.split_pipeline(cached, batch_size=16, preprocessing="dynamic", shuffle=True, seed=4))
    monkeypatch.setattr(pipeline, "LARGE_ARRAY_BYTES", 1024)
    large = batches(data.split_pipeline(cached, batch_size=16, preprocessing="dynamic", shuffle=True, seed=4))
    assert len(small) == len(large) == 5
    for (xa, ya), (xb, yb) in zip(small, large):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
