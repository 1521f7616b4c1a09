"""Tests of vae_tf.data: every source, the preprocessing modes, the pipelines
and the error messages users see for bad inputs."""

import gzip
import importlib.resources
import time

import numpy as np
import pytest
import tensorflow as tf

from vae_tf import data
from vae_tf.data import DataError, DataSpec, tfds_source

OFFLINE_SOURCES = ("--data bundled", "--data idx:DIR", "--data npz:FILE", "--data-dir")


def collect(ds):
    """All batches of a dataset as (images [N, ...], labels [N], batch sizes)."""
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels), [len(x) for x in images]


@pytest.fixture(scope="module")
def bundled():
    return data.load_splits("bundled")


@pytest.fixture(scope="module")
def digits(bundled):
    """300 uint8 digits [300, 28, 28] and uint8 labels, from the bundled sample."""
    images = np.round(bundled.train_images[:300, ..., 0] * 255).astype(np.uint8)
    return images, bundled.train_labels[:300].astype(np.uint8)


def write_mnist_dir(directory, images, labels, *, gzip=True, test=None, spelling="idx3"):
    stem = "train-images-idx3-ubyte" if spelling == "idx3" else "train-images.idx3-ubyte"
    suffix = ".gz" if gzip else ""
    data.write_idx(directory / (stem + suffix), images, gzip=gzip)
    if labels is not None:
        data.write_idx(directory / ("train-labels-idx1-ubyte" + suffix), labels, gzip=gzip)
    if test is not None:
        data.write_idx(directory / ("t10k-images-idx3-ubyte" + suffix), test[0], gzip=gzip)
        data.write_idx(directory / ("t10k-labels-idx1-ubyte" + suffix), test[1], gzip=gzip)
    return directory


# === Bundled digits ===


def test_bundled_splits(bundled):
    assert bundled.sizes == {"train": 4000, "validation": 500, "test": 500}
    assert not bundled.has_test_split
    assert bundled.image_shape == (28, 28, 1)
    assert bundled.num_classes == 10
    assert bundled.train_images.shape == (4000, 28, 28, 1)
    assert bundled.train_images.dtype == np.float32
    assert bundled.train_labels.dtype == np.int32
    for images in (bundled.train_images, bundled.validation_images, bundled.test_images):
        assert images.min() == 0.0 and images.max() == 1.0
    # Grey levels survive loading: MNIST pixels take many values, not just 0/1.
    assert len(np.unique(bundled.train_images)) > 200
    labels = np.concatenate([bundled.train_labels, bundled.validation_labels, bundled.test_labels])
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)


def test_bundled_three_way_split_is_disjoint_and_stable(bundled):
    """Train, validation and test are disjoint and cover the 5,000 digits; validation
    is the slice every earlier vae-tf held out (and tuned on): the first 500 of the
    split_seed-0 permutation; test is the last 500, whatever validation_fraction is."""
    raw = data.load_splits("bundled", validation_fraction=0.0, test_fraction=0.0)
    everything = np.concatenate([bundled.train_images, bundled.validation_images, bundled.test_images])
    as_rows = lambda images: sorted(row.tobytes() for row in images.reshape(len(images), -1))  # noqa: E731
    assert as_rows(everything) == as_rows(raw.train_images)
    assert raw.sizes == {"train": 5000, "validation": 0, "test": 0}
    order = np.random.default_rng(0).permutation(5000)
    np.testing.assert_array_equal(bundled.validation_images, raw.train_images[np.sort(order[:500])])
    np.testing.assert_array_equal(bundled.test_images, raw.train_images[np.sort(order[4500:])])
    np.testing.assert_array_equal(bundled.train_images, raw.train_images[np.sort(order[500:4500])])
    # The test slice does not move with validation_fraction.
    wider = data.load_splits("bundled", validation_fraction=0.3)
    np.testing.assert_array_equal(wider.test_images, bundled.test_images)
    assert wider.sizes == {"train": 3000, "validation": 1500, "test": 500}
    # No validation split: train on everything but the test slice.
    none = data.load_splits("bundled", validation_fraction=0.0)
    assert none.sizes == {"train": 4500, "validation": 0, "test": 500}
    np.testing.assert_array_equal(none.test_images, bundled.test_images)


