"""Run trials in local processes, ``parallel`` at a time (the default executor).

One fresh process per trial, forked from a ``forkserver`` that has already imported torch and the
caller's main module, so starting a trial costs milliseconds, a trial that crashes (even by a
segfault or ``os._exit``) takes only itself down and is recorded as failed, and a trial may start
processes of its own (``escala train --workers N``). Each trial runs in its own process group with
explicit resources: ``cpus`` (torch and OpenMP threads) and ``gpus`` (``CUDA_VISIBLE_DEVICES``,
handed out from the pool given to the executor). If the driver dies, a watchdog in every trial
notices the closed pipe and ends the trial's whole process group: a killed search leaves nothing
running behind it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import wait as wait_any
from typing import Any

from escala.errors import UserError
from escala.search.executors.base import Event, Executor, Reporter, TrialSpec, run_trial


def _watchdog(alive) -> None:
    try:
        alive.poll(None)  # returns at EOF: the driver (the only writer) is gone
    except (OSError, EOFError):
        pass
    os.killpg(0, signal.SIGKILL)


def _child(spec: TrialSpec, conn, alive) -> None:
    os.setpgrp()  # the trial and everything it starts can be ended together
    threading.Thread(target=_watchdog, args=(alive,), daemon=True).start()
    res = spec.resources
    if res.get("gpus") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in res["gpus"])
    if res.get("cpus"):
        os.environ["OMP_NUM_THREADS"] = str(res["cpus"])
        import torch

        torch.set_num_threads(int(res["cpus"]))

    def ask(step, metrics):
        conn.send(("report", step, metrics))
        return bool(conn.recv())

    os.makedirs(spec.trial_dir, exist_ok=True)
    event = run_trial(spec, Reporter(spec.id, spec.trial_dir, res, ask, spec.may_stop))
    conn.send((event.kind, event.step, event.metrics, event.error))
    conn.close()


class LocalExecutor(Executor):
    def __init__(
        self,
        parallel: int = 1,
        cpus_per_trial: int | None = None,
        gpus: list[int] | None = None,
        gpus_per_trial: int = 0,
        start_method: str = "forkserver",
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
        self.free_gpus, self.gpus_per_trial = gpus, gpus_per_trial
        self.ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # torch and the training stack imported once, in the server, not in every trial
            self.ctx.set_forkserver_preload(["__main__", "escala.search.executors._warm"])
        self._alive_r, self._alive_w = self.ctx.Pipe(duplex=False)
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Any] = {}
        self.gpus_of: dict[int, list[int]] = {}
        self._ended: set[int] = set()

    def submit(self, spec: TrialSpec) -> None:
        gpus = [self.free_gpus.pop(0) for _ in range(self.gpus_per_trial)]
        resources = {"cpus": self.cpus, **spec.resources}
        if self.gpus_per_trial:
            resources["gpus"] = gpus
        spec = TrialSpec(spec.id, spec.fn, spec.config, spec.metric, spec.trial_dir, resources, spec.may_stop)
        ours, theirs = self.ctx.Pipe()
        proc = self.ctx.Process(target=_child, args=(spec, theirs, self._alive_r), name=f"trial-{spec.id}")
        proc.start()
        theirs.close()
        self.procs[spec.id], self.conns[spec.id], self.gpus_of[spec.id] = proc, ours, gpus

    def running(self) -> int:
        return len(self.procs)

    def _receive(self, tid: int, events: list[Event]) -> None:
        conn = self.conns[tid]
        try:
            while conn.poll(0):
                kind, step, metrics, *rest = conn.recv()
                if kind == "report":
                    events.append(Event("report", tid, step=step, metrics=metrics))
                else:
                    events.append(
                        Event(kind, tid, step=step, metrics=metrics, error=rest[0] if rest else None)
                    )
                    self._ended.add(tid)
        except (EOFError, OSError):
            pass

    def wait(self, timeout: float) -> list[Event]:
        if not self.procs:
            time.sleep(min(timeout, 0.05))
            return []
        by_handle = {}
        for tid, proc in self.procs.items():
            by_handle[self.conns[tid]] = tid
            by_handle[proc.sentinel] = tid
        ready = wait_any(list(by_handle), timeout)
        events: list[Event] = []
        for tid in sorted({by_handle[h] for h in ready}):
            self._receive(tid, events)
            proc = self.procs[tid]
            if proc.is_alive() and tid not in self._ended:
                continue
            proc.join(timeout=5)
            if proc.is_alive():  # sent its result but is slow to exit: it will be reaped later
                continue
            self._receive(tid, events)  # anything sent just before it exited
            if tid not in self._ended:
                events.append(Event("failed", tid, error=f"trial process {_describe(proc.exitcode)}"))
            self._release(tid)
        return events

    def _release(self, tid: int) -> None:
        self.procs.pop(tid)
        self.conns.pop(tid).close()
        self.free_gpus.extend(self.gpus_of.pop(tid))
        self._ended.discard(tid)

    def answer(self, trial: int, stop: bool) -> None:
        conn = self.conns.get(trial)
        if conn is None:
            return
        try:
            conn.send(bool(stop))
        except (BrokenPipeError, OSError):
            pass  # the trial died meanwhile; its sentinel reports it

    def shutdown(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    proc.terminate()
        for tid in list(self.procs):
            proc = self.procs[tid]
            proc.join(timeout=5)
            if proc.is_alive():
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
                proc.join(timeout=5)
            self._release(tid)
        self._alive_w.close()


def _describe(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        try:
            return f"was killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"was killed by signal {-exit_code}"
    return f"exited with status {exit_code} before reporting a result"
