"""The objective behind ``escala search``: one ``escala train`` run per trial, reporting val_acc per epoch.

A trial's config is a dict of :class:`~escala.config.TrainConfig` fields; it trains through the
foundation's :func:`escala.train.launch.run_training` into the trial's own directory, so a trial may
itself use several data-parallel workers. When an early-stopping rule is on, the run goes one epoch
at a time: epoch ``k`` ends at ``max_steps = k * steps_per_epoch`` and the next segment resumes from
its checkpoint, which the trainer makes exact (weights, optimizer, schedule, RNG), so the finished
trial equals an uninterrupted run while the driver gets to stop it after any epoch. Without early
stopping it trains in one go and the per-epoch records are reported afterwards.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from escala.config import TrainConfig, build_config
from escala.config.load import _unknown, coerce
from escala.errors import UserError
from escala.metrics import read_jsonl
from escala.search.space import Choice, Space

# The search owns where and whether a trial's run is written; a space may not set these.
RESERVED = ("out", "resume", "overwrite")
# Quiet by default inside trials, unless the space says otherwise.
TRIAL_DEFAULTS = {"progress": "none", "tensorboard": False}


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


def train_trial(config: dict[str, Any], reporter) -> dict[str, Any]:
    """Train ``config`` (TrainConfig fields) in ``reporter.trial_dir``; report each epoch; return the summary."""
    from escala.data.shard import ShardedBatches
    from escala.train.launch import resolve_data, run_training

    cfg = build_config(overrides=_fields(config, reporter.trial_dir, reporter.resources.get("cpus")))
    cfg = dataclasses.replace(cfg, overwrite=True)  # a trial run again after a resume starts afresh
    data = resolve_data(None, cfg)  # loaded once for all segments
    metrics_file = f"{reporter.trial_dir}/metrics.jsonl"
    if not reporter.may_stop:
        summary = run_training(cfg, dataset=data)
        for record in read_jsonl(metrics_file):
            reporter.report(record["epoch"], **_report(record))
        return _numbers(summary)
    steps = ShardedBatches(len(data.train), cfg.batch_size, 0, cfg.workers, cfg.seed).steps_per_epoch
    summary: dict[str, Any] = {}
    for epoch in range(1, cfg.epochs + 1):
        budget = epoch * steps if not cfg.max_steps else min(epoch * steps, cfg.max_steps)
        segment = dataclasses.replace(cfg, max_steps=budget, resume=epoch > 1, overwrite=epoch == 1)
        summary = run_training(segment, dataset=data)
        records = read_jsonl(metrics_file)
        reporter.report(epoch, **_report(records[-1] if records else summary))
        if cfg.max_steps and budget >= cfg.max_steps:
            break
    return _numbers(summary)


def _numbers(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _report(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch record as report metrics: the epoch is the report's step; the trainer's step count is 'steps'."""
    out = _numbers(record)
    out.pop("epoch", None)
    if "step" in out:
        out["steps"] = out.pop("step")
    return out
