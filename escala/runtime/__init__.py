"""Processes and devices: spawning local workers, process groups, torchrun detection."""

from escala.runtime.context import WorkerContext
from escala.runtime.dist import choose_device, free_port, init_worker, shutdown, under_torchrun
from escala.runtime.spawn import WorkerFailed, spawn_workers

__all__ = [
    "WorkerContext",
    "WorkerFailed",
    "choose_device",
    "free_port",
    "init_worker",
    "shutdown",
    "spawn_workers",
    "under_torchrun",
]
