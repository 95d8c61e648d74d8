"""Reading and writing IDX files, and loading MNIST from them.

IDX is the format MNIST (and Fashion-MNIST, KMNIST, EMNIST) ships in: a 4-byte magic number
``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian uint32 dimension sizes, then the values
in big-endian row-major order. Downloads come gzipped, and browsers and tools often unpack them or
rename them, so the reader decides about gzip by the file's first bytes, not by its name.

Every check names the file: a data file that is subtly wrong (truncated download, the labels of one
set next to the images of another) must fail with a message that says which file to replace.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from escala.data.split import DataSplit
from escala.data.tensors import TensorData
from escala.errors import UserError

# Type code -> big-endian numpy dtype, as the IDX format defines them.
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_ALLOWED_CODES = ", ".join(f"0x{code:02X} {name}" for code, name in _CODE_NAMES.items())
_GZIP_MAGIC = b"\x1f\x8b"

PathLike = str | os.PathLike


def _code_for(dtype: np.dtype) -> int | None:
    """The IDX type code of a numpy dtype, ignoring byte order; None if IDX cannot store it."""
    for code, idx_dtype in _CODE_TO_DTYPE.items():
        if dtype.kind == idx_dtype.kind and dtype.itemsize == idx_dtype.itemsize:
            return code
    return None


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzipped, into a native-byte-order numpy array.

    Raises :class:`UserError` naming the file when it is missing, not IDX, or when its length
    does not match its header exactly (a truncated download, or two files concatenated).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"IDX file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"IDX file {path} is a directory, not a file") from None
    except OSError as exc:
        raise UserError(f"IDX file {path} cannot be read: {exc.strerror or exc}") from None

    gzipped = raw[:2] == _GZIP_MAGIC
    if gzipped:
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            # EOFError is what a truncated .gz download raises.
            raise UserError(f"IDX file {path} is a corrupt or truncated gzip file: {exc}") from None
    else:
        data = raw
    what = f"IDX file {path}" + (" (after gunzip)" if gzipped else "")

    if len(data) < 4:
        raise UserError(f"{what} is too short for an IDX header: {len(data)} bytes, expected at least 4")
    zero1, zero2, code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0:
        raise UserError(
            f"{what} is not an IDX file: magic number starts 0x{zero1:02X} 0x{zero2:02X}, expected 0x00 0x00"
        )
    if code not in _CODE_TO_DTYPE:
        raise UserError(f"{what} has unknown IDX type code 0x{code:02X}; allowed: {_ALLOWED_CODES}")

    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise UserError(
            f"{what} is truncated: its header of {ndim} dimensions needs {header_bytes} bytes, "
            f"the file has {len(data)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_bytes])
    dtype = _CODE_TO_DTYPE[code]
    expected = header_bytes + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says (trailing bytes)"
        raise UserError(
            f"{what} is {problem}: header dims {tuple(dims)} of {_CODE_NAMES[code]} need "
            f"{expected} bytes, the file has {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_bytes).reshape(dims)
    # Native byte order and a writable copy: torch.from_numpy rejects neither, and math is faster.
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: PathLike, array: np.ndarray | torch.Tensor) -> None:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends with ``.gz``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64. The bytes are big-endian as the
    format requires, and gzip output carries no timestamp so equal arrays give equal files.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    code = _code_for(array.dtype)
    if code is None:
        raise UserError(
            f"cannot write {path} as IDX: dtype {array.dtype} is not storable; "
            "allowed: uint8, int8, int16, int32, float32, float64"
        )
    if array.ndim > 255:
        raise UserError(f"cannot write {path} as IDX: {array.ndim} dimensions, at most 255 allowed")
    if any(d > 0xFFFFFFFF for d in array.shape):
        raise UserError(f"cannot write {path} as IDX: dimension sizes {array.shape} exceed 2**32 - 1")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    data = header + body
    path = Path(path)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


# The four MNIST files; each may also appear gzipped or with the dotted names some mirrors use.
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_CLASSES = 10


def _candidates(name: str) -> list[str]:
    """Accepted spellings of one MNIST file name, raw ones first."""
    dotted = name.replace("-idx", ".idx")
    return [name, dotted, name + ".gz", dotted + ".gz"]


def _find(directory: Path, name: str) -> Path:
    for candidate in _candidates(name):
        path = directory / candidate
        if path.is_file():
            return path
    spellings = ", ".join(_candidates(name)[1:])
    raise UserError(f"MNIST file {name} (or {spellings}) is missing from directory {directory}")


def _read_images(path: Path) -> np.ndarray:
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise UserError(
            f"MNIST image file {path} must hold 3-d ubyte data (count, height, width), "
            f"got {images.ndim}-d {images.dtype}"
        )
    if min(images.shape) == 0:
        raise UserError(f"MNIST image file {path} is empty: shape {images.shape}")
    return images


def _read_labels(path: Path, count: int, images_path: Path) -> np.ndarray:
    labels = read_idx(path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise UserError(
            f"MNIST label file {path} must hold 1-d ubyte data, got {labels.ndim}-d {labels.dtype}"
        )
    if labels.shape[0] != count:
        raise UserError(
            f"MNIST label file {path} has {labels.shape[0]} labels but image file "
            f"{images_path} has {count} images"
        )
    if labels.max() >= _MNIST_CLASSES:
        raise UserError(
            f"MNIST label file {path} holds label {int(labels.max())}; labels must be 0..{_MNIST_CLASSES - 1}"
        )
    return labels


def _tensors(images: np.ndarray, labels: np.ndarray) -> TensorData:
    # Add the channel dimension so MNIST and digits look alike to convolutional models.
    x = torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)
    return TensorData(x, torch.from_numpy(labels.astype(np.int64)))


def load_mnist(data_dir: PathLike) -> DataSplit:
    """Load MNIST (or any data set in its layout) from the four IDX files in ``data_dir``.

    The ``train-*`` files become the training set and the ``t10k-*`` files the validation set.
    Inputs are float32 in ``[0, 1]`` with shape ``(1, H, W)``, H and W taken from the files.
    """
    directory = Path(data_dir)
    if not directory.exists():
        raise UserError(f"MNIST data directory {directory} does not exist")
    if not directory.is_dir():
        raise UserError(f"MNIST data directory {directory} is not a directory")
    # Locate all four first, so a missing file is reported before minutes of reading the others.
    paths = {key: _find(directory, name) for key, name in _MNIST_FILES.items()}

    train_images = _read_images(paths["train_images"])
    val_images = _read_images(paths["val_images"])
    if train_images.shape[1:] != val_images.shape[1:]:
        raise UserError(
            f"MNIST image file {paths['val_images']} has {val_images.shape[1]}x{val_images.shape[2]} "
            f"images but {paths['train_images']} has {train_images.shape[1]}x{train_images.shape[2]}"
        )
    train_labels = _read_labels(paths["train_labels"], train_images.shape[0], paths["train_images"])
    val_labels = _read_labels(paths["val_labels"], val_images.shape[0], paths["val_images"])

    return DataSplit(
        name="mnist",
        train=_tensors(train_images, train_labels),
        val=_tensors(val_images, val_labels),
        input_shape=(1, *train_images.shape[1:]),
        num_classes=_MNIST_CLASSES,
    )
