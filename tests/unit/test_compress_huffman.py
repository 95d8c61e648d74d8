"""Huffman coding round-trips bit-exactly; the compressed file reloads to the identical model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from escala.compress.fileformat import (
    encode_model,
    load_compressed,
    pack_fixed,
    read_compressed,
    unpack_fixed,
    write_compressed,
)
from escala.compress.huffman import code_lengths, huffman_decode, huffman_encode
from escala.compress.prune import apply_masks, magnitude_masks, make_permanent
from escala.compress.share import apply_sharing, remove_sharing
from escala.compress.structured import thin
from escala.compress.targets import weight_layers
from escala.errors import UserError
from escala.models import build_model


@pytest.mark.parametrize(
    "alphabet,draw",
    [
        (2, lambda r: r.integers(0, 2, 5000)),
        (32, lambda r: np.minimum(r.geometric(0.3, 5000) - 1, 31)),
        (256, lambda r: r.integers(0, 256, 3000)),
        (65536, lambda r: r.integers(0, 65536, 4000)),
        (8, lambda r: np.full(100, 5)),
        (8, lambda r: np.zeros(0, dtype=np.int64)),
    ],
)
def test_round_trip_is_exact(alphabet, draw):
    symbols = draw(np.random.default_rng(0))
    data, lengths, nbits = huffman_encode(symbols, alphabet)
    assert lengths.max(initial=0) <= 16
    assert np.array_equal(huffman_decode(data, lengths, symbols.size, nbits), symbols)


def test_skewed_data_costs_its_entropy_not_its_width():
    rng = np.random.default_rng(1)
    p = 0.5 ** np.arange(1, 33)
    p /= p.sum()
    symbols = rng.choice(32, size=20000, p=p)
    _, _, nbits = huffman_encode(symbols, 32)
    counts = np.bincount(symbols, minlength=32)
    freq = counts[counts > 0] / symbols.size
    entropy = -(freq * np.log2(freq)).sum()
    assert entropy <= nbits / symbols.size < entropy + 1  # Huffman's optimality bound
    assert nbits / symbols.size < 5  # fixed width would be 5 bits


def test_lengths_are_capped_and_prefix_free():
    counts = np.array([2**i for i in range(30)])  # Fibonacci-like: unbounded Huffman would go 29 deep
    lengths = code_lengths(counts)
    assert lengths.max() <= 16
    assert (2.0 ** -lengths.astype(float)).sum() <= 1.0 + 1e-12  # Kraft inequality


def test_fixed_width_fields_round_trip():
    values = np.random.default_rng(2).integers(0, 2**11, 777)
    assert np.array_equal(unpack_fixed(pack_fixed(values, 11), 11, values.size), values)


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


BUILD = {"model": "lenet5", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [128, 64], "dropout": 0.0}


BUILD_LENET300 = {
    "model": "lenet300",
    "input_shape": [1, 8, 8],
    "num_classes": 10,
    "hidden": [],
    "dropout": 0.0,
}


@pytest.mark.parametrize(
    "prune,share,huffman,structured",
    [(0, 0, False, 0), (0.9, 0, False, 0), (0.9, 5, True, 0), (0.6, 3, True, 0.5), (0, 8, True, 0)],
)
def test_file_reloads_to_the_identical_model(tmp_path, prune, share, huffman, structured):
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 8, 8), 10)
    if structured:
        thin(model, structured)
    layers = weight_layers(model)
    if prune:
        apply_masks(model, magnitude_masks(layers, sparsity={n: prune for n in layers}))
        make_permanent(model)
    books, bits = {}, {}
    if share:
        bits = {n: share for n in layers}
        apply_sharing(model, bits)
        books = remove_sharing(model)
    path = tmp_path / "m.escz"
    write_compressed(path, model, BUILD, books=books, bits=bits, index_bits=4, huffman=huffman)
    again = load_compressed(path)
    mine, theirs = model.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(_bits_equal(mine[k], theirs[k]) for k in mine)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model.eval()(x), again(x))
    if prune or share:
        assert path.stat().st_size < sum(t.numel() * t.element_size() for t in mine.values()) / 2


def test_sparse_storage_uses_fillers_for_long_gaps(tmp_path):
    torch.manual_seed(0)
    model = build_model("mlp", (64,), 10, hidden=(100,))
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.weight[0, 0] = 1.0
        model.fc1.weight[99, 63] = -2.0  # 6399 positions later: far more than 2^3 - 1
    records, _ = encode_model(model, index_bits=3)
    rec = records["fc1.weight"]
    assert "gaps" in rec and rec["entries"] > rec["nonzero"] == 2
    path = tmp_path / "m.escz"
    write_compressed(
        path,
        model,
        {"model": "mlp", "input_shape": [64], "num_classes": 10, "hidden": [100], "dropout": 0.0},
        index_bits=3,
    )
    assert torch.equal(read_compressed(path)[1]["fc1.weight"], model.fc1.weight.detach())


def test_index_bits_chosen_per_layer(tmp_path):
    """index_bits=0 tries widths 2-8 per layer: never larger than any fixed width, reloads exactly."""
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 8, 8), 10)
    layers = weight_layers(model)
    apply_masks(model, magnitude_masks(layers, sparsity={"fc1": 0.92, "fc2": 0.97, "fc3": 0.74}))
    make_permanent(model)
    bits = {n: 5 for n in layers}
    apply_sharing(model, bits)
    books = remove_sharing(model)
    auto, payload = encode_model(model, books=books, bits=bits, index_bits=0, huffman=True)
    widths = {k: r["index_bits"] for k, r in auto.items() if "index_bits" in r}
    assert set(widths) == {"fc1.weight", "fc2.weight", "fc3.weight"} and len(set(widths.values())) > 1
    for fixed in (3, 5, 8):
        assert len(payload) <= len(
            encode_model(model, books=books, bits=bits, index_bits=fixed, huffman=True)[1]
        )
    per_layer, _ = encode_model(model, books=books, bits=bits, index_bits=5, index_bits_per_layer={"fc1": 7})
    assert per_layer["fc1.weight"]["index_bits"] == 7 and per_layer["fc2.weight"]["index_bits"] == 5
    path = tmp_path / "m.escz"
    write_compressed(path, model, BUILD_LENET300, books=books, bits=bits, index_bits=0, huffman=True)
    state = read_compressed(path)[1]
    assert all(_bits_equal(model.state_dict()[k], state[k]) for k in state)


def test_damaged_or_foreign_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "x.escz"
    bad.write_bytes(b"hello")
    with pytest.raises(UserError, match="not an escala compressed model"):
        read_compressed(bad)
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 8, 8), 10)
    good = tmp_path / "g.escz"
    write_compressed(good, model, BUILD)
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(UserError, match="damaged"):
        read_compressed(bad)
    with pytest.raises(UserError, match="does not exist"):
        read_compressed(tmp_path / "missing.escz")
