"""The compressed model file (``.escz``): what Deep Compression stores, reloading to the same model.

Layout: ``b"ESCZ"``, a format version (uint16), the length of the header (uint32), the header (zlib-
compressed JSON: the model's build arguments, layer shapes and one record per state tensor) and the
payload chunks the records point at. Per weight layer the file holds, as the recipe asks:

* **values**: float32 weights, or ``b``-bit indices into a per-layer codebook (weight sharing; the
  codebook's ``2^b - 1`` float32 centroids follow, code 0 being the zero of pruned weights);
* **positions**: none (dense: every entry in row-major order) or the *relative* index of Deep
  Compression (sec. 2): each stored entry records the gap to the previous one in ``index_bits`` bits;
  a gap too large for that field is bridged by filler entries whose value is zero;
* **Huffman** coding (sec. 4) of the index stream and of the gap stream, each with its own canonical
  code, or fixed-width bit fields.

Dense or sparse is chosen per layer by which is smaller. Every other tensor (biases, BatchNorm
statistics) is stored raw. Decoding rebuilds the exact float32 tensors, so :func:`load_compressed`
returns a dense model whose state equals, bit for bit, the model that was written.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from escala.compress.huffman import huffman_decode, huffman_encode
from escala.compress.structured import layer_shapes, reshape_layers
from escala.compress.targets import weight_layers
from escala.errors import UserError

MAGIC = b"ESCZ"
VERSION = 1


# -- bit fields ------------------------------------------------------------------------------------
def pack_fixed(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative ints into ``width``-bit big-endian fields."""
    values = np.asarray(values, dtype=np.int64)
    bits = (values[:, None] >> np.arange(width - 1, -1, -1)[None, :]) & 1
    return np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()


def unpack_fixed(data: bytes, width: int, count: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * width].astype(np.int64)
    return (bits.reshape(count, width) << np.arange(width - 1, -1, -1)[None, :]).sum(axis=1)


def _lengths_bytes(lengths: np.ndarray) -> bytes:
    """A canonical code table: the code length of each symbol, trimmed after the last present one."""
    used = np.flatnonzero(lengths)
    return lengths[: int(used.max()) + 1 if used.size else 0].astype(np.uint8).tobytes()


# -- one stream of symbols -------------------------------------------------------------------------
class _Writer:
    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def chunk(self, data: bytes) -> list[int]:
        offset = self.buf.tell()
        self.buf.write(data)
        return [offset, len(data)]


def _encode_symbols(w: _Writer, symbols: np.ndarray, width: int, huffman: bool) -> dict[str, Any]:
    fixed_bytes = (width * symbols.size + 7) // 8
    if huffman:
        data, lengths, nbits = huffman_encode(symbols, 1 << width)
        table = _lengths_bytes(lengths)
        # A short stream may not repay its code table; then fixed-width fields are kept (as deflate
        # falls back to stored blocks), so Huffman coding never makes a layer larger.
        if len(data) + len(table) < fixed_bytes:
            return {"huffman": True, "bits": nbits, "data": w.chunk(data), "table": w.chunk(table)}
    return {
        "huffman": False,
        "bits": width * symbols.size,
        "width": width,
        "data": w.chunk(pack_fixed(symbols, width)),
    }


def _decode_symbols(payload: memoryview, rec: dict[str, Any], count: int) -> np.ndarray:
    data = bytes(payload[rec["data"][0] : rec["data"][0] + rec["data"][1]])
    if rec["huffman"]:
        table = np.frombuffer(bytes(payload[rec["table"][0] : rec["table"][0] + rec["table"][1]]), np.uint8)
        return huffman_decode(data, table, count, rec["bits"])
    return unpack_fixed(data, rec["width"], count)


