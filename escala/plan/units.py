"""Quantities in cluster files: bytes, bandwidths, latencies and FLOP rates, with units spelled out.

Numbers are SI base units (bytes, bytes per second, seconds, FLOP per second). Strings may carry a
unit: ``"16GiB"``, ``"900GB/s"``, ``"10Gbit/s"`` (bits: divided by 8), ``"5us"``, ``"15.7TFLOPS"``.
Every parse error names the field and shows what is allowed.
"""

from __future__ import annotations

import re

from escala.errors import UserError

_SI = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}
_BIN = {"ki": 2.0**10, "mi": 2.0**20, "gi": 2.0**30, "ti": 2.0**40}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_NUM = r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*"


def _number(value, field: str, hint: str) -> float | None:
    if isinstance(value, bool):
        raise UserError(f"{field} = {value!r}: {hint}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise UserError(f"{field} = {value!r}: must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise UserError(f"{field} = {value!r}: {hint}")
    return None


def parse_bytes(value, field: str) -> float:
    """``16GiB``, ``16GB``, ``1.5e9`` -> bytes."""
    hint = 'give bytes, e.g. 17179869184, "16GiB" or "16GB"'
    n = _number(value, field, hint)
    if n is not None:
        return n
    m = re.fullmatch(_NUM + r"([a-zA-Z]*?)(i?)[bB]?\s*", value)
    prefix = (m.group(2).lower() + m.group(3)) if m else None
    if not m or (prefix not in _SI and prefix not in _BIN):
        raise UserError(f"{field} = {value!r}: {hint}")
    return float(m.group(1)) * (_SI.get(prefix) or _BIN[prefix])


def parse_bandwidth(value, field: str) -> float:
    """``"10Gbit/s"`` (bits), ``"25GB/s"`` (bytes), ``"12GiB/s"``, a number of bytes/s -> bytes/s."""
    hint = 'give bytes per second, e.g. 1.25e9, "10Gbit/s", "25GB/s" or "12GiB/s"'
    n = _number(value, field, hint)
    if n is not None:
        if n == 0:
            raise UserError(f"{field} = {value!r}: must be positive")
        return n
    m = re.fullmatch(_NUM + r"([kKmMgGtT]?)(i?)(bit|bps|b|B)(?:/s|ps)?\s*", value)
    if not m:
        raise UserError(f"{field} = {value!r}: {hint}")
    prefix = m.group(2).lower() + m.group(3)
    scale = _BIN[prefix] if m.group(3) else _SI[prefix]
    bits = m.group(4) in ("bit", "bps", "b")
    out = float(m.group(1)) * scale / (8 if bits else 1)
    if out == 0:
        raise UserError(f"{field} = {value!r}: must be positive")
    return out


def parse_seconds(value, field: str) -> float:
    """``"5us"``, ``"0.2ms"``, ``3e-5`` -> seconds."""
    hint = 'give seconds, e.g. 5e-6, "5us" or "0.2ms"'
    n = _number(value, field, hint)
    if n is not None:
        return n
    m = re.fullmatch(_NUM + r"(s|ms|us|µs|ns)\s*", value)
    if not m:
        raise UserError(f"{field} = {value!r}: {hint}")
    return float(m.group(1)) * _TIME[m.group(2)]


def parse_flops(value, field: str) -> float:
    """``"15.7TFLOPS"``, ``15.7e12`` -> FLOP/s."""
    hint = 'give FLOP per second, e.g. 15.7e12 or "15.7TFLOPS"'
    n = _number(value, field, hint)
    if n is not None:
        if n == 0:
            raise UserError(f"{field} = {value!r}: must be positive")
        return n
    m = re.fullmatch(_NUM + r"([kKmMgGtTpP]?)(?:FLOPS|FLOP/s|flops|flop/s)\s*", value)
    if not m or float(m.group(1)) == 0:
        raise UserError(f"{field} = {value!r}: {hint}")
    return float(m.group(1)) * _SI[m.group(2).lower()]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)
