"""Files of a run directory on a local disk or on any filesystem `tf.io.gfile` knows
(`gs://bucket/runs/mnist` on GCS, `ram://...` in memory, `hdfs://...`).

A path with a scheme (`NAME://`) goes through `tf.io.gfile`; a plain path uses `os`,
`open` and `shutil` as before, without importing TensorFlow. Object stores have no
atomic rename: there a "rename into place" is a copy and a delete, so a reader may see
a half-written file only if it reads while the writer renames.
"""

from __future__ import annotations

import hashlib
import os
import shutil


def is_local(path: str | os.PathLike) -> bool:
    """False for a URL such as gs://bucket/run or ram://run (read through tf.io.gfile)."""
    return "://" not in os.fspath(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def absolute(path: str | os.PathLike) -> str:
    """`os.path.abspath` of a local path; a URL unchanged."""
    path = os.fspath(path)
    return os.path.abspath(path) if is_local(path) else path


def exists(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return os.path.exists(path) if is_local(path) else _gfile().exists(path)


def isdir(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return os.path.isdir(path) if is_local(path) else _gfile().isdir(path)


def makedirs(path: str | os.PathLike) -> None:
    path = os.fspath(path)
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    else:
        _gfile().makedirs(path)


def rmtree(path: str | os.PathLike) -> None:
    """Removes a directory tree; nothing happens if it does not exist."""
    path = os.fspath(path)
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif _gfile().exists(path):
        import tensorflow as tf

        try:
            _gfile().rmtree(path)
        except tf.errors.NotFoundError:
            pass


def remove(path: str | os.PathLike) -> None:
    """Removes a file; nothing happens if it does not exist."""
    path = os.fspath(path)
    if is_local(path):
        if os.path.exists(path):
            os.remove(path)
    elif _gfile().exists(path):
        _gfile().remove(path)


def has_files(directory: str | os.PathLike) -> bool:
    """True when `directory` or a folder below it holds a file."""
    directory = os.fspath(directory)
    if is_local(directory):
        return any(files for _, _, files in os.walk(directory))
    return _gfile().isdir(directory) and any(files for _, _, files in _gfile().walk(directory))


def open_file(path: str | os.PathLike, mode: str = "r", newline: str | None = None):
    """`open(path, mode, newline=newline)` for a local path, a `tf.io.gfile.GFile`
    (which never translates newlines) otherwise."""
    path = os.fspath(path)
    if is_local(path):
        return open(path, mode) if "b" in mode else open(path, mode, newline=newline)
    return _gfile().GFile(path, mode)


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Renames the file `src` to `dst`, replacing `dst` (`os.replace` locally)."""
    src, dst = os.fspath(src), os.fspath(dst)
    if is_local(dst):
        os.replace(src, dst)
    else:
        _gfile().rename(src, dst, overwrite=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it into place."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open_file(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        replace(tmp, path)
    except BaseException:  # an error or Ctrl-C leaves no temporary file behind
        remove(tmp)
        raise


def replace_directory(src: str | os.PathLike, dst: str | os.PathLike, last_suffix: str = "") -> None:
    """Moves the directory `src` to `dst`, replacing `dst`.

    Locally one `os.replace`. gfile filesystems cannot rename a directory reliably (GCS
    has no directories, and `ram://` drops the files of a renamed directory), so there
    the files move one by one, those ending in `last_suffix` last (a checkpoint's
    `.index`, which readers check for, so that it appears only once the data is there).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if is_local(dst):
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.replace(src, dst)
        return
    gfile = _gfile()
    rmtree(dst)
    gfile.makedirs(dst)
    names = gfile.listdir(src)
    for name in sorted(names, key=lambda n: bool(last_suffix) and n.rstrip("/").endswith(last_suffix)):
        name = name.rstrip("/")
        if gfile.isdir(os.path.join(src, name)):
            replace_directory(os.path.join(src, name), os.path.join(dst, name))
        else:
            gfile.rename(os.path.join(src, name), os.path.join(dst, name), overwrite=True)
    rmtree(src)


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