# -- one weight layer ------------------------------------------------------------------------------
def _relative_index(flat_nonzero: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(gaps, is_filler)`` of Deep Compression's relative index for the non-zero positions."""
    span = 1 << index_bits
    gaps = np.diff(flat_nonzero, prepend=-1) - 1
    fillers = gaps // span  # each filler advances ``span`` positions
    last_gap = gaps % span
    per_entry = fillers + 1
    out_gaps = np.full(int(per_entry.sum()), span - 1, dtype=np.int64)
    ends = np.cumsum(per_entry) - 1
    out_gaps[ends] = last_gap
    is_filler = np.ones(out_gaps.size, dtype=bool)
    is_filler[ends] = False
    return out_gaps, is_filler


def _encode_layer(
    w: _Writer,
    weight: torch.Tensor,
    book: tuple | None,
    bits: int,
    index_bits: int,
    huffman: bool,
    sparse: bool,
) -> dict[str, Any]:
    flat = weight.detach().cpu().reshape(-1)
    rec: dict[str, Any] = {"kind": "layer", "shape": list(weight.shape), "numel": flat.numel()}
    if book is not None:
        codes, table = book
        symbols = codes.cpu().reshape(-1).numpy().astype(np.int64)
        rec["codebook"] = w.chunk(table[1:].cpu().numpy().astype("<f4").tobytes())
        rec["codebook_size"] = int(table.numel())
    else:
        values = flat.numpy().astype("<f4")
    nonzero = np.flatnonzero((symbols != 0) if book is not None else (values != 0))
    if sparse:
        gaps, is_filler = _relative_index(nonzero, index_bits)
        order = np.cumsum(gaps + 1) - 1
        rec["entries"] = int(gaps.size)
        rec["index_bits"] = index_bits
        rec["gaps"] = _encode_symbols(w, gaps, index_bits, huffman)
        take = np.where(is_filler, 0, order)
        if book is not None:
            stored = np.where(is_filler, 0, symbols[take])
        else:
            stored_values = np.where(is_filler, np.float32(0), values[take]).astype("<f4")
    else:
        rec["entries"] = int(flat.numel())
        stored = symbols if book is not None else None
        stored_values = values if book is None else None
    if book is not None:
        rec["bits_per_code"] = bits
        rec["values"] = _encode_symbols(w, stored, bits, huffman)
    else:
        rec["values"] = {"float32": w.chunk(stored_values.tobytes())}
    rec["nonzero"] = int(nonzero.size)
    return rec


def _decode_layer(payload: memoryview, rec: dict[str, Any]) -> torch.Tensor:
    n, entries = rec["numel"], rec["entries"]
    if "codebook" in rec:
        off, ln = rec["codebook"]
        table = np.concatenate([[np.float32(0)], np.frombuffer(bytes(payload[off : off + ln]), "<f4")])
        stored = table[_decode_symbols(payload, rec["values"], entries)].astype(np.float32)
    else:
        off, ln = rec["values"]["float32"]
        stored = np.frombuffer(bytes(payload[off : off + ln]), "<f4")
    if "gaps" in rec:
        gaps = _decode_symbols(payload, rec["gaps"], entries)
        flat = np.zeros(n, dtype=np.float32)
        flat[np.cumsum(gaps + 1) - 1] = stored
    else:
        flat = np.array(stored, dtype=np.float32)
    return torch.from_numpy(flat.reshape(rec["shape"]).copy())


def _chunk_bytes(rec: dict[str, Any]) -> int:
    """Bytes of payload a layer record uses (values, gaps, code tables, codebook)."""
    total = 0
    for key in ("values", "gaps"):
        part = rec.get(key) or {}
        for sub in ("data", "table", "float32"):
            if sub in part:
                total += part[sub][1]
    if "codebook" in rec:
        total += rec["codebook"][1]
    return total


# -- the file --------------------------------------------------------------------------------------
AUTO_INDEX_BITS = range(2, 9)


def encode_model(
    model: nn.Module,
    books: dict[str, tuple] | None = None,
    bits: dict[str, int] | None = None,
    index_bits: int = 5,
    huffman: bool = False,
    allow_sparse: bool = True,
    index_bits_per_layer: dict[str, int] | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Header records and payload of ``model``'s state (``books``: codebooks from weight sharing).

    ``index_bits`` is the width of the relative sparse index, ``index_bits_per_layer`` overrides it per
    layer; 0 lets the encoder try widths 2-8 for the layer and keep the smallest encoding (the paper
    fixes it per layer: 5 bits for fc, 8 for conv layers). Each record stores its width, so the decoder
    needs no setting.
    """
    books, bits, per_layer = books or {}, bits or {}, index_bits_per_layer or {}
    layers = weight_layers(model)
    weight_keys = {f"{name}.weight": name for name in layers}
    w = _Writer()
    records = {}
    for key, tensor in model.state_dict().items():
        name = weight_keys.get(key)
        if name is None:
            arr = tensor.detach().cpu().contiguous()
            records[key] = {
                "kind": "raw",
                "dtype": str(arr.dtype).removeprefix("torch."),
                "shape": list(arr.shape),
                "data": w.chunk(arr.numpy().tobytes()),
            }
            continue
        book, b = books.get(name), bits.get(name, 0)
        width = per_layer.get(name, index_bits)
        options = [(False, 1)]
        if allow_sparse:
            options += [(True, k) for k in (AUTO_INDEX_BITS if width == 0 else [width])]
        best = None
        for sparse, k in options:  # keep whichever of dense and sparse storage is smaller
            rec = _encode_layer(_Writer(), tensor, book, b, k, huffman, sparse)
            if best is None or _chunk_bytes(rec) < _chunk_bytes(best[0]):
                best = (rec, sparse, k)
        records[key] = _encode_layer(w, tensor, book, b, best[2], huffman, best[1])
    return records, w.buf.getvalue()


def write_compressed(
    path: str | Path, model: nn.Module, build: dict[str, Any], extra: dict[str, Any] | None = None, **options
) -> dict[str, Any]:
    """Write ``model`` to ``path``; ``build`` holds the :func:`escala.models.build_model` arguments.

    ``options`` go to :func:`encode_model`. Returns the header (records give per-layer bit counts).
    """
    records, payload = encode_model(model, **options)
    header = {"build": build, "shapes": layer_shapes(model), "tensors": records, "extra": extra or {}}
    packed = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(MAGIC + struct.pack("<HI", VERSION, len(packed)) + packed + payload)
    tmp.replace(path)
    return header


def read_compressed(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The header and the decoded dense state dict of a ``.escz`` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"compressed model {path} does not exist")
    raw = path.read_bytes()
    if raw[:4] != MAGIC:
        raise UserError(f"{path} is not an escala compressed model (no ESCZ marker)")
    try:
        version, hlen = struct.unpack("<HI", raw[4:10])
        if version != VERSION:
            raise UserError(f"{path} has format version {version}; this escala reads {VERSION}")
        header = json.loads(zlib.decompress(raw[10 : 10 + hlen]))
        payload = memoryview(raw)[10 + hlen :]
        state = {}
        for key, rec in header["tensors"].items():
            if rec["kind"] == "raw":
                off, ln = rec["data"]
                arr = np.frombuffer(bytes(payload[off : off + ln]), dtype=np.dtype(rec["dtype"]))
                state[key] = torch.from_numpy(arr.reshape(rec["shape"]).copy())
            else:
                state[key] = _decode_layer(payload, rec)
    except (zlib.error, ValueError, KeyError, struct.error) as err:
        raise UserError(f"compressed model {path} is damaged: {err}") from None
    return header, state


def load_compressed(path: str | Path) -> nn.Module:
    """Rebuild the dense model stored in ``path`` (eval mode), identical to the one written."""
    from escala.models import build_model

    header, state = read_compressed(path)
    b = header["build"]
    model = build_model(
        b["model"], tuple(b["input_shape"]), b["num_classes"], hidden=tuple(b["hidden"]), dropout=b["dropout"]
    )
    reshape_layers(model, header["shapes"])
    model.load_state_dict(state, strict=True)
    return model.eval()
