"""MNIST's IDX file format: `read_idx` and `write_idx` (gzip-compressed or raw)."""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vae_tf.data.spec import DataError

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
