"""`images:DIR`: a folder of pictures, with the conventions of
`keras.utils.image_dataset_from_directory`.

- PNG, JPEG, BMP and GIF files (by extension, any case; a GIF's first frame). Hidden
  files and folders (names starting with ".") are ignored, and so are other files
  (counted in `Splits.notes`).
- Labels: when the images sit in subfolders, each subfolder of DIR is a class (label
  i is the i-th class name in sorted order; images anywhere below a class folder
  belong to it). Images directly in DIR, with no class folders, are unlabelled.
  Mixing the two is an error.
- Splits: `train/`, and optionally `validation/` and `test/`, subfolders of DIR are
  the source's own splits (each laid out as above, with the train split's classes);
  otherwise the whole folder is the training split and validation/test are held out.
- Shapes: every image must have the same size unless `ImageOptions.image_size`
  resizes them; channels are grey when every image is grey, else RGB, unless
  `ImageOptions.channels` says.

Files are listed and their headers read with Pillow when the source is opened (fast,
whatever the image size); pixels are decoded by TensorFlow (`tf.io.decode_image`) in
the `tf.data` pipeline. A file Pillow cannot identify, or TensorFlow cannot decode, is
an error naming it, or skipped and counted with `skip_bad_images`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from vae_tf.data.imageops import transform
from vae_tf.data.spec import DataError, ImageOptions
from vae_tf.data.splits import ArraySplit, StreamSplit

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_FOLDERS = ("train", "validation", "test")
# Pillow modes TensorFlow decodes to one (grey) or two (grey + alpha) channels.
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_SKIP_HINT = "remove it, or pass --skip-bad-images to skip unreadable files"


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_images(folder: Path) -> tuple[list[Path], int]:
    """Image files below `folder` (recursively, sorted, hidden entries skipped) and the
    number of other files."""
    images, others = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(files):
            if _is_hidden(name):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(Path(root) / name)
            else:
                others += 1
    return images, others


def _list_split(folder: Path, class_names: tuple[str, ...] | None, where: str):
    """(paths, labels, class names, other files) of one split folder."""
    entries = sorted((e for e in os.scandir(folder) if not _is_hidden(e.name)), key=lambda e: e.name)
    top_images = [Path(e.path) for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    others = sum(1 for e in entries if e.is_file() and not e.name.lower().endswith(IMAGE_EXTENSIONS))
    classes = {}
    for e in entries:
        if e.is_dir():
            files, other = _walk_images(Path(e.path))
            others += other
            if files:
                classes[e.name] = files
    if classes and top_images:
        raise DataError(
            f"{where} has images at its top level ({top_images[0].name}) and class folders "
            f"({', '.join(sorted(classes)[:3])}{', ...' if len(classes) > 3 else ''}); put every image in a "
            "class folder (labelled) or every image at the top level (unlabelled)"
        )
    if not classes:
        if class_names:
            raise DataError(
                f"{where} has no class folders but the train split has classes {', '.join(class_names)}; "
                "use the same class folders in every split"
            )
        return top_images, np.full(len(top_images), -1, np.int32), None, others
    if class_names is None:
        class_names = tuple(sorted(classes))
    unknown = sorted(set(classes) - set(class_names))
    if unknown:
        raise DataError(
            f"{where} has class folder(s) {', '.join(unknown)} that the train split lacks; "
            f"its classes are {', '.join(class_names)}"
        )
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = classes.get(name, [])
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, np.int32), class_names, others


def _read_headers(paths: list[Path], skip: bool) -> tuple[list[int], list[tuple[int, int, bool]]]:
    """Pillow header of every file: (kept indices, [(height, width, grey)]); a file
    Pillow cannot identify is an error, or skipped with `skip`."""
    from PIL import Image, UnidentifiedImageError

    kept, headers = [], []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                width, height = image.size
                grey = image.mode in _GREY_MODES and image.format != "GIF"
        except (UnidentifiedImageError, OSError, ValueError) as err:
            if skip:
                continue
            raise DataError(f"{path} is not a readable image ({err}); {_SKIP_HINT}") from None
        kept.append(i)
        headers.append((height, width, grey))
    return kept, headers


def decode_file(path: tf.Tensor, options: ImageOptions, channels: int, image_shape) -> tf.Tensor:
    """One image file -> uint8 `image_shape` (first frame of a GIF)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False, dtype=tf.uint8)
    return transform(image, options, channels, image_shape)


