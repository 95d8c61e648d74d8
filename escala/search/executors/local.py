"""Run trials in local processes, ``parallel`` at a time (the default executor).

A pool of ``parallel`` trial runners, each a process forked from a ``forkserver`` that has already
imported torch and the caller's main module. A runner takes trials one after another over its pipe
(``reuse=True``, the default), so a trial costs no process start and finds the data set of the
previous trial still loaded (:mod:`escala.search.trainable` keeps it); a stopped or finished trial
frees its slot the moment it reports its end. Crash isolation is kept: a trial that raises is
recorded as failed and the runner goes on; a trial that takes its process down (a segfault,
``os._exit``, a signal) is recorded as failed with how the process ended, and a fresh runner takes
the slot. ``reuse=False`` gives every trial a process of its own (for trials that leave global state
behind). A trial may start processes of its own (``escala train --workers N``).

Resources are explicit and belong to the slot: ``cpus`` (torch and OpenMP threads) and ``gpus``
(``CUDA_VISIBLE_DEVICES``, slot ``i`` gets the ``i``-th block of ``gpus_per_trial`` ids from the
pool given to the executor; CUDA binds a process to its devices, which is why a slot keeps them).
Each runner is its own process group; if the driver dies, a watchdog in every runner notices the
closed pipe and ends the runner's whole group: a killed search leaves nothing running behind it.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import wait as wait_any
from typing import Any

from escala.errors import UserError
from escala.runtime.spawn import describe_exit
from escala.search.executors.base import Event, Executor, Reporter, TrialSpec, run_trial


def _watchdog(alive) -> None:
    try:
        alive.poll(None)  # returns at EOF: the driver (the only writer) is gone
    except (OSError, EOFError):
        pass
    os.killpg(0, signal.SIGKILL)


def _runner(conn, alive, resources: dict[str, Any]) -> None:
    """One slot's process: run the trials it is sent until it is sent ``None``."""
    os.setpgrp()  # the runner and everything its trials start can be ended together
    # Everything inherited from the fork server (torch, torch._dynamo, scikit-learn: about a million
    # objects) lives as long as the process: move it out of the collector's sight. Otherwise every
    # full collection (the trainer runs one at the end of each run, so once per epoch under early
    # stopping) walks it all, ~0.4 s each, several times what an epoch of a small trial costs.
    gc.freeze()
    threading.Thread(target=_watchdog, args=(alive,), daemon=True).start()
    if resources.get("gpus") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in resources["gpus"])
    if resources.get("cpus"):
        os.environ["OMP_NUM_THREADS"] = str(resources["cpus"])
        os.environ["ESCALA_CPUS"] = str(resources["cpus"])  # escala.train inside a trial keeps to its share
        import torch

        torch.set_num_threads(int(resources["cpus"]))

    def ask(step, metrics):
        conn.send(("report", step, metrics))
        return bool(conn.recv())

    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        os.makedirs(spec.trial_dir, exist_ok=True)
        res = {**resources, **spec.resources}
        event = run_trial(spec, Reporter(spec.id, spec.trial_dir, res, ask, spec.may_stop, spec.stop_steps))
        conn.send((event.kind, event.step, event.metrics, event.error))


class _Slot:
    def __init__(self, index: int, gpus: list[int]):
        self.index, self.gpus = index, gpus
        self.proc: Any = None
        self.conn: Any = None
        self.trial: int | None = None  # the trial it runs now


