"""Process groups, device choice and torchrun detection.

Locally escala spawns its workers itself and rendezvous over TCP on a free loopback port; under
``torchrun`` the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...) already
describes the job and the same entry point joins it with ``env://``. Every process group gets a
timeout so that a collective waiting on a dead peer fails instead of hanging.
"""

from __future__ import annotations

import gc
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

from escala.errors import UserError
from escala.runtime.context import WorkerContext


def under_torchrun() -> bool:
    """True when this process was started by torchrun (or another launcher setting the env:// variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_device(device: str, local_rank: int, local_world: int) -> torch.device:
    """``auto``: one GPU per local worker when there are enough, otherwise the CPU."""
    if device == "cpu":
        return torch.device("cpu")
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and have == 0:
        raise UserError("device 'cuda' asked for but no CUDA device is available; use cpu or auto")
    if device == "auto" and have < local_world:
        return torch.device("cpu")
    return torch.device("cuda", local_rank % max(have, 1))


def choose_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return backend


def set_threads(threads: int, local_world: int) -> None:
    """Share the cores among the local workers: oversubscribing them slows every worker down.

    The cores are the machine's, or ``ESCALA_CPUS`` when whoever started this process gave it a share
    (a search executor does, for each trial: a run inside a trial must not take every core).
    """
    cores = int(os.environ.get("ESCALA_CPUS") or 0) or os.cpu_count() or 1
    n = threads or max(1, cores // max(local_world, 1))
    torch.set_num_threads(n)


def init_worker(
    rank: int,
    world_size: int,
    local_rank: int,
    local_world: int,
    *,
    device: str = "auto",
    backend: str = "auto",
    init_method: str | None = None,
    timeout_s: float = 120.0,
    threads: int = 0,
) -> WorkerContext:
    """Join the process group (when there is more than one worker) and return this worker's context."""
    set_threads(threads, local_world)
    dev = choose_device(device, local_rank, local_world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    timeout = timedelta(seconds=timeout_s)
    ctx = WorkerContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, timeout=timeout)
    if world_size > 1:
        ctx.backend = choose_backend(backend, dev)
        dist.init_process_group(
            backend=ctx.backend,
            init_method=init_method or "env://",
            rank=rank,
            world_size=world_size,
            timeout=timeout,
        )
    return ctx


def shutdown() -> None:
    """Destroy the process group, freeing whatever still holds it first.

    DTensor parameters (tensor parallelism) reach the gloo group through their device mesh and sit in
    reference cycles; left to interpreter finalization, the group's worker threads are destroyed while
    joinable and the process dies with SIGABRT ("terminate called without an active exception") after
    its work succeeded, about one run in four. Collecting before and after the destroy frees it here.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
