"""Data sources -> numpy splits -> `tf.data` pipelines.

Four sources, named by a spec string (`DataSpec.parse`):

- `bundled`: 5,000 MNIST training digits shipped as package data (offline).
- `idx:DIR`: a directory of MNIST-style IDX files, gzip-compressed or raw.
- `npz:FILE`: a NumPy archive with `x_train` (and optionally `y_train`,
  `x_test`, `y_test`).
- `tfds:NAME`: a TensorFlow Datasets name such as `mnist`, `fashion_mnist` or
  `emnist/digits` (downloads unless already prepared in `data_dir`).

Every source is read into a `Splits` of float32 images in [0, 1] shaped
[N, H, W, C] and int32 labels shaped [N]. `make_pipeline` and `load_datasets`
turn those arrays into batched `tf.data.Dataset`s with one of the
`PREPROCESSING` modes:

- `dynamic`: every time an image is used, each pixel is redrawn as a
  Bernoulli(p=pixel) 0/1 value (dynamic binarization, a regularizer for
  Bernoulli decoders).
- `static`: pixels are drawn as 0/1 once, with a fixed seed.
- `continuous`: grey levels in [0, 1] as they are.

Evaluation splits are never redrawn: for `dynamic` and `static` they are
binarized once with `EVAL_BINARIZATION_SEED`, the usual protocol for
reporting likelihoods on binarized MNIST.
"""

from __future__ import annotations

import dataclasses
import difflib
import gzip
import hashlib
import importlib.resources
import os
import socket
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from vae_tf.config import UserError

PREPROCESSING = ("dynamic", "static", "continuous")
SPEC_KINDS = ("bundled", "tfds", "idx", "npz")
SPEC_FORMS = ("bundled", "tfds:NAME", "idx:DIR", "npz:FILE")
EVAL_BINARIZATION_SEED = 0

_BUNDLED_DIR = ("datasets", "mnist_5k")
_GZIP_MAGIC = b"\x1f\x8b"
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
# IDX type byte -> big-endian numpy dtype (the format's own table).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
_IDX_NAMES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_TFDS_PROBE_HOST = ("storage.googleapis.com", 443)
_TFDS_PROBE_TIMEOUT_S = 3.0
_TFDS_CHUNK = 10_000
_OFFLINE_SOURCES = (
    "Use the bundled digits (--data bundled), an IDX directory (--data idx:DIR) "
    "or a .npz file (--data npz:FILE), or prepare the dataset on a machine "
    "with internet and pass --data-dir"
)


class DataError(UserError, ValueError):
    """A dataset spec or file that cannot be used; the message says what to do."""


