"""IDX reading/writing and the MNIST loader, on small files written to tmp_path."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from escala.data import DataSplit, TensorData, load_dataset, read_idx, write_idx
from escala.data.idx import load_mnist
from escala.errors import UserError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _array(dtype, shape=(3, 4, 5)) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    array = _array(dtype)
    path = tmp_path / f"data-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


@pytest.mark.parametrize("shape", [(7,), (2, 3), (1, 2, 3, 4)])
def test_round_trip_ranks(tmp_path, shape):
    array = _array(np.int16, shape)
    write_idx(tmp_path / "a", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)


def test_file_layout_is_big_endian(tmp_path):
    write_idx(tmp_path / "a", np.array([[1, 258]], dtype=np.int16))
    assert (tmp_path / "a").read_bytes() == bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 1, 2])


def test_gzip_detected_by_magic_not_name(tmp_path):
    array = _array(np.uint8)
    write_idx(tmp_path / "x.gz", array)
    renamed = tmp_path / "no-suffix"
    renamed.write_bytes((tmp_path / "x.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(renamed), array)


def test_write_accepts_tensor_and_rejects_bad_dtype(tmp_path):
    write_idx(tmp_path / "t", torch.arange(6, dtype=torch.int32).reshape(2, 3))
    np.testing.assert_array_equal(read_idx(tmp_path / "t"), np.arange(6).reshape(2, 3))
    with pytest.raises(UserError, match="int64"):
        write_idx(tmp_path / "bad", np.arange(3, dtype=np.int64))


# ---------------------------------------------------------------- corrupt files


def _valid_bytes() -> bytes:
    # ubyte, dims (2, 3): 4 + 8 header bytes + 6 data bytes = 18.
    return bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + bytes(range(6))


def test_truncated_file(tmp_path):
    path = tmp_path / "short-idx"
    path.write_bytes(_valid_bytes()[:-2])
    with pytest.raises(UserError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "18 bytes" in str(info.value) and "16 bytes" in str(info.value)


def test_truncated_header(tmp_path):
    path = tmp_path / "tiny-idx"
    path.write_bytes(_valid_bytes()[:6])
    with pytest.raises(UserError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "long-idx"
    path.write_bytes(_valid_bytes() + b"\x00\x00\x00")
    with pytest.raises(UserError, match="trailing") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "18 bytes" in str(info.value) and "21 bytes" in str(info.value)


def test_trailing_bytes_inside_gzip(tmp_path):
    path = tmp_path / "long-idx.gz"
    path.write_bytes(gzip.compress(_valid_bytes() + b"\x01"))
    with pytest.raises(UserError, match="after gunzip") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "19 bytes" in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(bytes(range(256)) * 40)[:-30])
    with pytest.raises(UserError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_bad_magic(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"PK\x03\x04" + _valid_bytes()[4:])
    with pytest.raises(UserError, match="not an IDX file") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_bad_type_code(tmp_path):
    path = tmp_path / "code-idx"
    path.write_bytes(bytes([0, 0, 0x07, 2]) + _valid_bytes()[4:])
    with pytest.raises(UserError, match="0x07") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "0x08 ubyte" in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nothing-here"
    with pytest.raises(UserError, match="does not exist") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- MNIST


def _write_mnist(
    directory, n_train=20, n_test=10, size=(28, 28), gz=False, dotted=False
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, *size), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, *size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        if dotted:
            name = name.replace("-idx", ".idx")
        write_idx(directory / (name + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize(("gz", "dotted"), [(False, False), (True, False), (False, True), (True, True)])
def test_load_mnist(tmp_path, gz, dotted):
    arrays = _write_mnist(tmp_path, gz=gz, dotted=dotted)
    split = load_mnist(str(tmp_path))
    assert isinstance(split, DataSplit) and split.name == "mnist"
    assert split.input_shape == (1, 28, 28) and split.num_classes == 10
    assert isinstance(split.train, TensorData) and len(split.train) == 20 and len(split.val) == 10
    assert split.train.x.dtype == torch.float32 and split.train.x.shape == (20, 1, 28, 28)
    assert split.val.y.dtype == torch.int64
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().div(255).unsqueeze(1)
    assert torch.equal(split.val.x, expected)
    assert split.train.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert split.val.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert 0.0 <= float(split.train.x.min()) and float(split.train.x.max()) <= 1.0


def test_load_mnist_other_image_size_and_registry(tmp_path):
    _write_mnist(tmp_path, size=(12, 9))
    split = load_dataset("mnist", str(tmp_path))
    assert split.input_shape == (1, 12, 9)


def test_mnist_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="does not exist") as info:
        load_mnist(str(missing))
    assert str(missing) in str(info.value)


def test_mnist_missing_file_named(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte") as info:
        load_mnist(str(tmp_path))
    assert str(tmp_path) in str(info.value)
    assert "train-images" not in str(info.value)


def test_mnist_count_mismatch(tmp_path):
    _write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    with pytest.raises(UserError, match="19 labels") as info:
        load_mnist(str(tmp_path))
    assert str(tmp_path / "train-labels-idx1-ubyte") in str(info.value)
    assert "20 images" in str(info.value)


def test_mnist_label_out_of_range(tmp_path):
    _write_mnist(tmp_path)
    labels = np.zeros(10, dtype=np.uint8)
    labels[3] = 10
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(UserError, match="label 10") as info:
        load_mnist(str(tmp_path))
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in str(info.value)


@pytest.mark.parametrize(
    ("name", "array", "needed"),
    [
        ("train-images-idx3-ubyte", np.zeros((20, 28, 28), dtype=np.int16), "3-d ubyte"),
        ("train-images-idx3-ubyte", np.zeros((20, 784), dtype=np.uint8), "3-d ubyte"),
        ("train-labels-idx1-ubyte", np.zeros((20, 1), dtype=np.uint8), "1-d ubyte"),
    ],
)
def test_mnist_wrong_kind_of_file(tmp_path, name, array, needed):
    _write_mnist(tmp_path)
    write_idx(tmp_path / name, array)
    with pytest.raises(UserError, match=needed) as info:
        load_mnist(str(tmp_path))
    assert str(tmp_path / name) in str(info.value)


def test_mnist_truncated_file_named(tmp_path):
    _write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((20, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    # The raw spelling wins over the .gz one, and its truncation is reported with its name.
    with pytest.raises(UserError, match="truncated") as info:
        load_mnist(str(tmp_path))
    assert str(path) in str(info.value)
