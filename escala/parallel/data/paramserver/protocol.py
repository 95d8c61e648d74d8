"""What workers and parameter servers say to each other (over :mod:`escala.parallel.data.transport`).

Worker -> server header fields: ``[kind, read_version, clock, lr_bits]``:

* ``PULL``: send me your shard (reply ``PARAMS``);
* ``PUSH``: apply this gradient (payload: the codec's message for this shard), computed on your shard
  at ``read_version``, as my ``clock``-th push, with learning rate ``lr`` (its float64 bits); reply
  ``PARAMS`` once the staleness bound lets me go on;
* ``SNAPSHOT``: send your state for a checkpoint (reply ``STATE``: ``torch.save`` bytes);
* ``STATS``: send your staleness figures (reply ``STATE``);
* ``DONE``: this worker has finished; a server exits when every worker has.

Server -> worker: ``[PARAMS, version]`` + the shard as float32 bytes, or ``[STATE]`` + bytes.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import torch

PULL, PUSH, SNAPSHOT, STATS, DONE, PARAMS, STATE = range(1, 8)


def float_bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def bits_float(b: int) -> float:
    return struct.unpack("<d", struct.pack("<q", b))[0]


def pack_object(obj: Any) -> torch.Tensor:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def unpack_object(payload: torch.Tensor) -> Any:
    # weights_only: a peer's message can hold tensors and plain containers, never code.
    return torch.load(io.BytesIO(payload.numpy().tobytes()), weights_only=True)


def shard_ranges(numel: int, servers: int) -> list[tuple[int, int]]:
    """Split the flat parameter vector into ``servers`` contiguous ranges of (almost) equal size."""
    cuts = [round(s * numel / servers) for s in range(servers + 1)]
    return list(zip(cuts[:-1], cuts[1:]))