# === Spec ===


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the data comes from.

    Args:
        kind: str. One of `SPEC_KINDS`: "bundled", "tfds", "idx" or "npz".
        location: str. "" for bundled, else the TFDS name (with optional
            config/version, as `tfds.builder` accepts), the IDX directory or
            the .npz path.

    Example:
        >>> DataSpec.parse("idx:/data/mnist")
        DataSpec(kind='idx', location='/data/mnist')
        >>> str(DataSpec.parse("tfds:emnist/digits"))
        'tfds:emnist/digits'
    """

    kind: str
    location: str = ""

    def __post_init__(self):
        if self.kind not in SPEC_KINDS:
            raise DataError(
                f"unknown data source kind {self.kind!r}; expected one of "
                f"{', '.join(SPEC_FORMS)}"
            )
        if (self.kind == "bundled") != (not self.location):
            form = SPEC_FORMS[SPEC_KINDS.index(self.kind)]
            raise DataError(
                f"data spec {self.kind!r} with location {self.location!r} is "
                f"malformed; write it as {form!r}"
            )

    @classmethod
    def parse(cls, spec: str | DataSpec) -> DataSpec:
        """Parses "bundled", "tfds:NAME", "idx:DIR" or "npz:FILE".

        A `DataSpec` is returned unchanged. Anything else raises `DataError`
        listing the accepted forms.
        """
        if isinstance(spec, DataSpec):
            return spec
        forms = ", ".join(SPEC_FORMS)
        if not isinstance(spec, str):
            raise DataError(
                f"data spec must be a string, got {type(spec).__name__}; use one of {forms}"
            )
        if spec == "bundled":
            return cls("bundled", "")
        kind, sep, location = spec.partition(":")
        if not sep or kind not in SPEC_KINDS[1:] or not location:
            raise DataError(f"unknown data spec {spec!r}; use one of {forms}")
        return cls(kind, location)

    def __str__(self) -> str:
        return self.kind if self.kind == "bundled" else f"{self.kind}:{self.location}"


# === Splits ===


@dataclasses.dataclass
class Splits:
    """Raw arrays of one source, split three ways.

    Images are float32 [N, H, W, C] with pixel intensities in [0, 1]; labels
    are int32 [N], -1 where the source has no labels.

    Args:
        train_images, train_labels: the training split.
        validation_images, validation_labels: the validation split (the
            source's own, else a slice held out of train).
        test_images, test_labels: the test split (the source's own, else a
            slice held out of train, disjoint from validation).
        image_shape: (H, W, C) of one image.
        num_classes: number of label classes, None when unlabelled.
        has_test_split: False when the source had no test split (test is then
            the held-out test slice).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    image_shape: tuple[int, int, int]
    num_classes: int | None
    has_test_split: bool

    @property
    def sizes(self) -> dict[str, int]:
        """Number of images per split: {"train": n, "validation": n, "test": n}."""
        return {
            "train": len(self.train_images),
            "validation": len(self.validation_images),
            "test": len(self.test_images),
        }


def load_splits(
    spec: str | DataSpec,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> Splits:
    """Reads a source into train/validation/test arrays.

    A source's own validation and test splits (TFDS datasets, `npz` files with
    `x_test`) are used as they are. Where the source has none, slices of train are held
    out, from one permutation of its images drawn from `split_seed`: validation is the
    first `validation_fraction` of that order, test the last `test_fraction`, train the
    rest (each slice keeps the source order). The test slice therefore does not depend
    on `validation_fraction`, and the same seed always holds out the same images. The
    bundled 5,000 digits give 4,000 train, 500 validation and 500 test images with the
    defaults; the validation slice is the 500 digits every earlier version of vae-tf
    held out (and on which its defaults were chosen), the test slice 500 digits it
    trained on but never evaluated or tuned on.

    `validation_fraction=0` gives an empty validation split (train on everything but
    the test slice, no validation metrics); `test_fraction=0` gives an empty test split
    for a source without one.

    Args:
        spec: str or DataSpec. See `DataSpec.parse`.
        validation_fraction: float in [0, 1). Share of the source's training images
            held out for validation when it has no validation split.
        test_fraction: float in [0, 1). Share held out for testing when it has no
            test split.
        split_seed: int. Seed of the held-out permutation.
        data_dir: path. TFDS data directory; ignored by other sources.
        manual_dir: path. TFDS manual download directory; ignored by others.

    Returns:
        A `Splits` with float32 images in [0, 1] and int32 labels.
    """
    spec = DataSpec.parse(spec)
    for name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:  # NaN fails too
            raise DataError(f"{name} must be in [0, 1), got {fraction}")
    if spec.kind == "bundled":
        raw, num_classes = _read_bundled(), 10
    elif spec.kind == "idx":
        raw, num_classes = _read_idx_dir(Path(spec.location).expanduser()), None
    elif spec.kind == "npz":
        raw, num_classes = _read_npz(Path(spec.location).expanduser()), None
    else:
        raw, num_classes = _read_tfds(spec.location, data_dir, manual_dir)

    splits = {}
    for name, (images, labels) in raw.items():
        where = f"{spec} ({name} split)"
        images = _as_unit_images(images, where)
        splits[name] = (images, _as_labels(labels, len(images), where))
    train_images, train_labels = splits["train"]
    if len(train_images) == 0:
        raise DataError(f"{spec} has no training images; point --data at a non-empty dataset")
    image_shape = tuple(int(d) for d in train_images.shape[1:])
    for name, (images, _) in splits.items():
        if images.shape[1:] != image_shape:
            raise DataError(
                f"{spec}: {name} images are {images.shape[1:]} but train images "
                f"are {image_shape}; all splits must share one image shape"
            )

    has_test_split = "test" in splits
    n = len(train_images)
    n_val = 0 if "validation" in splits else int(round(validation_fraction * n))
    n_test = 0 if has_test_split else int(round(test_fraction * n))
    order = np.random.default_rng(split_seed).permutation(n)
    held_val, held_test = np.sort(order[:n_val]), np.sort(order[n - n_test:] if n_test else order[:0])
    kept = np.sort(order[n_val : n - n_test])
    if len(kept) == 0:
        raise DataError(
            f"{spec}: validation_fraction {validation_fraction} and test_fraction {test_fraction} leave "
            f"none of its {n} images for training; lower them"
        )
    validation = splits.get("validation", (train_images[held_val], train_labels[held_val]))
    test = splits["test"] if has_test_split else (train_images[held_test], train_labels[held_test])
    train_images, train_labels = train_images[kept], train_labels[kept]

    if num_classes is None:
        labelled = [labels for _, labels in splits.values() if (labels >= 0).any()]
        num_classes = int(max(labels.max() for labels in labelled)) + 1 if labelled else None
    return Splits(
        train_images=train_images,
        train_labels=train_labels,
        validation_images=validation[0],
        validation_labels=validation[1],
        test_images=test[0],
        test_labels=test[1],
        image_shape=image_shape,
        num_classes=num_classes,
        has_test_split=has_test_split,
    )


def _as_unit_images(images: Any, where: str) -> np.ndarray:
    """Validates and converts images to float32 [N, H, W, C] in [0, 1].

    uint8 (and other integer) pixels 0..255 are divided by 255; float pixels
    must already lie in [0, 1]; [N, H, W] gains a channel axis.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise DataError(
            f"{where}: images have shape {images.shape}; expected [N, H, W] or "
            "[N, H, W, C] (each example 2-D or 3-D)"
        )
    if len(images) == 0:
        return images.astype(np.float32)
    if images.dtype == np.bool_:
        return images.astype(np.float32)
    if np.issubdtype(images.dtype, np.integer):
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise DataError(
                f"{where}: integer pixels range over [{low}, {high}]; expected "
                "0..255 (save them as uint8) or floats in [0, 1]"
            )
        return images.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{where}: images have dtype {images.dtype}; expected uint8 or float")
    images = images.astype(np.float32, copy=False)
    finite = np.isfinite(images)
    if not finite.all():
        bad = int(images.size - np.count_nonzero(finite))
        raise DataError(
            f"{where}: {bad} pixels are NaN or infinite; clean the data before training"
        )
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise DataError(
            f"{where}: float pixels range over [{low:g}, {high:g}], outside [0, 1]; "
            "scale them to [0, 1] (or store uint8 0..255)"
        )
    return images


def _as_labels(labels: Any, n: int, where: str) -> np.ndarray:
    """Validates labels against `n` images; None gives -1 everywhere. int32 [n]."""
    if labels is None:
        return np.full(n, -1, np.int32)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: labels have shape {labels.shape}; expected [N] class ids")
    if len(labels) != n:
        raise DataError(
            f"{where}: {n} images but {len(labels)} labels; the counts must match"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.array_equal(
            labels, np.round(labels)
        ):
            raise DataError(
                f"{where}: labels have dtype {labels.dtype}; expected integer class ids"
            )
    return labels.astype(np.int32)


# === IDX files ===


def read_idx(path: str | os.PathLike, *, magic: int | None = None) -> np.ndarray:
    """Reads an IDX file (gzip-compressed or raw) into a numpy array.

    Compression is decided by the gzip magic bytes 0x1f8b, not by the file
    name. The header (magic 0x0000TTNN: type TT, NN dims, then NN big-endian
    int32 sizes) is checked against the file length.

    Args:
        path: path. The IDX file.
        magic: int or None. Expected magic number, e.g. `IDX_IMAGES_MAGIC`
            (0x00000803, uint8 [N, H, W]) or `IDX_LABELS_MAGIC` (0x00000801).

    Returns:
        Array of the declared shape, in native byte order.

    Raises:
        DataError: unreadable, corrupt gzip, wrong magic or truncated file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    return _parse_idx(raw, str(path), magic)


def _parse_idx(raw: bytes, name: str, magic: int | None) -> np.ndarray:
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"{name} is a corrupt or truncated gzip file ({err}); "
                "download or copy it again"
            ) from err
    if len(raw) < 4:
        raise DataError(
            f"{name} is too short for an IDX header ({len(raw)} bytes); "
            "it is not an IDX file"
        )
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise DataError(
            f"{name} has IDX magic 0x{found:08x}, expected 0x{magic:08x}; "
            "check that this is the right file"
        )
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{name} has magic 0x{found:08x}, which is not an IDX header")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"{name} is truncated: expected a {header_size}-byte header, found {len(raw)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header declares"
        raise DataError(
            f"{name} is {problem}: header {shape} declares {expected} bytes, "
            f"found {len(raw)}; download or copy it again"
        )
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: Any, gzip: bool = True) -> None:
    """Writes an array as an IDX file, atomically (temp file + os.replace).

    Args:
        path: path. Destination; its name does not decide compression.
        array: array-like of dtype uint8, int8, int16, int32, float32 or
            float64 with at least one dimension (uint8 [N, H, W] images are
            magic 0x00000803, uint8 [N] labels 0x00000801).
        gzip: bool. Gzip-compress the file. Defaults to True.
    """
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0:
        raise DataError(
            f"cannot write {array.dtype} array of shape {array.shape} as IDX; "
            f"use one of {sorted(str(d) for d in _IDX_CODES)} with at least one dimension"
        )
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    payload = header + np.ascontiguousarray(array, _IDX_DTYPES[code]).tobytes()
    if gzip:
        payload = _gzip_compress(payload)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _gzip_compress(payload: bytes) -> bytes:
    # mtime=0 keeps the bytes reproducible for identical arrays.
    return gzip.compress(payload, compresslevel=6, mtime=0)


def _read_bundled() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The 5,000 packaged MNIST digits: uint8 [5000, 28, 28] and labels."""
    folder = importlib.resources.files("vae_tf").joinpath(*_BUNDLED_DIR)
    sums = {}
    for line in folder.joinpath("SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, filename = line.split()
            sums[filename] = digest
    arrays = []
    for filename, magic in (
        ("train-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC),
        ("train-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC),
    ):
        raw = folder.joinpath(filename).read_bytes()
        if hashlib.sha256(raw).hexdigest() != sums.get(filename):
            raise DataError(
                f"bundled file {filename} does not match its SHA256SUMS entry; "
                "the vae-tf installation is damaged, reinstall it"
            )
        arrays.append(_parse_idx(raw, f"bundled {filename}", magic))
    return {"train": (arrays[0], arrays[1])}


def _find_idx_file(directory: Path, key: str) -> Path | None:
    for stem in _IDX_NAMES[key]:
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def _read_idx_dir(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Reads train (and, when present, t10k) IDX images and labels from `directory`."""
    if not directory.is_dir():
        raise DataError(
            f"IDX directory {directory} does not exist; pass --data idx:DIR with a directory"
        )
    files = {key: _find_idx_file(directory, key) for key in _IDX_NAMES}
    if files["train_images"] is None:
        names = ", ".join(f"{n}[.gz]" for n in _IDX_NAMES["train_images"])
        raise DataError(f"no training images in {directory}; expected one of {names}")
    if files["test_images"] is None and files["test_labels"] is not None:
        raise DataError(
            f"{files['test_labels']} has no matching t10k images file in {directory}; "
            "add t10k-images-idx3-ubyte[.gz] or remove the labels"
        )
    out = {}
    for split, prefix in (("train", "train"), ("test", "test")):
        if files[f"{prefix}_images"] is None:
            continue
        images = read_idx(files[f"{prefix}_images"], magic=IDX_IMAGES_MAGIC)
        labels_path = files[f"{prefix}_labels"]
        labels = None
        if labels_path is not None:
            labels = read_idx(labels_path, magic=IDX_LABELS_MAGIC)
            if len(labels) != len(images):
                raise DataError(
                    f"{files[f'{prefix}_images']} holds {len(images)} images but "
                    f"{labels_path} holds {len(labels)} labels; the counts must match"
                )
        out[split] = (images, labels)
    return out


# === npz files ===


def _read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Reads `x_train`/`y_train` and optional `x_test`/`y_test` from a .npz file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as err:
        raise DataError(
            f"npz file {path} does not exist; pass --data npz:FILE with a .npz file"
        ) from err
    except (OSError, ValueError, zlib.error) as err:
        raise DataError(f"cannot read {path} as a .npz archive ({err})") from err
    if "x_train" not in arrays or ("y_test" in arrays and "x_test" not in arrays):
        raise DataError(
            f"{path} has keys {sorted(arrays)}; expected x_train (required), "
            f"y_train, x_test, y_test (optional): {', '.join(_NPZ_KEYS)}"
        )
    out = {"train": (arrays["x_train"], arrays.get("y_train"))}
    if "x_test" in arrays:
        out["test"] = (arrays["x_test"], arrays.get("y_test"))
    return out


# === TensorFlow Datasets ===


def _internet_reachable(
    host: tuple[str, int] = _TFDS_PROBE_HOST, timeout: float = _TFDS_PROBE_TIMEOUT_S
) -> bool:
    """Whether a TCP connection to `host` opens within `timeout` seconds."""
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def _read_tfds(
    name: str,
    data_dir: str | os.PathLike | None,
    manual_dir: str | os.PathLike | None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], int | None]:
    """Loads every split of a TFDS dataset as numpy arrays, plus its class count."""
    import tensorflow_datasets as tfds  # Slow to import; only tfds specs need it.

    data_dir = None if data_dir is None else os.fspath(Path(data_dir).expanduser())
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        base = name.split("/")[0].split(":")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DataError(
            f"unknown TFDS dataset {name!r}{hint} See "
            "https://www.tensorflow.org/datasets/catalog for names"
        ) from err
    except (ValueError, KeyError) as err:
        raise DataError(f"cannot open TFDS dataset {name!r}: {err}") from err

    # The offline probe runs only when download_and_prepare would really fetch:
    # not when the data is prepared, and not when it has been replaced (as
    # tfds.testing.mock_data does), since TFDS retries for minutes offline.
    genuine = (
        type(builder).download_and_prepare.__module__ == "tensorflow_datasets.core.dataset_builder"
    )
    manual_data_given = builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None and manual_dir is not None
    if genuine and not builder.is_prepared() and not manual_data_given:
        if not _internet_reachable():
            raise DataError(
                f"cannot download TFDS dataset {name!r}: no internet connection. "
                + _OFFLINE_SOURCES
            )
    download_config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(Path(manual_dir).expanduser())
    )
    try:
        builder.download_and_prepare(download_config=download_config)
    except Exception as err:  # TFDS raises many types; keep the cause chained.
        raise DataError(f"cannot prepare TFDS dataset {name!r}: {err}") from err

    features = builder.info.features
    if "image" not in features:
        raise DataError(
            f"TFDS dataset {name!r} has features {sorted(features.keys())}; "
            "expected an 'image' feature"
        )
    has_labels = "label" in features
    num_classes = getattr(features["label"], "num_classes", None) if has_labels else None
    # Without metadata (e.g. under mock_data) the split list is unknown: try
    # the two splits every image classification dataset has.
    available = set(builder.info.splits.keys()) or {"train", "test"}
    if "train" not in available:
        raise DataError(
            f"TFDS dataset {name!r} has splits {sorted(available)} but no 'train' split"
        )
    out = {}
    for split in ("train", "validation", "test"):
        if split not in available:
            continue
        # Chunks, not as_dataset(batch_size=-1): that sizes one batch from the
        # split metadata and aborts the process when the metadata is missing.
        images, labels = [], []
        for chunk in tfds.as_numpy(builder.as_dataset(split=split).batch(_TFDS_CHUNK)):
            images.append(chunk["image"])
            labels.append(chunk["label"] if has_labels else None)
        if not images:
            raise DataError(f"TFDS dataset {name!r} has an empty {split!r} split")
        out[split] = (
            np.concatenate(images),
            np.concatenate(labels) if has_labels else None,
        )
    return out, num_classes