class LocalExecutor(Executor):
    def __init__(
        self,
        parallel: int = 1,
        cpus_per_trial: int | None = None,
        gpus: list[int] | None = None,
        gpus_per_trial: int = 0,
        start_method: str = "forkserver",
        reuse: bool = True,
    ):
        if parallel < 1:
            raise UserError(f"parallel must be >= 1, got {parallel}")
        gpus = list(gpus or [])
        if gpus_per_trial and len(gpus) < gpus_per_trial * parallel:
            raise UserError(
                f"{parallel} parallel trials x {gpus_per_trial} GPU(s) need {gpus_per_trial * parallel} GPU ids; "
                f"got {gpus or 'none'}"
            )
        self.slots = parallel
        self.cpus = cpus_per_trial or max(1, (os.cpu_count() or 1) // parallel)
        self.gpus_per_trial, self.reuse = gpus_per_trial, reuse
        k = gpus_per_trial
        self.pool = [_Slot(i, gpus[i * k : (i + 1) * k]) for i in range(parallel)]
        self.ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # torch and the training stack imported once, in the server, not in every trial
            self.ctx.set_forkserver_preload(["__main__", "escala.search.executors._warm"])
        self._alive_r, self._alive_w = self.ctx.Pipe(duplex=False)
        self._retired: list[Any] = []  # processes told to leave (or dead), reaped without blocking
        self._by_trial: dict[int, _Slot] = {}

    # -- slots ------------------------------------------------------------------------------------
    def _start(self, slot: _Slot) -> None:
        resources: dict[str, Any] = {"cpus": self.cpus}
        if self.gpus_per_trial:
            resources["gpus"] = slot.gpus
        ours, theirs = self.ctx.Pipe()
        slot.proc = self.ctx.Process(
            target=_runner, args=(theirs, self._alive_r, resources), name=f"trials-{slot.index}"
        )
        slot.proc.start()
        theirs.close()
        slot.conn = ours

    def _retire(self, slot: _Slot, tell: bool) -> None:
        if tell:
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        slot.conn.close()
        self._retired.append(slot.proc)
        slot.proc = slot.conn = None

    def _reap(self) -> None:
        self._retired = [p for p in self._retired if p.exitcode is None and p.is_alive()]

    def submit(self, spec: TrialSpec) -> None:
        slot = next(s for s in self.pool if s.trial is None)
        if slot.proc is not None and not slot.proc.is_alive():  # died while idle
            self._retire(slot, tell=False)
        if slot.proc is None:
            self._start(slot)
        resources = {"cpus": self.cpus, **spec.resources}
        if self.gpus_per_trial:
            resources["gpus"] = slot.gpus
        spec = dataclasses.replace(spec, resources=resources)
        slot.conn.send(spec)
        slot.trial = spec.id
        self._by_trial[spec.id] = slot

    def running(self) -> int:
        return len(self._by_trial)

    # -- events -----------------------------------------------------------------------------------
    def _receive(self, slot: _Slot, events: list[Event]) -> bool:
        """Queue what the slot's trial sent; True once its end arrived (the slot is then free)."""
        tid = slot.trial
        try:
            while slot.conn.poll(0):
                kind, step, metrics, *rest = slot.conn.recv()
                if kind == "report":
                    events.append(Event("report", tid, step=step, metrics=metrics))
                    continue
                events.append(Event(kind, tid, step=step, metrics=metrics, error=rest[0] if rest else None))
                return True
        except (EOFError, OSError):
            pass
        return False

    def _free(self, slot: _Slot) -> None:
        self._by_trial.pop(slot.trial, None)
        slot.trial = None

    def wait(self, timeout: float) -> list[Event]:
        self._reap()
        busy = [s for s in self.pool if s.trial is not None]
        if not busy:
            time.sleep(min(timeout, 0.05))
            return []
        by_handle = {}
        for slot in busy:
            by_handle[slot.conn] = slot
            by_handle[slot.proc.sentinel] = slot
        ready = wait_any(list(by_handle), timeout)
        events: list[Event] = []
        for slot in sorted({by_handle[h] for h in ready}, key=lambda s: s.index):
            if self._receive(slot, events):
                self._free(slot)
                if not self.reuse:
                    self._retire(slot, tell=True)
                continue
            if slot.proc.is_alive():
                continue
            slot.proc.join(timeout=5)
            if self._receive(slot, events):  # its end, sent just before the process went away
                self._free(slot)
                self._retire(slot, tell=False)
                continue
            events.append(Event("failed", slot.trial, error=f"trial process {describe_exit(slot.proc.exitcode, ' before reporting a result')}"))
            self._free(slot)
            self._retire(slot, tell=False)  # the next trial on this slot gets a fresh runner
        return events

    def answer(self, trial: int, stop: bool) -> None:
        slot = self._by_trial.get(trial)
        if slot is None or slot.conn is None:
            return
        try:
            slot.conn.send(bool(stop))
        except (BrokenPipeError, OSError):
            pass  # the trial died meanwhile; its sentinel reports it

    def shutdown(self) -> None:
        for slot in self.pool:
            if slot.proc is None:
                continue
            if slot.trial is None:
                self._retire(slot, tell=True)  # idle: leaves by itself
                continue
            try:
                os.killpg(slot.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                slot.proc.terminate()
            self._free(slot)
            self._retire(slot, tell=False)
        for proc in self._retired:
            proc.join(timeout=5)
            if proc.is_alive():
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.join(timeout=5)
        self._retired = []
        self._alive_w.close()

