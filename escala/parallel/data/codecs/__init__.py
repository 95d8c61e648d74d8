"""Gradient codecs (``--compress``): fp16, bf16, QSGD, top-k with error feedback.

``make_codec(config, seed)`` builds the codec a config names, or None for ``none``. Top-k always runs
inside error feedback; with SGD and ``topk_momentum_correction`` (the default) the error feedback also
carries the momentum (Deep Gradient Compression's momentum correction and masking), and
``topk_warmup_steps`` ramps the sent fraction down from 25% (DGC's sparsity warm-up).
"""

from __future__ import annotations

from escala.errors import UserError
from escala.parallel.data.codecs.base import Codec, Traffic, nbytes
from escala.parallel.data.codecs.cast import Cast, bf16, fp16
from escala.parallel.data.codecs.feedback import ErrorFeedback, without_momentum
from escala.parallel.data.codecs.qsgd import QSGD
from escala.parallel.data.codecs.topk import TopK

CODECS = ("none", "fp16", "bf16", "qsgd", "topk")


def build_codec(
    name: str,
    *,
    qsgd_bits: int = 4,
    qsgd_bucket: int = 512,
    topk_ratio: float = 0.01,
    topk_momentum: float = 0.0,
    topk_masking: bool = True,
    topk_warmup_steps: int = 0,
    seed: int = 0,
) -> Codec | None:
    """``topk_momentum`` > 0: momentum correction with that momentum (the optimizer must then step
    without momentum: :func:`without_momentum`); ``topk_masking``: momentum factor masking."""
    if name == "none":
        return None
    if name == "fp16":
        return fp16()
    if name == "bf16":
        return bf16()
    if name == "qsgd":
        return QSGD(qsgd_bits, qsgd_bucket, seed=seed)
    if name == "topk":
        return ErrorFeedback(TopK(topk_ratio, topk_warmup_steps), momentum=topk_momentum, masking=topk_masking)
    raise UserError(f"field 'compress' must be one of {', '.join(CODECS)}; got {name!r}")


def make_codec(config, seed: int = 0, momentum_correction: bool = True) -> Codec | None:
    """The codec ``config.compress`` names (None for ``none``); ``seed`` differs per worker.

    Momentum correction applies to top-k with the SGD optimizer when ``config.topk_momentum_correction``
    is on and the strategy can honour it (``momentum_correction``: every gradient it applies went
    through a worker's codec)."""
    correct = momentum_correction and config.topk_momentum_correction and config.optimizer == "sgd"
    return build_codec(
        config.compress,
        qsgd_bits=config.qsgd_bits,
        qsgd_bucket=config.qsgd_bucket,
        topk_ratio=config.topk_ratio,
        topk_momentum=config.momentum if correct else 0.0,
        topk_warmup_steps=config.topk_warmup_steps,
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
    "without_momentum",
]