# === Preprocessing and pipelines ===


def _check_preprocessing(preprocessing: str) -> None:
    if preprocessing not in PREPROCESSING:
        raise DataError(
            f"unknown preprocessing {preprocessing!r}; use one of {', '.join(PREPROCESSING)}"
        )


def _check_batch_size(batch_size: int) -> None:
    is_int = isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
    if not is_int or batch_size <= 0:
        raise DataError(f"batch size must be a positive integer, got {batch_size!r}")


def binarize(images: Any, seed: int) -> np.ndarray:
    """Static binarization: one Bernoulli(p=pixel) draw per pixel.

    Args:
        images: float array in [0, 1], any shape.
        seed: int. Seed of the numpy `Generator`; same seed, same draw.

    Returns:
        float32 array of 0/1 values, same shape as `images`.
    """
    images = np.asarray(images, np.float32)
    uniform = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
    return (uniform < images).astype(np.float32)


def eval_images(images: Any, preprocessing: str, seed: int = 0) -> np.ndarray:
    """The images evaluation splits use for a preprocessing mode.

    `dynamic` and `static` give one static binarization with `seed`, so every
    evaluation sees the same 0/1 images; `continuous` returns the images as
    float32 unchanged.

    Args:
        images: float array in [0, 1], e.g. [N, H, W, C].
        preprocessing: str. One of `PREPROCESSING`.
        seed: int. Binarization seed. Defaults to 0.

    Returns:
        float32 array, same shape as `images`.
    """
    _check_preprocessing(preprocessing)
    if preprocessing == "continuous":
        return np.asarray(images, np.float32)
    return binarize(images, seed)


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
) -> tf.data.Dataset:
    """Batches in-memory images into a `tf.data.Dataset`.

    Example indices are optionally shuffled (a new order every pass,
    reproducible from `seed`) and batched; each batch is then gathered from
    the whole in-memory array and preprocessed with one vectorized op. For
    `dynamic`, batch k of a pass draws with the k-th number of a
    `tf.data.Dataset.random(seed)` stream that is redrawn every pass: fresh
    0/1 images each epoch, the same sequence in every run with the same seed.

    Args:
        images: float array in [0, 1], [N, H, W, C].
        labels: int array [N].
        batch_size: int > 0. Images per batch.
        preprocessing: str. One of `PREPROCESSING`. Defaults to "dynamic".
        shuffle: bool. Shuffle the whole array each pass. Defaults to False.
        seed: int. Seed of the shuffle, the dynamic draws and the static
            binarization. Defaults to 0.
        drop_remainder: bool. Drop the last partial batch so every batch
            has shape [batch_size, ...]. Defaults to False.
        repeat: bool. Repeat forever. Defaults to False.

    Returns:
        Dataset of (images float32 [B, H, W, C], labels int32 [B]).
    """
    _check_preprocessing(preprocessing)
    _check_batch_size(batch_size)
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    if len(images) == 0:
        raise DataError("cannot build a pipeline from an empty dataset (0 images)")
    return _pipeline(
        images,
        labels,
        batch_size=batch_size,
        preprocessing=preprocessing,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        repeat=repeat,
    )


