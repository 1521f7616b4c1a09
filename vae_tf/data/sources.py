"""`load_splits`: any data spec -> its train/validation/test `Splits`."""

from __future__ import annotations

import os
from pathlib import Path

from vae_tf.data import arrays
from vae_tf.data.spec import DataError, DataSpec, ImageOptions
from vae_tf.data.splits import Splits, carve


def load_splits(
    spec: str | DataSpec,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    image_options: ImageOptions | None = None,
) -> Splits:
    """Opens a source and splits it three ways.

    In-memory sources (bundled, IDX, npz) are read into uint8 arrays (float32 for a
    float `.npz`); folders and TFDS datasets are listed, not read: their splits stream
    (see `Split`). A source's own validation and test splits are used as they are;
    otherwise slices of train are held out (`carve`): the bundled 5,000 digits give
    4,000 train, 500 validation and 500 test images with the defaults. The validation
    slice is the 500 digits every earlier version of vae-tf held out (and on which its
    defaults were chosen), the test slice 500 digits it never evaluated or tuned on.

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
        image_options: ImageOptions. Size, channels, bad files. Defaults to none.

    Returns:
        A `Splits`.
    """
    spec = DataSpec.parse(spec)
    options = image_options or ImageOptions()
    for name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:  # NaN fails too
            raise DataError(f"{name} must be in [0, 1), got {fraction}")
    class_names, notes = None, []
    if spec.kind == "images":
        from vae_tf.data.folders import read_folder

        source, class_names, notes = read_folder(Path(spec.location).expanduser(), options)
        num_classes = len(class_names) if class_names else None
    elif spec.kind == "tfds":
        from vae_tf.data.tfds_source import read_tfds

        source, num_classes, class_names = read_tfds(spec.location, data_dir, manual_dir, options)
    else:
        if spec.kind == "bundled":
            raw, num_classes = arrays.read_bundled(), 10
        elif spec.kind == "idx":
            raw, num_classes = arrays.read_idx_dir(Path(spec.location).expanduser()), None
        else:
            raw, num_classes = arrays.read_npz(Path(spec.location).expanduser()), None
        source = arrays.to_splits(raw, str(spec), options)
        if num_classes is None:
            labelled = [part.labels for part in source.values() if (part.labels >= 0).any()]
            num_classes = int(max(labels.max() for labels in labelled)) + 1 if labelled else None
    train, validation, test, has_test_split = carve(
        source, name=str(spec), validation_fraction=validation_fraction, test_fraction=test_fraction,
        split_seed=split_seed,
    )
    return Splits(
        train=train, validation=validation, test=test, image_shape=train.image_shape,
        num_classes=num_classes, has_test_split=has_test_split,
        class_names=tuple(class_names) if class_names else None, notes=tuple(notes),
    )