def test_validation_fraction_zero_trains_without_validation():
    datasets = data.load_datasets("bundled", validation_fraction=0.0)
    assert datasets.validation is None
    assert datasets.steps_per_epoch == 4500 // 128


def test_bundled_package_data():
    folder = importlib.resources.files("vae_tf") / "datasets" / "mnist_5k"
    readme = (folder / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "package data of vae-tf" in readme
    assert (folder / "SHA256SUMS").is_file()


def test_held_out_slice_follows_split_seed(bundled):
    again = data.load_splits("bundled", split_seed=0)
    other = data.load_splits("bundled", split_seed=1, validation_fraction=0.2)
    np.testing.assert_array_equal(again.validation_labels, bundled.validation_labels)
    np.testing.assert_array_equal(again.validation_images, bundled.validation_images)
    assert other.sizes == {"train": 3500, "validation": 1000, "test": 500}
    assert not np.array_equal(other.validation_images[:500], bundled.validation_images)


# === Specs ===


@pytest.mark.parametrize(
    "spec, kind, location",
    [
        ("bundled", "bundled", ""),
        ("tfds:mnist", "tfds", "mnist"),
        ("tfds:emnist/digits:3.1.0", "tfds", "emnist/digits:3.1.0"),
        ("idx:/data/mnist", "idx", "/data/mnist"),
        ("npz:C:/x/mnist.npz", "npz", "C:/x/mnist.npz"),
    ],
)
def test_spec_round_trip(spec, kind, location):
    parsed = DataSpec.parse(spec)
    assert (parsed.kind, parsed.location) == (kind, location)
    assert str(parsed) == spec
    assert DataSpec.parse(parsed) is parsed


@pytest.mark.parametrize("spec", ["mnist", "", "tfds:", "csv:x.csv", "bundled:x", "idx", 3])
def test_spec_rejects_unknown_forms(spec):
    with pytest.raises(DataError, match="bundled, tfds:NAME, idx:DIR, npz:FILE"):
        DataSpec.parse(spec)


# === IDX files ===


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("array", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                                   np.array([-1.5, 2.25], np.float32),
                                   np.arange(6, dtype=np.int32).reshape(3, 2)])
def test_idx_round_trip(tmp_path, array, compress):
    # The name lies about compression on purpose: the magic bytes decide.
    path = tmp_path / ("x.raw" if compress else "x.gz")
    data.write_idx(path, array, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    out = data.read_idx(path)
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)
    assert list(tmp_path.iterdir()) == [path]  # the temp file was moved into place


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory_with_test_split(tmp_path, digits, compress):
    images, labels = digits
    write_mnist_dir(tmp_path, images[:200], labels[:200], gzip=compress,
                    test=(images[200:], labels[200:]))
    splits = data.load_splits(f"idx:{tmp_path}")
    assert splits.has_test_split
    assert splits.sizes == {"train": 180, "validation": 20, "test": 100}
    assert splits.image_shape == (28, 28, 1)
    np.testing.assert_allclose(splits.test_images[..., 0], images[200:] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(splits.test_labels, labels[200:])
    assert splits.num_classes == int(labels.max()) + 1
    assert 0.0 <= splits.train_images.min() and splits.train_images.max() <= 1.0


def test_idx_directory_other_spelling_without_labels(tmp_path, digits):
    write_mnist_dir(tmp_path, digits[0], None, gzip=False, spelling="dot")
    splits = data.load_splits(f"idx:{tmp_path}", validation_fraction=0.0)
    assert not splits.has_test_split
    assert splits.sizes == {"train": 270, "validation": 0, "test": 30}
    assert (splits.train_labels == -1).all() and splits.num_classes is None


def test_idx_truncated_gzip(tmp_path, digits):
    write_mnist_dir(tmp_path, *digits)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as err:
        data.load_splits(f"idx:{tmp_path}")
    assert str(path) in str(err.value)


def test_idx_truncated_raw_file(tmp_path, digits):
    write_mnist_dir(tmp_path, *digits, gzip=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-784])
    expected = 16 + 300 * 28 * 28
    message = f"truncated.*{expected} bytes, found {expected - 784}"
    with pytest.raises(DataError, match=message) as err:
        data.load_splits(f"idx:{tmp_path}")
    assert str(path) in str(err.value)


