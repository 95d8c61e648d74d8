"""The study store: every trial event appended, as it happens, to ``DIR/trials.jsonl`` by one writer.

Events: ``proposed`` (trial id + config, written before the trial is submitted), ``started`` (each
submission; a trial re-run after a resume starts again and its earlier reports are void),
``report`` (step + metrics), then one of ``completed`` (result + objective value), ``failed``
(error) or ``stopped`` (early, with its last value). Each line is flushed and fsynced, so a study
killed at any instant loses at most the line being written; on resume that torn line is dropped.

Only the driver writes (trial processes send their events to it), and it holds an exclusive
``flock`` on ``DIR/.lock`` so two drivers can never interleave lines of one study. ``DIR/study.json``
records the settings that decide the proposals (searcher, its options, seed, space, metric,
direction); a resume with different ones is refused, since replaying the log would not reproduce
the recorded proposals.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from escala.errors import UserError
from escala.metrics import write_json

TERMINAL = ("completed", "failed", "stopped")
# Settings a resumed study may change: how long and how wide it runs, not what it proposes.
MAY_CHANGE_ON_RESUME = {"trials", "parallel", "executor", "resources", "early_stop_options"}


@dataclass
class Trial:
    id: int
    config: dict[str, Any]
    status: str = "proposed"
    reports: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    value: float | None = None
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class StudyStore:
    def __init__(self, directory: str | Path, settings: dict[str, Any], resume: bool = False):
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"out {self.dir} exists and is not a directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / ".lock", "w")  # noqa: SIM115 - held for the life of the store
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise UserError(f"out {self.dir} is in use by another running search") from None
        self.path = self.dir / "trials.jsonl"
        self.events: list[dict[str, Any]] = []
        self.trials: dict[int, Trial] = {}
        self.wall_before = 0.0
        exists = self.path.exists() or (self.dir / "study.json").exists()
        if resume:
            if not exists:
                self.close()
                raise UserError(f"resume: {self.dir} holds no study (trials.jsonl); nothing to continue")
            self._check_settings(settings)
            self._load()
        elif exists:
            self.close()
            raise UserError(
                f"out {self.dir} already holds a study; pass --resume to continue it or choose another --out"
            )
        self.settings = settings
        write_json(self.dir / "study.json", settings)
        self._t0 = time.perf_counter()

    # -- reading ---------------------------------------------------------------------------------
    def _check_settings(self, settings: dict[str, Any]) -> None:
        saved_file = self.dir / "study.json"
        saved = json.loads(saved_file.read_text()) if saved_file.exists() else {}
        for key in sorted(set(saved) | set(settings)):
            if key in MAY_CHANGE_ON_RESUME:
                continue
            if json.dumps(saved.get(key), sort_keys=True) != json.dumps(settings.get(key), sort_keys=True):
                self.close()
                raise UserError(
                    f"resume: setting '{key}' is {settings.get(key)!r} but the study in {self.dir} was "
                    f"started with {saved.get(key)!r}; resume with the same setting or choose another --out"
                )

    def _load(self) -> None:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        good = []
        for line in lines:
            try:
                good.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line torn by a kill is the last one written: nothing after it is trusted
        if len(good) < len([ln for ln in lines if ln.strip()]):
            tmp = self.path.with_name(".trials.jsonl.tmp")
            tmp.write_text("".join(json.dumps(e) + "\n" for e in good))
            os.replace(tmp, self.path)
        for event in good:
            self._apply(event)
        self.wall_before = max((e.get("t", 0.0) for e in good), default=0.0)

    def _apply(self, e: dict[str, Any]) -> None:
        kind, tid = e["event"], e.get("trial")
        self.events.append(e)
        if kind == "proposed":
            self.trials[tid] = Trial(tid, e["config"])
            return
        trial = self.trials[tid]
        if kind == "started":
            trial.status, trial.reports, trial.started = "running", [], e["t"]
            trial.attempts += 1
        elif kind == "report":
            trial.reports.append({"step": e["step"], **e["metrics"]})
        elif kind in TERMINAL:
            trial.status, trial.ended = kind, e["t"]
            trial.value = e.get("value")
            trial.result = e.get("result")
            trial.error = e.get("error")

    # -- writing (the driver only) -----------------------------------------------------------------
    def now(self) -> float:
        return self.wall_before + time.perf_counter() - self._t0

    def _append(self, event: dict[str, Any]) -> None:
        event = {**event, "t": round(self.now(), 4)}
        with self.path.open("a") as fh:
            fh.write(json.dumps(event) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._apply(event)

    def propose(self, tid: int, config: dict[str, Any]) -> None:
        self._append({"event": "proposed", "trial": tid, "config": config})

    def start(self, tid: int) -> None:
        self._append({"event": "started", "trial": tid})

    def report(self, tid: int, step: float, metrics: dict[str, Any]) -> None:
        self._append({"event": "report", "trial": tid, "step": step, "metrics": metrics})

    def complete(self, tid: int, result: dict[str, Any], value: float) -> None:
        self._append({"event": "completed", "trial": tid, "result": result, "value": value})

    def fail(self, tid: int, error: str) -> None:
        self._append({"event": "failed", "trial": tid, "error": error})

    def stop(self, tid: int, step: float, value: float | None) -> None:
        self._append({"event": "stopped", "trial": tid, "step": step, "value": value})

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()  # closing the file releases the flock

    # -- views -------------------------------------------------------------------------------------
    def pending(self) -> list[Trial]:
        """Trials proposed but without a result: the ones a resumed study must run (again)."""
        return [t for t in self.trials.values() if not t.done]

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials.values())


def read_study(directory: str | Path) -> tuple[dict[str, Any], dict[int, Trial]]:
    """Read a study without locking it (for ``escala search show`` while a search runs)."""
    d = Path(directory)
    if not (d / "trials.jsonl").exists():
        raise UserError(f"{d} holds no study (trials.jsonl); run escala search --out {d} first")
    settings = json.loads((d / "study.json").read_text()) if (d / "study.json").exists() else {}
    view = StudyStore.__new__(StudyStore)
    view.path, view.events, view.trials = d / "trials.jsonl", [], {}
    for line in (d / "trials.jsonl").read_text().splitlines():
        try:
            view._apply(json.loads(line))
        except (json.JSONDecodeError, KeyError):
            break
    return settings, view.trials
