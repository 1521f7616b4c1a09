"""Data: sources -> splits -> `tf.data` pipelines.

Five sources, named by a spec string (`DataSpec.parse`):

- `bundled`: 5,000 MNIST training digits shipped as package data (offline).
- `idx:DIR`: a directory of MNIST-style IDX files, gzip-compressed or raw.
- `npz:FILE`: a NumPy archive with `x_train` (and optionally `y_train`, `x_test`,
  `y_test`).
- `images:DIR`: a folder of PNG/JPEG/BMP/GIF pictures, class subfolders and
  train/validation/test subfolders as in `keras.utils.image_dataset_from_directory`.
- `tfds:NAME`: a TensorFlow Datasets name such as `mnist`, `fashion_mnist` or
  `cifar10` (downloads unless already prepared in `data_dir`).

The modules, in the order data flows through them:

- `spec`: `DataSpec` (where), `ImageOptions` (size, channels, bad files), `DataError`.
- `arrays`, `idx`, `folders`, `tfds_source`: read each kind of source.
- `splits`: `Split` (in memory or streamed), `Splits`, the held-out slices.
- `sources`: `load_splits`, any spec -> `Splits`.
- `imageops`, `preprocessing`: per-image conversions; 8-bit -> [0, 1] and binarization.
- `pipeline`: `load_datasets`, `make_pipeline`: batched `tf.data.Dataset`s.
"""

from vae_tf.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx, write_idx
from vae_tf.data.pipeline import (
    AUTO_CACHE_BYTES,
    CACHE_MODES,
    Datasets,
    eval_pipeline,
    load_datasets,
    make_pipeline,
    split_pipeline,
)
from vae_tf.data.preprocessing import EVAL_BINARIZATION_SEED, PREPROCESSING, binarize, eval_images
from vae_tf.data.sources import load_splits
from vae_tf.data.spec import SPEC_FORMS, SPEC_KINDS, DataError, DataSpec, ImageOptions
from vae_tf.data.splits import ArraySplit, Split, Splits, StreamSplit

__all__ = [
    "AUTO_CACHE_BYTES", "CACHE_MODES", "EVAL_BINARIZATION_SEED", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC",
    "PREPROCESSING", "SPEC_FORMS", "SPEC_KINDS", "ArraySplit", "DataError", "DataSpec", "Datasets",
    "ImageOptions", "Split", "Splits", "StreamSplit", "binarize", "eval_images", "eval_pipeline",
    "load_datasets", "load_splits", "make_pipeline", "read_idx", "split_pipeline", "write_idx",
]