def test_idx_wrong_magic(tmp_path, digits):
    write_mnist_dir(tmp_path, *digits)
    # A labels file where the images should be.
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", digits[1])
    with pytest.raises(DataError, match="magic 0x00000801, expected 0x00000803"):
        data.load_splits(f"idx:{tmp_path}")


def test_idx_not_idx_at_all(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(gzip.compress(b"hello world, not an idx file"))
    with pytest.raises(DataError, match="not an IDX header"):
        data.read_idx(path)


def test_idx_count_mismatch(tmp_path, digits):
    write_mnist_dir(tmp_path, digits[0], digits[1][:299])
    with pytest.raises(DataError, match="300 images but .* 299 labels"):
        data.load_splits(f"idx:{tmp_path}")


def test_idx_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_splits(f"idx:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="no training images .* train-images-idx3-ubyte"):
        data.load_splits(f"idx:{tmp_path}")


def test_idx_empty(tmp_path):
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(DataError, match="no training images"):
        data.load_splits(f"idx:{tmp_path}")


# === npz files ===


@pytest.mark.parametrize("form", ["uint8", "float", "float_nhwc"])
@pytest.mark.parametrize("with_test", [True, False])
def test_npz(tmp_path, digits, form, with_test):
    images, labels = digits
    x = {"uint8": images, "float": images / 255.0,
         "float_nhwc": (images / 255.0).astype(np.float32)[..., None]}[form]
    arrays = {"x_train": x[:250], "y_train": labels[:250].astype(np.int64)}
    if with_test:
        arrays.update(x_test=x[250:], y_test=labels[250:])
    np.savez(tmp_path / "d.npz", **arrays)
    splits = data.load_splits(f"npz:{tmp_path / 'd.npz'}")
    assert splits.has_test_split == with_test
    # Without a test split, 10% of x_train is held out for testing too.
    assert splits.sizes == ({"train": 225, "validation": 25, "test": 50} if with_test
                            else {"train": 200, "validation": 25, "test": 25})
    assert splits.train_images.shape[1:] == (28, 28, 1)
    assert splits.train_images.dtype == np.float32 and splits.train_labels.dtype == np.int32
    held = [] if with_test else [splits.test_images]
    all_images = np.concatenate([splits.train_images, splits.validation_images, *held])
    np.testing.assert_allclose(np.sort(all_images.ravel()),
                               np.sort((images[:250] / 255.0).ravel()), atol=1e-6)


def test_npz_missing_keys(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 2, 2)))
    with pytest.raises(DataError, match=r"keys \['images'\].*x_train"):
        data.load_splits(f"npz:{tmp_path / 'd.npz'}")


