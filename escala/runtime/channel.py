"""A question from a spawned worker to the launching process, and the answer it waits for.

A multi-process run reports each epoch to a callback that lives in the launching process (a search
trial's reporter): rank 0 puts the epoch's record on ``requests`` and blocks on ``answers``, while the
launcher, in :func:`escala.runtime.spawn.spawn_workers`' join loop, takes the record, calls the handler
and puts its answer back. Both queues come from the spawn context and reach the workers as spawn
arguments. The wait is bounded: a launcher that never answers fails the worker with one line, it
does not hang it.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


class Channel:
    """``ask(message, timeout_s)`` in a worker; ``serve(wait_s)`` in the launcher calls ``handler``."""

    def __init__(self, handler: Callable[[Any], Any]):
        spawn_ctx = mp.get_context("spawn")
        self.requests = spawn_ctx.Queue()
        self.answers = spawn_ctx.Queue()
        self.handler = handler  # launcher side only: not sent to the workers

    def __getstate__(self) -> dict[str, Any]:
        return {"requests": self.requests, "answers": self.answers, "handler": None}

    def ask(self, message: Any, timeout_s: float) -> Any:
        """Send ``message`` to the launcher and return its answer (worker side)."""
        self.requests.put(message)
        try:
            return self.answers.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"the launching process did not answer within {timeout_s:g} s") from None

    def serve(self, wait_s: float) -> bool:
        """Answer one waiting message, waiting up to ``wait_s`` for it; False if none came (launcher side)."""
        try:
            message = self.requests.get(timeout=wait_s)
        except queue.Empty:
            return False
        self.answers.put(self.handler(message))
        return True

    def close(self) -> None:
        for q in (self.requests, self.answers):
            q.close()
            q.cancel_join_thread()