class FolderSplit(StreamSplit):
    """Image files decoded in the pipeline.

    Args:
        paths: str [N]. The files, in split order.
        labels: int32 [N].
        options: ImageOptions.
        channels: 1 or 3.
        image_shape: (H, W, C) after conversion.
        positions: see `StreamSplit`.
    """

    def __init__(self, paths, labels, options: ImageOptions, channels: int, image_shape, *, positions=None, name=""):
        self.paths = np.asarray(paths, dtype=object)
        self.all_labels = np.asarray(labels, np.int32)
        self.options, self.channels = options, channels
        super().__init__(
            self._read_all, len(self.paths), image_shape, positions=positions, name=name,
            read_subset=self._read_subset_files,
        )

    def select(self, indices: np.ndarray) -> FolderSplit:
        return FolderSplit(
            self.paths, self.all_labels, self.options, self.channels, self.image_shape,
            positions=self.positions[indices], name=self.name,
        )

    def _read_all(self) -> tf.data.Dataset:
        keys = tf.data.Dataset.from_tensor_slices(np.arange(self.total, dtype=np.int64))
        return self._read_subset_files(np.arange(self.total, dtype=np.int64), keys).map(
            lambda image, label, key: (image, label)
        )

    def _read_subset_files(self, positions: np.ndarray, keys: tf.data.Dataset, ignore_errors: bool = False) -> tf.data.Dataset:
        paths = tf.constant([str(p) for p in self.paths[positions]] or [""], tf.string)
        labels = tf.constant(self.all_labels[positions] if len(positions) else np.zeros(1, np.int32))
        options, channels, shape = self.options, self.channels, self.image_shape

        def read(key):
            return decode_file(tf.gather(paths, key), options, channels, shape), tf.gather(labels, key), key

        ds = keys.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.ignore_errors() if ignore_errors else ds

    def _decodable(self, keep_images: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Decodes every file once: (keys that decoded, in order; their uint8 pixels
        [n, H, W, C] filled into one preallocated array, or None)."""
        keys_ds = tf.data.Dataset.from_tensor_slices(np.arange(self.count, dtype=np.int64))
        ds = self._read_subset_files(self.positions, keys_ds, ignore_errors=True)
        if not keep_images:
            ds = ds.map(lambda image, label, key: (tf.zeros([0], tf.uint8), label, key))
        pixels = np.empty((self.count, *self.image_shape), np.uint8) if keep_images else None
        keys = np.empty(self.count, np.int64)
        filled = 0
        for image, _, key in ds.batch(256).as_numpy_iterator():
            keys[filled : filled + len(key)] = key
            if keep_images:
                pixels[filled : filled + len(key)] = image
            filled += len(key)
        return keys[:filled], (pixels[:filled] if keep_images else None)

    def _without_bad(self, good_keys: np.ndarray) -> tuple[np.ndarray, list[str]]:
        bad = np.setdiff1d(np.arange(self.count), good_keys)
        names = [str(self.paths[self.positions[k]]) for k in bad]
        if names and not self.options.skip_bad_images:
            detail = ""
            try:
                tf.io.decode_image(tf.io.read_file(names[0]), channels=0, expand_animations=False)
            except tf.errors.OpError as err:
                detail = f" ({err.message.splitlines()[0]})"
            more = f" ({len(names) - 1} more like it)" if len(names) > 1 else ""
            raise DataError(f"{names[0]} cannot be decoded{detail}{more}; {_SKIP_HINT}")
        return bad, names

    def verified(self) -> tuple[FolderSplit, int]:
        """This split after decoding every file once: (split without undecodable files,
        number skipped). Undecodable files are an error unless `skip_bad_images`."""
        good, _ = self._decodable(keep_images=False)
        bad, _ = self._without_bad(good)
        if len(bad) == 0:
            return self, 0
        return self.select(np.sort(good)), len(bad)

    def cached(self, progress=None) -> ArraySplit:
        return self.cached_counting()[0]

    def cached_counting(self) -> tuple[ArraySplit, int]:
        """This split decoded into memory (uint8): (ArraySplit, number of files skipped).
        Keys arrive in order (a deterministic map), so the pixels are never copied."""
        good, pixels = self._decodable(keep_images=True)
        bad, _ = self._without_bad(good)
        return ArraySplit(pixels, self.all_labels[self.positions[good]]), len(bad)


def read_folder(directory: Path, options: ImageOptions) -> tuple[dict[str, FolderSplit], tuple[str, ...] | None, list[str]]:
    """The splits of a folder of pictures.

    Returns:
        ({split name: FolderSplit}, class names or None, notes for the user).
    """
    where = f"images:{directory}"
    if not directory.is_dir():
        raise DataError(f"{directory} is not a folder; pass --data images:DIR with a folder of pictures")
    present = [name for name in SPLIT_FOLDERS if (directory / name).is_dir()]
    if present and "train" not in present:
        raise DataError(
            f"{where} has {'/, '.join(present)}/ but no train/ folder; add train/ "
            "(or rename the folders if they are classes)"
        )
    roots = {name: directory / name for name in present} if present else {"train": directory}

    listed, class_names, others = {}, None, 0
    for split in ("train", "validation", "test"):
        if split not in roots:
            continue
        paths, labels, names, other = _list_split(roots[split], class_names, f"images:{roots[split]}")
        if split == "train":
            class_names = names
        listed[split] = (paths, labels)
        others += other
    if not listed["train"][0]:
        kinds = "/".join(ext.lstrip(".").upper() for ext in IMAGE_EXTENSIONS)
        raise DataError(f"{where} holds no {kinds} images; point --data images:DIR at a folder of pictures")

    notes, skipped, headers = [], 0, {}
    for split, (paths, labels) in list(listed.items()):
        kept, heads = _read_headers(paths, options.skip_bad_images)
        skipped += len(paths) - len(kept)
        listed[split] = ([paths[i] for i in kept], labels[kept])
        headers[split] = heads
    all_heads = [(h, w, split, i) for split, heads in headers.items() for i, (h, w, _) in enumerate(heads)]
    if options.image_size is None:
        sizes = {}
        for h, w, split, i in all_heads:
            sizes.setdefault((h, w), listed[split][0][i])
            if len(sizes) > 1:
                (s1, p1), (s2, p2) = list(sizes.items())[:2]
                raise DataError(
                    f"images in {where} have different sizes: {p1} is {s1[0]}x{s1[1]} and {p2} is "
                    f"{s2[0]}x{s2[1]} (height x width); pass --image-size H,W to resize them all"
                )
        height, width = all_heads[0][:2]
    else:
        height, width = options.image_size
    all_grey = all(grey for heads in headers.values() for _, _, grey in heads)
    channels = options.channels or (1 if all_grey else 3)
    image_shape = (height, width, channels)
    if skipped:
        notes.append(f"skipped {skipped} file(s) that are not readable images")
    if others:
        notes.append(f"ignored {others} file(s) that are not {', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}")
    splits = {
        split: FolderSplit(paths, labels, options, channels, image_shape, name=f"images:{roots[split]}")
        for split, (paths, labels) in listed.items()
    }
    if splits["train"].count == 0:
        raise DataError(f"{where}: none of its images could be read; check the files")
    return splits, class_names, notes