@pytest.mark.parametrize(
    "x_train, message",
    [
        (np.full((10, 4, 4), np.nan, np.float32), "NaN or infinite"),
        (np.full((10, 4, 4), np.inf), "NaN or infinite"),
        (np.full((10, 4, 4), 255.0), r"\[255, 255\], outside \[0, 1\]"),
        (np.full((10, 4, 4), -0.5), r"outside \[0, 1\]"),
        (np.full((10, 4, 4), 300, np.int32), "integer pixels range over"),
        (np.zeros((10, 16)), r"expected \[N, H, W\] or \[N, H, W, C\]"),
        (np.zeros((10, 2, 2, 2, 2)), r"expected \[N, H, W\] or \[N, H, W, C\]"),
        (np.zeros((0, 4, 4), np.uint8), "no training images"),
    ],
)
def test_npz_bad_pixels(tmp_path, x_train, message):
    np.savez(tmp_path / "d.npz", x_train=x_train)
    with pytest.raises(DataError, match=message):
        data.load_splits(f"npz:{tmp_path / 'd.npz'}")


def test_npz_label_count_mismatch_and_missing_file(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((10, 4, 4)), y_train=np.zeros(9, np.int64))
    with pytest.raises(DataError, match="10 images but 9 labels"):
        data.load_splits(f"npz:{tmp_path / 'd.npz'}")
    with pytest.raises(DataError, match="does not exist"):
        data.load_splits(f"npz:{tmp_path / 'missing.npz'}")


# === TFDS ===


def no_probe(*args, **kwargs):
    raise AssertionError("the network probe ran although nothing had to be downloaded")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "emnist/digits"])
def test_tfds_mocked(monkeypatch, name):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds_source, "_internet_reachable", no_probe)
    # TFDS splits stream from TFDS's files: they are read while the mock is active.
    with tfds.testing.mock_data(num_examples=40):
        splits = data.load_splits(f"tfds:{name}", validation_fraction=0.25)
        assert splits.has_test_split
        assert splits.sizes == {"train": 30, "validation": 10, "test": 40}
        assert splits.image_shape == (28, 28, 1)
        assert splits.num_classes == 10
        assert not splits.train.in_memory
        for images, labels in ((splits.train_images, splits.train_labels),
                               (splits.test_images, splits.test_labels)):
            assert images.dtype == np.float32 and labels.dtype == np.int32
            assert 0.0 <= images.min() and images.max() <= 1.0
            assert ((0 <= labels) & (labels < 10)).all()
        # The held-out slice is the seeded permutation's first quarter of TFDS's order.
        whole = data.load_splits(f"tfds:{name}", validation_fraction=0.0, test_fraction=0.0).train_images
        held = np.sort(np.random.default_rng(0).permutation(40)[:10])
        np.testing.assert_array_equal(splits.validation_images, whole[held])


