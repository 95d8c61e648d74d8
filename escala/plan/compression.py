"""What a gradient codec changes in a step: bytes on the wire and the time to encode and decode.

Bytes come from escala's own codecs (:mod:`escala.parallel.data.codecs`): a sample gradient is encoded
and the wire size divided by its float32 size gives the ratio (fp16/bf16 0.5, 4-bit QSGD with 512-value
buckets about 1/7.9, top-k 1% with int32 indices 1/50).

Summable codecs (fp16, bf16) still ride on an all-reduce. QSGD and top-k messages cannot be added, so
workers all-gather them and each decodes the N messages it receives: their decode cost grows with N
(Alistarh et al., "QSGD", NeurIPS 2017, sec. 5, which also all-gathers; Lin et al., "Deep Gradient
Compression", ICLR 2018).

Time per element: on a measured device, escala's codec is timed here; otherwise it is a count of
memory passes over the float32 gradient at the device's memory bandwidth (the codecs are bandwidth
bound): fp16/bf16 read 4 + write 2 bytes; QSGD about 5 passes to encode (norm, random draw, quantise,
pack) and 3 to decode; top-k about 4 passes to select and 2 to scatter back.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from escala.errors import UserError
from escala.plan.cluster import Device

CODECS = ("none", "fp16", "bf16", "qsgd", "topk")
SUMMABLE = {"none", "fp16", "bf16"}
# bytes moved per float32 gradient element: (encode, decode)
PASSES = {"none": (0, 0), "fp16": (6, 6), "bf16": (6, 6), "qsgd": (20, 12), "topk": (16, 8)}


@lru_cache(maxsize=32)
def wire_ratio(name: str, qsgd_bits: int = 4, topk_ratio: float = 0.01) -> float:
    """Wire bytes / float32 bytes of codec ``name`` on a 64 Ki-element gradient."""
    from escala.parallel.data.codecs import build_codec, nbytes

    if name not in CODECS:
        raise UserError(f"codec {name!r} is unknown; choose one of {', '.join(CODECS)}")
    codec = build_codec(name, qsgd_bits=qsgd_bits, topk_ratio=topk_ratio)
    if codec is None:
        return 1.0
    g = torch.randn(2**16, generator=torch.Generator().manual_seed(0))
    return nbytes(codec.encode(g)) / (4.0 * g.numel())


def codec_seconds(
    name: str, elements: float, device: Device, momentum: float = 0.0, busy: int = 1
) -> tuple[float, float]:
    """(encode, decode of one message) seconds for a gradient of ``elements`` float32 values: memory
    passes at the device's bandwidth, or on a measured device escala's codec timed here (top-k with its
    momentum correction when the optimizer has momentum, as ``escala train`` runs it), with ``busy``
    processes of the node coding at once, in lockstep, as the workers of a synchronous step do (they
    share the memory bandwidth the codecs are bound by)."""
    if name == "none" or elements <= 0:
        return 0.0, 0.0
    enc, dec = PASSES[name]
    if device.measured and busy > 1:
        from escala.plan.calibrate_comm import codec_seconds_busy

        return codec_seconds_busy(name, int(elements), momentum, busy, device.threads)
    if device.measured:
        from escala.plan.calibrate import codec_seconds as measured

        return measured(name, int(elements), device.threads, momentum)
    return enc * elements / device.memory_bandwidth, dec * elements / device.memory_bandwidth
