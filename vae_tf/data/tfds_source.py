"""`tfds:NAME`: a TensorFlow Datasets dataset, streamed from TFDS's own files.

The dataset is prepared once (downloaded unless already in `data_dir`); its splits are
then read with `builder.as_dataset` in a fixed order (no shuffled files, so that the
held-out slices and the seeded shuffle are reproducible), decoded in the pipeline and
never concatenated into memory unless the pipeline caches them.
"""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path

import numpy as np
import tensorflow as tf

from vae_tf.data.imageops import transform
from vae_tf.data.spec import DataError, ImageOptions
from vae_tf.data.splits import StreamSplit

_TFDS_PROBE_HOST = ("storage.googleapis.com", 443)
_TFDS_PROBE_TIMEOUT_S = 3.0
_OFFLINE_SOURCES = (
    "Use the bundled digits (--data bundled), an IDX directory (--data idx:DIR), "
    "a .npz file (--data npz:FILE) or a folder of pictures (--data images:DIR), or "
    "prepare the dataset on a machine with internet and pass --data-dir"
)


def _internet_reachable(
    host: tuple[str, int] = _TFDS_PROBE_HOST, timeout: float = _TFDS_PROBE_TIMEOUT_S
) -> bool:
    """Whether a TCP connection to `host` opens within `timeout` seconds."""
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def read_tfds(
    name: str,
    data_dir: str | os.PathLike | None,
    manual_dir: str | os.PathLike | None,
    options: ImageOptions,
) -> tuple[dict[str, StreamSplit], int | None, tuple[str, ...] | None]:
    """The splits of a TFDS dataset as `StreamSplit`s, its class count and class names."""
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
    class_names = getattr(features["label"], "names", None) if has_labels else None
    # Without metadata (e.g. under mock_data) the split list is unknown: try
    # the two splits every image classification dataset has.
    available = set(builder.info.splits.keys()) or {"train", "test"}
    if "train" not in available:
        raise DataError(
            f"TFDS dataset {name!r} has splits {sorted(available)} but no 'train' split"
        )
    stored = tuple(features["image"].shape)
    channels = options.channels or (stored[-1] if stored and stored[-1] in (1, 3) else 3)
    if options.image_size is not None:
        height, width = options.image_size
    elif len(stored) == 3 and stored[0] and stored[1]:
        height, width = stored[:2]
    else:
        raise DataError(
            f"TFDS dataset {name!r} has images of varying size {stored}; pass --image-size H,W"
        )
    image_shape = (int(height), int(width), int(channels))

    def reader(split: str):
        def read() -> tf.data.Dataset:
            ds = builder.as_dataset(split=split, shuffle_files=False)

            def element(example):
                label = tf.cast(example["label"], tf.int32) if has_labels else tf.constant(-1, tf.int32)
                return transform(example["image"], options, channels, image_shape), label

            return ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        return read

    out = {}
    for split in ("train", "validation", "test"):
        if split not in available:
            continue
        read = reader(split)
        count = _split_size(builder, split, read)
        if count == 0:
            raise DataError(f"TFDS dataset {name!r} has an empty {split!r} split")
        out[split] = StreamSplit(read, count, image_shape, name=f"tfds:{name} ({split})")
    return out, num_classes, tuple(class_names) if class_names else None


def _split_size(builder, split: str, read) -> int:
    """Examples in a split: TFDS's metadata, else (no metadata, as under
    `tfds.testing.mock_data`) counted by reading the split once."""
    try:
        count = int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError, TypeError):
        count = 0
    if count > 0:
        return count
    return int(read().reduce(np.int64(0), lambda n, _: n + 1).numpy())
