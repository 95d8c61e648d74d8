"""Point-to-point messages between processes of the job: the small interface the parameter server and
the backup-worker chief talk through, and its implementation on ``torch.distributed`` (c10d).

A message is a fixed header of ``HEADER`` int64 fields (the protocol decides their meaning) plus an
optional payload of raw bytes. Over c10d the header travels with tag 1 and the payload with tag 2, so
a receive "from any source" (which gloo supports) can only ever match a header; the payload is then
received from the sender that header came from. Sends are non-blocking (``isend``): a process never
waits for a peer to accept a message before receiving, so two processes sending to each other at the
same time cannot deadlock. ``torch.distributed.rpc`` is deliberately not used (maintenance mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

HEADER = 8
_HEADER_TAG, _PAYLOAD_TAG = 1, 2


@dataclass
class Message:
    src: int
    header: list[int]  # HEADER ints; the last one is the payload size in bytes
    payload: torch.Tensor | None  # flat uint8

    @property
    def kind(self) -> int:
        return self.header[0]


def to_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


class Transport:
    """What the protocols need; :class:`C10dTransport` is the implementation."""

    def send(self, dst: int, fields: Sequence[int], payload: torch.Tensor | None = None) -> int:
        """Queue a message (``fields``: up to HEADER-1 ints) and return the bytes it puts on the wire."""
        raise NotImplementedError

    def recv_any(self) -> Message:
        """The next message from any peer (blocks)."""
        raise NotImplementedError

    def recv_from(self, src: int) -> Message:
        """The next message from ``src`` (blocks)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Wait until every queued send has been delivered."""


class C10dTransport(Transport):
    """Messages over the default ``torch.distributed`` process group (gloo on CPU)."""

    def __init__(self) -> None:
        self._pending: list[tuple[dist.Work, torch.Tensor, torch.Tensor | None]] = []

    def send(self, dst: int, fields: Sequence[int], payload: torch.Tensor | None = None) -> int:
        if len(fields) > HEADER - 1:
            raise ValueError(f"a header holds at most {HEADER - 1} fields")
        body = None if payload is None else to_bytes(payload)
        size = 0 if body is None else body.numel()
        header = torch.zeros(HEADER, dtype=torch.int64)
        header[: len(fields)] = torch.tensor(list(fields), dtype=torch.int64)
        header[-1] = size
        self._pending.append((dist.isend(header, dst, tag=_HEADER_TAG), header, None))
        if body is not None and size:
            self._pending.append((dist.isend(body, dst, tag=_PAYLOAD_TAG), body, None))
        self._reap()
        return HEADER * 8 + size

    def _receive_payload(self, src: int, header: torch.Tensor) -> Message:
        size = int(header[-1])
        payload = None
        if size:
            payload = torch.empty(size, dtype=torch.uint8)
            dist.recv(payload, src, tag=_PAYLOAD_TAG)
        return Message(src, header.tolist(), payload)

    def recv_any(self) -> Message:
        header = torch.empty(HEADER, dtype=torch.int64)
        src = dist.recv(header, None, tag=_HEADER_TAG)
        return self._receive_payload(src, header)

    def recv_from(self, src: int) -> Message:
        header = torch.empty(HEADER, dtype=torch.int64)
        dist.recv(header, src, tag=_HEADER_TAG)
        return self._receive_payload(src, header)

    def _reap(self) -> None:
        """Forget sends that have completed (their buffers must live until then)."""
        if len(self._pending) > 16:
            self._pending = [p for p in self._pending if not p[0].is_completed()]

    def flush(self) -> None:
        for work, _, _ in self._pending:
            work.wait()
        self._pending.clear()
