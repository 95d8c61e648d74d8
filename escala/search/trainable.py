"""The objective behind ``escala search``: one ``escala train`` run per trial, reporting val_acc per epoch.

A trial's config is a dict of :class:`~escala.config.TrainConfig` fields; it trains through the
foundation's :func:`escala.train.launch.run_training` into the trial's own directory, so a trial may
itself use several data-parallel workers. When an early-stopping rule is on, every epoch is
reported to the driver as it ends, from the trainer's epoch hook, and the driver's "stop" ends the
run there: it never pauses, so a rung costs a report, not a checkpoint written and read back. A run
of several spawned workers (``workers = 2``) does the same: rank 0 sends each epoch's record to the
trial's process and waits for the verdict, which one all-reduce hands to every rank, so all stop
after the same step. Only a trial run under torchrun (where no process of the trial launched the
workers) goes in segments that end where the rule can decide (every epoch for the median rule,
ASHA's rungs for ASHA): a segment ending at epoch ``k`` stops at ``max_steps = k * steps_per_epoch``
and the next resumes from its checkpoint, which the trainer makes exact (weights, optimizer,
schedule, RNG), so the finished trial equals an uninterrupted run. Without early stopping
it trains in one go and the per-epoch records are reported afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from escala.config import TrainConfig, build_config
from escala.config.load import _unknown, coerce
from escala.errors import UserError
from escala.metrics import read_jsonl
from escala.search.space import Choice, Space

# The search owns where and whether a trial's run is written; a space may not set these.
RESERVED = ("out", "resume", "overwrite")
# Quiet by default inside trials, unless the space says otherwise. No checkpoint but the last one
# of each run: a trial interrupted by a killed search is run again from the start, so per-epoch
# checkpoints would only cost time (in segments under torchrun, the last one of each segment is
# what the next segment resumes from).
TRIAL_DEFAULTS = {"progress": "none", "tensorboard": False, "checkpoint_every": 1_000_000}


def check_space(space: Space) -> None:
    """Every key a TrainConfig field, every value of every dimension valid for it; else a UserError."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in [*space.dims, *space.constants]:
        if key in RESERVED:
            raise UserError(f"space: '{key}' is set by escala search itself (use --out/--resume)")
        if key not in names:
            raise _unknown(key, "space")
    for key, value in space.constants.items():
        coerce(key, value, "space")
    for key, dim in space.dims.items():
        values = (
            dim.values if isinstance(dim, Choice) else [dim.decode([u] * dim.dims) for u in (0.0, 0.5, 1.0)]
        )
        for v in values:
            try:
                coerce(key, v, "space")
            except UserError as err:
                raise UserError(f"{err} (from {dim!r})") from None
    build_config(overrides=_fields(space.sample(__import__("numpy").random.default_rng(0)), "/tmp/x"))


def _fields(config: dict[str, Any], out: str, threads: int | None = None) -> dict[str, Any]:
    values = {**TRIAL_DEFAULTS, **config, "out": out}
    if threads and "threads" not in config:
        values["threads"] = threads
    return values


def train_trial(config: dict[str, Any], reporter, data_seed: int | None = None) -> dict[str, Any]:
    """Train ``config`` (TrainConfig fields) in ``reporter.trial_dir``; report each epoch; return the summary.

    ``data_seed`` fixes the data split apart from ``config["seed"]`` (which otherwise picks both the
    split and the initial weights): members of an ensemble differ in their weights, never in which
    samples they may train on.
    """
    from escala.data.shard import ShardedBatches
    from escala.runtime import under_torchrun
    from escala.train.launch import run_training

    cfg = build_config(overrides=_fields(config, reporter.trial_dir, reporter.resources.get("cpus")))
    cfg = dataclasses.replace(cfg, overwrite=True)  # a trial run again after a resume starts afresh
    data = _data(
        cfg if data_seed is None else dataclasses.replace(cfg, seed=data_seed)
    )  # loaded once for all segments, and kept for the runner's next trial
    metrics_file = f"{reporter.trial_dir}/metrics.jsonl"
    if not reporter.may_stop:
        summary = run_training(cfg, dataset=data)
        for record in read_jsonl(metrics_file):
            reporter.report(record["epoch"], **_report(record))
        return _numbers(summary)
    if not under_torchrun():  # one process or spawned workers: the run reports from its epoch hook
        summary = run_training(
            cfg, dataset=data, on_epoch=lambda record: reporter.report(record["epoch"], **_report(record))
        )  # a stop raises TrialStopped in the hook: the run ends there, with no checkpoint written
        return _numbers(summary)
    steps = ShardedBatches(len(data.train), cfg.batch_size, 0, cfg.workers, cfg.seed).steps_per_epoch
    summary: dict[str, Any] = {}
    reported = 0  # epochs reported so far
    for epoch in pause_epochs(cfg.epochs, reporter.stop_steps):
        budget = epoch * steps if not cfg.max_steps else min(epoch * steps, cfg.max_steps)
        segment = dataclasses.replace(cfg, max_steps=budget, resume=reported > 0, overwrite=reported == 0)
        summary = run_training(segment, dataset=data)
        records = [r for r in read_jsonl(metrics_file) if r.get("epoch", 0) > reported]
        for record in records or [{**summary, "epoch": epoch}]:
            reporter.report(record["epoch"], **_report(record))  # may raise TrialStopped
        reported = epoch
        if cfg.max_steps and budget >= cfg.max_steps:
            break
    return _numbers(summary)


def pause_epochs(epochs: int, stop_steps: tuple[float, ...] | None) -> list[int]:
    """Where a trial under early stopping pauses to hear the verdict: the first epoch at or past each
    step the rule decides at (ASHA's rungs), and the last; every epoch when any step may decide.

    Each pause costs a run's start and end (model build, checkpoint written and read back), so the
    trial pauses only where a stop can happen; the epochs between are still reported, in order.
    """
    if stop_steps is None:
        return list(range(1, epochs + 1))
    return sorted({min(epochs, max(1, math.ceil(s))) for s in stop_steps} | {epochs})


_DATA: dict[tuple, Any] = {}


def _data(cfg: TrainConfig):
    """The trial's data set, reused while the data fields stay the same (one set kept per process).

    A runner of the local executor runs trial after trial; loading the same split again each time
    (digits: reading and splitting the CSV) would be a fixed cost per trial. The split depends only on
    these fields, and the trainer never writes to it.
    """
    from escala.train.launch import resolve_data

    key = (
        cfg.dataset,
        cfg.data_dir,
        cfg.seed,
        cfg.synthetic_samples,
        tuple(cfg.synthetic_shape),
        cfg.synthetic_classes,
    )
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = resolve_data(None, cfg)
    return _DATA[key]


def _numbers(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _report(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch record as report metrics: the epoch is the report's step; the trainer's step count is 'steps'."""
    out = _numbers(record)
    out.pop("epoch", None)
    if "step" in out:
        out["steps"] = out.pop("step")
    return out
