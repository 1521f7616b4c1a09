"""In-memory sources: the bundled digits, a directory of IDX files, a `.npz` archive.

Each reader returns the source's own splits as arrays; `to_splits` validates them
(pixels 0..255 or [0, 1], labels per image) into `ArraySplit`s that keep 8-bit pixels
as uint8.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vae_tf.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, _parse_idx, read_idx
from vae_tf.data.imageops import transform_array
from vae_tf.data.spec import DataError, ImageOptions
from vae_tf.data.splits import ArraySplit

_BUNDLED_DIR = ("datasets", "mnist_5k")
_IDX_NAMES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def to_splits(
    raw: dict[str, tuple[Any, Any]], name: str, options: ImageOptions
) -> dict[str, ArraySplit]:
    """Validated `ArraySplit`s of a reader's arrays, with `options` applied; every split
    must share one image shape."""
    out = {}
    for split, (images, labels) in raw.items():
        where = f"{name} ({split} split)"
        images = as_pixels(images, where)
        labels = as_labels(labels, len(images), where)
        if not options.is_default and len(images):
            images = transform_array(images, options)
        out[split] = ArraySplit(images, labels)
    shape = out["train"].image_shape
    for split, part in out.items():
        if part.count and part.image_shape != shape:
            raise DataError(
                f"{name}: {split} images are {part.image_shape} but train images "
                f"are {shape}; all splits must share one image shape"
            )
    return out


def as_pixels(images: Any, where: str) -> np.ndarray:
    """Validates images and returns them as uint8 [N, H, W, C] (0..255) or float32
    [N, H, W, C] in [0, 1].

    Integer pixels must lie in 0..255 and become uint8 (kept 8-bit: divided by 255
    only when a batch is formed); booleans become 0 / 255; float pixels must already
    lie in [0, 1]; [N, H, W] gains a channel axis.
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
        return images.astype(np.uint8)
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(images.dtype, np.integer):
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise DataError(
                f"{where}: integer pixels range over [{low}, {high}]; expected "
                "0..255 (save them as uint8) or floats in [0, 1]"
            )
        return images.astype(np.uint8, copy=False)
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


def as_labels(labels: Any, n: int, where: str) -> np.ndarray:
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


# === The bundled digits, IDX directories ===


def read_bundled() -> dict[str, tuple[np.ndarray, np.ndarray]]:
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


def read_idx_dir(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
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


def read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
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
