"""Spawn local worker processes and watch them until they all finish or one fails.

``torch.multiprocessing.start_processes`` does the spawning; when any worker dies, its ``join`` stops
the others, so a dead worker ends the whole job rather than leaving its peers blocked in a
collective. This module turns what happened into one message that names the rank: a
:class:`UserError` raised inside a worker comes back as the same one-line :class:`UserError`, any
other failure as :class:`WorkerFailed`.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp

from escala.errors import UserError
from escala.runtime.channel import Channel
from escala.runtime.dist import init_worker, shutdown


class WorkerFailed(RuntimeError):
    """A worker process crashed or was killed; the message names its rank."""


def _entry(local_rank: int, fn: Callable, world: int, rendezvous: str, options: dict, args: tuple, errors) -> None:
    ctx = None
    try:
        ctx = init_worker(
            local_rank, world, local_rank, world, init_method=rendezvous, **options
        )
        fn(ctx, *args)
    except UserError as err:
        errors.put((local_rank, "user", str(err)))
        sys.exit(UserError.exit_code)
    except BaseException as err:  # noqa: BLE001 - report anything, then die as a failed worker
        if isinstance(err, SystemExit) and not err.code:
            raise
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        errors.put((local_rank, "crash", last))
        traceback.print_exc()
        sys.exit(1)
    finally:
        if ctx is not None:
            try:
                shutdown()
            except Exception:  # noqa: BLE001 - the group may already be broken; exiting matters more
                pass


def describe_exit(exit_code: int | None, exited: str = "") -> str:
    """How a child process ended, for a one-line message: 'was killed by SIGKILL' (negative exit
    codes are signals) or 'exited with status N' followed by ``exited``."""
    if exit_code is not None and exit_code < 0:
        try:
            return f"was killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"was killed by signal {-exit_code}"
    return f"exited with status {exit_code}{exited}"


def spawn_workers(
    fn: Callable,
    world_size: int,
    args: tuple = (),
    *,
    options: dict[str, Any] | None = None,
    poll_s: float = 0.5,
    channel: Channel | None = None,
) -> None:
    """Run ``fn(ctx, *args)`` in ``world_size`` fresh processes joined in one process group.

    ``options`` go to :func:`escala.runtime.dist.init_worker` (device, backend, timeout_s, threads).
    ``channel`` (also among ``args``, for the workers to ask through) is served here while the
    workers run: its handler runs in this process. Returns when all workers exited cleanly; raises
    :class:`UserError` or :class:`WorkerFailed`, or what the channel's handler raised.
    """
    if world_size < 1:
        raise UserError(f"workers must be >= 1, got {world_size}")
    spawn_ctx = mp.get_context("spawn")
    errors = spawn_ctx.SimpleQueue()
    # Rendezvous through a FileStore in a private directory: a free TCP port picked here could be taken by
    # another job before rank 0 binds it, a FileStore cannot be.
    store_dir = tempfile.mkdtemp(prefix="escala-rdzv-")
    rendezvous = f"file://{os.path.join(store_dir, 'store')}"
    # Workers split the cores among themselves; stop OpenMP in each from assuming it owns them all.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    procs = mp.start_processes(
        _entry,
        args=(fn, world_size, rendezvous, options or {}, args, errors),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    started = time.monotonic()
    try:
        while not _wait(procs, poll_s, channel):
            pass
    except mp.ProcessExitedException as exc:
        reports = _drain(errors)
        for _rank, kind, message in reports:
            if kind == "user":
                raise UserError(message) from None
        first = _first_failure(reports, exc.error_index)
        raise WorkerFailed(
            f"worker rank {exc.error_index} {describe_exit(exc.exit_code)} after {time.monotonic() - started:.1f}s"
            f"{first}; the other workers were stopped"
        ) from None
    except mp.ProcessRaisedException as exc:  # only when fn escaped our handler, kept for safety
        raise WorkerFailed(
            f"worker rank {exc.error_index} failed: {str(exc).strip().splitlines()[-1]}"
        ) from None
    except BaseException:  # the channel's handler failed here (or Ctrl-C): no worker outlives the job
        for p in procs.processes:
            if p.is_alive():
                p.kill()
            p.join()
        raise
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


def _wait(procs, poll_s: float, channel: Channel | None) -> bool:
    """Wait up to ``poll_s`` for the workers, answering the channel meanwhile; True once all exited."""
    if channel is None:
        return procs.join(timeout=poll_s)
    channel.serve(poll_s)  # a worker waiting for an answer gets it at once, not at the next poll
    return procs.join(timeout=0)


def _drain(errors) -> list[tuple[int, str, str]]:
    out = []
    while not errors.empty():
        out.append(errors.get())
    return out


def _first_failure(reports: list[tuple[int, str, str]], rank: int) -> str:
    for r, _, message in reports:
        if r == rank:
            return f" ({message})"
    return f" ({reports[0][2]} on rank {reports[0][0]})" if reports else ""