def test_tfds_prepared_dataset_needs_no_network(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    tfds.testing.DummyMnist(data_dir=tmp_path).download_and_prepare()
    monkeypatch.setattr(tfds_source, "_internet_reachable", no_probe)
    splits = data.load_splits("tfds:dummy_mnist", data_dir=tmp_path)
    assert splits.has_test_split and splits.num_classes == 10
    assert splits.sizes == {"train": 18, "validation": 2, "test": 20}
    assert splits.train_images.shape[1:] == (28, 28, 1)


def test_tfds_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setattr(tfds_source, "_internet_reachable", lambda *args, **kwargs: False)
    start = time.monotonic()
    with pytest.raises(DataError, match="cannot download TFDS dataset 'mnist': no internet") as err:
        data.load_splits("tfds:mnist", data_dir=tmp_path)
    assert time.monotonic() - start < 10
    for source in OFFLINE_SOURCES:
        assert source in str(err.value)


def test_tfds_unknown_name():
    with pytest.raises(DataError, match="unknown TFDS dataset 'mnistt'.*mnist"):
        data.load_splits("tfds:mnistt")


# === Preprocessing ===


def test_binarize_is_a_seeded_bernoulli_draw(bundled):
    images = bundled.train_images[:1000]
    first = data.binarize(images, seed=3)
    assert first.dtype == np.float32 and set(np.unique(first)) <= {0.0, 1.0}
    np.testing.assert_array_equal(first, data.binarize(images, seed=3))
    assert not np.array_equal(first, data.binarize(images, seed=4))
    # E[draw] = pixel: 784,000 draws put the means within ~0.001 of each other.
    assert abs(first.mean() - images.mean()) < 0.005
    assert (first[images == 0] == 0).all() and (first[images == 1] == 1).all()


def test_eval_binarization_is_the_protocol_of_every_earlier_figure(bundled):
    """Evaluation splits are one seeded numpy draw over the whole split (seed 0): the
    same 0/1 digits every reported figure was scored on, however the pipeline batches."""
    images = bundled.test_images
    expected = (np.random.default_rng(0).random(images.shape, dtype=np.float32) < images).astype(np.float32)
    np.testing.assert_array_equal(data.eval_images(images, "dynamic"), expected)
    ds = data.load_datasets("bundled", batch_size=97)
    np.testing.assert_array_equal(collect(ds.test)[0], expected)


def test_eval_images(bundled):
    images = bundled.validation_images
    np.testing.assert_array_equal(data.eval_images(images, "dynamic"), data.binarize(images, 0))
    np.testing.assert_array_equal(data.eval_images(images, "static", seed=5),
                                  data.binarize(images, 5))
    np.testing.assert_array_equal(data.eval_images(images, "continuous"), images)


def test_dynamic_redraws_every_pass_reproducibly(bundled):
    images, labels = bundled.validation_images, bundled.validation_labels
    ds = data.make_pipeline(images, labels, batch_size=64, preprocessing="dynamic", seed=1)
    first, first_labels, _ = collect(ds)
    second, _, _ = collect(ds)
    assert set(np.unique(first)) == {0.0, 1.0}
    np.testing.assert_array_equal(first_labels, labels)
    assert not np.array_equal(first, second)
    # Both passes are draws from the same pixels, so they agree on average.
    assert abs(first.mean() - second.mean()) < 0.01
    again = data.make_pipeline(images, labels, batch_size=64, preprocessing="dynamic", seed=1)
    np.testing.assert_array_equal(collect(again)[0], first)
    np.testing.assert_array_equal(collect(again)[0], second)
    other = data.make_pipeline(images, labels, batch_size=64, preprocessing="dynamic", seed=2)
    assert not np.array_equal(collect(other)[0], first)


def test_static_and_continuous_are_fixed(bundled):
    images, labels = bundled.validation_images, bundled.validation_labels
    static = data.make_pipeline(images, labels, batch_size=64, preprocessing="static", seed=1)
    first = collect(static)[0]
    np.testing.assert_array_equal(first, collect(static)[0])
    np.testing.assert_array_equal(first, data.binarize(images, 1))
    continuous = data.make_pipeline(images, labels, batch_size=64, preprocessing="continuous")
    np.testing.assert_array_equal(collect(continuous)[0], images)


# === Pipelines ===


@pytest.fixture(scope="module")
def datasets():
    return data.load_datasets("bundled", batch_size=128, preprocessing="dynamic", seed=0)


def test_train_pipeline(datasets):
    assert datasets.steps_per_epoch == 4000 // 128 == 31
    assert datasets.train.element_spec[0].shape.as_list() == [128, 28, 28, 1]
    assert datasets.train.element_spec[1].dtype == tf.int32
    images, labels, sizes = collect(datasets.train)
    assert sizes == [128] * 31
    assert set(np.unique(images)) == {0.0, 1.0}
    _, labels_again, _ = collect(datasets.train)
    # Reshuffled each epoch, but deterministic for the seed.
    assert not np.array_equal(labels, labels_again)
    rebuilt = data.load_datasets("bundled", batch_size=128, preprocessing="dynamic", seed=0)
    np.testing.assert_array_equal(collect(rebuilt.train)[1], labels)
    np.testing.assert_array_equal(collect(rebuilt.train)[1], labels_again)
    reseeded = data.load_datasets("bundled", batch_size=128, preprocessing="dynamic", seed=1)
    assert not np.array_equal(collect(reseeded.train)[1], labels)


def test_train_epoch_visits_distinct_images(bundled):
    images = bundled.train_images
    ids = np.arange(len(images), dtype=np.int32)  # labels double as example ids
    ds = data.make_pipeline(images, ids, batch_size=100, preprocessing="continuous",
                            shuffle=True, seed=0, drop_remainder=True)
    seen_images, seen, _ = collect(ds)
    assert len(set(seen)) == len(seen) == 4000
    assert not np.array_equal(seen, ids)
    np.testing.assert_array_equal(seen_images, images[seen])


def test_eval_pipelines_are_static_and_ordered(datasets):
    splits = datasets.splits
    images, labels, sizes = collect(datasets.validation)
    assert sizes == [128, 128, 128, 116]
    np.testing.assert_array_equal(labels, splits.validation_labels)
    expected = data.eval_images(splits.validation_images, "dynamic", data.EVAL_BINARIZATION_SEED)
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(collect(datasets.validation)[0], images)
    test_images, test_labels, _ = collect(datasets.test)
    np.testing.assert_array_equal(test_labels, splits.test_labels)
    np.testing.assert_array_equal(
        test_images, data.eval_images(splits.test_images, "dynamic", data.EVAL_BINARIZATION_SEED)
    )


@pytest.mark.parametrize("preprocessing", ["static", "continuous"])
def test_load_datasets_modes(preprocessing):
    ds = data.load_datasets("bundled", batch_size=500, preprocessing=preprocessing, seed=2)
    train = next(iter(ds.train))[0].numpy()
    validation = collect(ds.validation)[0]
    if preprocessing == "static":
        assert set(np.unique(train)) == set(np.unique(validation)) == {0.0, 1.0}
    else:
        assert len(np.unique(train)) > 200 and len(np.unique(validation)) > 200
    assert ds.steps_per_epoch == 8 and ds.preprocessing == preprocessing


def test_repeat(bundled):
    ds = data.make_pipeline(bundled.validation_images, bundled.validation_labels,
                            batch_size=200, drop_remainder=True, repeat=True)
    assert len(list(ds.take(7))) == 7


# === Argument errors ===


def test_bad_arguments(tmp_path, digits):
    message = "unknown preprocessing 'gray'.*dynamic, static, continuous"
    with pytest.raises(DataError, match=message):
        data.load_datasets("bundled", preprocessing="gray")
    for batch_size in (0, -4):
        with pytest.raises(DataError, match="batch size must be a positive integer"):
            data.load_datasets("bundled", batch_size=batch_size)
    for fraction in (1.0, -0.1, float("nan")):
        with pytest.raises(DataError, match=r"validation_fraction must be in \[0, 1\)"):
            data.load_splits("bundled", validation_fraction=fraction)
        with pytest.raises(DataError, match=r"test_fraction must be in \[0, 1\)"):
            data.load_splits("bundled", test_fraction=fraction)
    with pytest.raises(DataError, match="leave none of its 5000 images for training"):
        data.load_splits("bundled", validation_fraction=0.5, test_fraction=0.5)
    np.savez(tmp_path / "d.npz", x_train=digits[0][:250])  # 25 validation, 25 test
    with pytest.raises(DataError, match=r"batch size 256 is larger than the 200 training images; "
                                        r"use --batch-size <= 200"):
        data.load_datasets(f"npz:{tmp_path / 'd.npz'}", batch_size=256)
    with pytest.raises(DataError, match="empty dataset"):
        data.make_pipeline(np.zeros((0, 4, 4, 1)), np.zeros(0), batch_size=2)
    with pytest.raises(DataError, match="drop_remainder"):
        data.make_pipeline(np.zeros((3, 4, 4, 1)), np.zeros(3), batch_size=4, drop_remainder=True)
