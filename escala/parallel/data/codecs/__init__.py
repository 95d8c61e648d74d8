"""Gradient codecs (``--compress``): fp16, bf16, QSGD, top-k with error feedback.

``make_codec(config, seed)`` builds the codec a config names, or None for ``none``.
"""

from __future__ import annotations

from escala.errors import UserError
from escala.parallel.data.codecs.base import Codec, Traffic, nbytes
from escala.parallel.data.codecs.cast import Cast, bf16, fp16
from escala.parallel.data.codecs.feedback import ErrorFeedback
from escala.parallel.data.codecs.qsgd import QSGD
from escala.parallel.data.codecs.topk import TopK

CODECS = ("none", "fp16", "bf16", "qsgd", "topk")


def build_codec(
    name: str, *, qsgd_bits: int = 4, qsgd_bucket: int = 512, topk_ratio: float = 0.01, seed: int = 0
) -> Codec | None:
    if name == "none":
        return None
    if name == "fp16":
        return fp16()
    if name == "bf16":
        return bf16()
    if name == "qsgd":
        return QSGD(qsgd_bits, qsgd_bucket, seed=seed)
    if name == "topk":
        return ErrorFeedback(TopK(topk_ratio))
    raise UserError(f"field 'compress' must be one of {', '.join(CODECS)}; got {name!r}")


def make_codec(config, seed: int = 0) -> Codec | None:
    """The codec ``config.compress`` names (None for ``none``); ``seed`` differs per worker."""
    return build_codec(
        config.compress,
        qsgd_bits=config.qsgd_bits,
        qsgd_bucket=config.qsgd_bucket,
        topk_ratio=config.topk_ratio,
        seed=seed,
    )


__all__ = [
    "CODECS",
    "QSGD",
    "Cast",
    "Codec",
    "ErrorFeedback",
    "TopK",
    "Traffic",
    "bf16",
    "build_codec",
    "fp16",
    "make_codec",
    "nbytes",
]
