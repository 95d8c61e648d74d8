"""The per-layer size table in the shape of Deep Compression's tables 2-5 (Han et al. 2016).

Columns: weights, weights kept after pruning (P), bits per stored weight after quantization (P+Q)
and after Huffman coding (P+Q+H), bits per sparse index at both stages, and the compressed size as a
fraction of the 32-bit dense layer at both stages. Every number is read from real encodings of the
layer (:func:`escala.compress.fileformat.encode_model` with and without Huffman coding), including
code tables, codebooks and filler entries, not estimated from formulas.
"""

from __future__ import annotations

from typing import Any

from escala.compress.fileformat import _chunk_bytes

HEADERS = [
    "layer",
    "weights",
    "weights % (P)",
    "weight bits (P+Q)",
    "weight bits (P+Q+H)",
    "index bits (P+Q)",
    "index bits (P+Q+H)",
    "compress rate (P+Q)",
    "compress rate (P+Q+H)",
]


def _bits(rec: dict[str, Any], key: str) -> float:
    part = rec.get(key)
    if not part:
        return 0.0
    if "float32" in part:
        return 32.0
    return part["bits"] / max(rec["entries"], 1)


def layer_rows(fixed: dict[str, Any], coded: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per weight layer from the header records of the fixed-width and the Huffman encoding."""
    rows = []
    tot = {
        "weights": 0,
        "nonzero": 0,
        "fixed": 0,
        "coded": 0,
        "wf": 0.0,
        "wc": 0.0,
        "if": 0.0,
        "ic": 0.0,
        "e": 0,
        "eh": 0,
    }
    for key, rec in fixed.items():
        if rec["kind"] != "layer":
            continue
        hrec = coded[key]
        n, dense_bytes = rec["numel"], rec["numel"] * 4
        row = {
            "layer": key.removesuffix(".weight"),
            "weights": n,
            "nonzero": rec["nonzero"],
            "density": rec["nonzero"] / n,
            "storage": "sparse" if "gaps" in rec else "dense",
            "weight_bits_pq": _bits(rec, "values"),
            "weight_bits_pqh": _bits(hrec, "values"),
            "index_bits_pq": _bits(rec, "gaps"),
            "index_bits_pqh": _bits(hrec, "gaps"),
            "bytes_pq": _chunk_bytes(rec),
            "bytes_pqh": _chunk_bytes(hrec),
            "rate_pq": _chunk_bytes(rec) / dense_bytes,
            "rate_pqh": _chunk_bytes(hrec) / dense_bytes,
        }
        rows.append(row)
        e = rec["entries"]
        tot["weights"] += n
        tot["nonzero"] += rec["nonzero"]
        tot["fixed"] += row["bytes_pq"]
        tot["coded"] += row["bytes_pqh"]
        tot["e"] += e
        tot["eh"] += hrec["entries"]
        tot["wf"] += row["weight_bits_pq"] * e
        tot["wc"] += row["weight_bits_pqh"] * hrec["entries"]
        tot["if"] += row["index_bits_pq"] * e
        tot["ic"] += row["index_bits_pqh"] * hrec["entries"]
    if rows:
        e, eh = max(tot["e"], 1), max(tot["eh"], 1)
        rows.append(
            {
                "layer": "total",
                "weights": tot["weights"],
                "nonzero": tot["nonzero"],
                "density": tot["nonzero"] / tot["weights"],
                "storage": "",
                "weight_bits_pq": tot["wf"] / e,
                "weight_bits_pqh": tot["wc"] / eh,
                "index_bits_pq": tot["if"] / e,
                "index_bits_pqh": tot["ic"] / eh,
                "bytes_pq": tot["fixed"],
                "bytes_pqh": tot["coded"],
                "rate_pq": tot["fixed"] / (4 * tot["weights"]),
                "rate_pqh": tot["coded"] / (4 * tot["weights"]),
            }
        )
    return rows


def _count(n: int) -> str:
    return f"{n / 1000:.1f}K" if n >= 1000 else str(n)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as markdown, percentages and ratios written the way the paper writes them."""
    from escala.bench.report import markdown_table

    body = []
    for r in rows:
        total = r["layer"] == "total"
        body.append(
            [
                r["layer"],
                _count(r["weights"]),
                f"{100 * r['density']:.1f}%" + (f" ({1 / max(r['density'], 1e-12):.0f}x)" if total else ""),
                f"{r['weight_bits_pq']:.1f}",
                f"{r['weight_bits_pqh']:.1f}",
                f"{r['index_bits_pq']:.1f}",
                f"{r['index_bits_pqh']:.1f}",
                f"{100 * r['rate_pq']:.2f}%" + (f" ({1 / r['rate_pq']:.0f}x)" if total else ""),
                f"{100 * r['rate_pqh']:.2f}%" + (f" ({1 / r['rate_pqh']:.0f}x)" if total else ""),
            ]
        )
    return markdown_table(HEADERS, body)