def _pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    preprocessing: str,
    shuffle: bool,
    seed: int,
    drop_remainder: bool,
    repeat: bool,
) -> tf.data.Dataset:
    """`make_pipeline` without the emptiness check (empty eval splits are allowed)."""
    if images.ndim != 4:
        raise DataError(f"images have shape {images.shape}; expected [N, H, W, C]")
    if labels.shape != (len(images),):
        raise DataError(
            f"{len(images)} images but labels of shape {labels.shape}; expected [{len(images)}]"
        )
    if drop_remainder and batch_size > len(images):
        raise DataError(
            f"batch size {batch_size} is larger than the {len(images)} images and "
            f"drop_remainder=True leaves no batch; use --batch-size <= {len(images)}"
        )
    if preprocessing == "static":
        images = binarize(images, seed)

    # Shuffling and batching indices, then gathering each batch from the whole
    # array in one op, is ~1.4x faster than slicing per example: per-element
    # work is a scalar, and the data stays in one in-memory tensor (no cache
    # needed).
    all_images, all_labels = tf.constant(images), tf.constant(labels)
    ds = tf.data.Dataset.range(len(images))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if preprocessing == "dynamic":
        draw_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draw_seeds))
    else:
        ds = ds.map(lambda index: (index, tf.constant(0, tf.int64)))
    binarize_draw = preprocessing == "dynamic"

    def gather(index: tf.Tensor, draw_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.gather(all_images, index)
        if binarize_draw:
            uniform = tf.random.stateless_uniform(tf.shape(batch), seed=tf.stack([draw_seed, 0]))
            batch = tf.cast(uniform < batch, tf.float32)
        return batch, tf.gather(all_labels, index)

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


# === Datasets ===


@dataclasses.dataclass
class Datasets:
    """Train/validation/test pipelines of one source.

    Args:
        train: Dataset of (float32 [B, H, W, C], int32 [B]); shuffled each
            epoch, every batch full (drop_remainder, fixed shapes for XLA and
            tf.distribute), preprocessed as requested.
        validation: Dataset of the validation split; not shuffled, last
            batch may be partial; images from `eval_images`. None when the
            split is empty (`validation_fraction=0`).
        test: Dataset of the test split, like `validation`.
        splits: Splits. The raw arrays.
        preprocessing: str. One of `PREPROCESSING`.
        batch_size: int. Images per batch.
        steps_per_epoch: int. Train batches per epoch (N_train // batch_size).
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    splits: Splits
    preprocessing: str
    batch_size: int
    steps_per_epoch: int


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
) -> Datasets:
    """Loads a source and builds its train/validation/test pipelines.

    Evaluation splits for `dynamic` and `static` are binarized once with
    `EVAL_BINARIZATION_SEED`, independent of `seed`, so runs with different
    seeds are scored on the same 0/1 images.

    Args:
        spec: str or DataSpec. See `DataSpec.parse`.
        batch_size: int > 0, at most the training split size. Defaults to 128.
        preprocessing: str. One of `PREPROCESSING`. Defaults to "dynamic".
        validation_fraction: float in [0, 1). See `load_splits`. Defaults to 0.1.
        test_fraction: float in [0, 1). See `load_splits`. Defaults to 0.1.
        split_seed: int. Seed of the held-out slice. Defaults to 0.
        seed: int. Seed of the train shuffle and binarization. Defaults to 0.
        data_dir: path. TFDS data directory.
        manual_dir: path. TFDS manual download directory.

    Returns:
        A `Datasets`.
    """
    _check_preprocessing(preprocessing)
    _check_batch_size(batch_size)
    splits = load_splits(
        spec,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        data_dir=data_dir,
        manual_dir=manual_dir,
    )
    n_train = len(splits.train_images)
    if batch_size > n_train:
        raise DataError(
            f"batch size {batch_size} is larger than the {n_train} training images; "
            f"use --batch-size <= {n_train}"
        )
    train = _pipeline(
        splits.train_images,
        splits.train_labels,
        batch_size=batch_size,
        preprocessing=preprocessing,
        shuffle=True,
        seed=seed,
        drop_remainder=True,
        repeat=False,
    )
    eval_mode = "continuous"  # Eval images are already in their final form.
    validation, test = (
        _pipeline(
            eval_images(images, preprocessing, EVAL_BINARIZATION_SEED),
            labels,
            batch_size=batch_size,
            preprocessing=eval_mode,
            shuffle=False,
            seed=seed,
            drop_remainder=False,
            repeat=False,
        )
        for images, labels in (
            (splits.validation_images, splits.validation_labels),
            (splits.test_images, splits.test_labels),
        )
    )
    return Datasets(
        train=train,
        validation=validation if len(splits.validation_images) else None,
        test=test,
        splits=splits,
        preprocessing=preprocessing,
        batch_size=batch_size,
        steps_per_epoch=n_train // batch_size,
    )
