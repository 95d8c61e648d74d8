"""Run a plan's row for real on this machine: the ``escala train`` settings of a strategy, and the
seconds per step the trainer measures.

Used twice, on different models: by the calibration (:func:`empty_step_seconds`)
on an *empty* model, two hidden units on 1x1x1 inputs, to measure the fixed cost of a step of each
strategy (escala's loop, DDP hooks, message handling, process wake-ups: what no FLOP or byte count
sees), and by ``escala bench plan`` on the model being predicted, to compare. The prediction of a
model never uses a measurement of that model under that strategy.
"""

from __future__ import annotations

import tempfile
from typing import Any

from escala.plan.calibrate import _CACHE

EMPTY = {"shape": (1, 1, 1), "hidden": (2,)}  # two hidden units: a tensor-parallel split needs T | hidden


def train_fields(
    strategy: str,
    devices: int,
    *,
    h: int = 4,
    microbatches: int = 4,
    backups: int = 0,
    recurrent: bool = False,
) -> dict:
    """``escala train`` fields running the planner's ``strategy`` on ``devices`` processes of this machine.

    ``paramserver`` on ``devices`` means that many workers plus one server process. ``recurrent``: the
    model is pipelined over its time steps (no micro-batches, no 1F1B).
    """
    base, _, codec = strategy.partition("+")
    fields: dict[str, Any] = {"strategy": "allreduce", "workers": devices}
    if base == "allreduce":
        if codec:
            fields["compress"] = codec
    elif base.startswith("localsgd"):
        fields.update(strategy="localsgd", average_every=h)
    elif base == "backup":
        fields.update(strategy="backup", backups=backups)
    elif base == "paramserver":
        fields.update(strategy="paramserver", servers=1)
    elif base == "pipeline" and recurrent:
        fields.update(workers=1, pipeline=devices)
    elif base == "pipeline":
        fields.update(workers=1, pipeline=devices, microbatches=microbatches, pipeline_schedule="1f1b")
    elif base == "tensor":
        fields.update(workers=1, tensor=devices)
    else:
        raise ValueError(f"no escala train run for strategy {strategy!r}")
    return fields


def measured_step(
    fields: dict,
    *,
    shape: tuple,
    hidden: tuple,
    batch: int,
    samples: int,
    epochs: int = 1,
    model: str = "mlp",
) -> float:
    """Seconds per training step of ``escala train`` with ``fields`` on synthetic data, one thread per
    process (the trainer's samples/s: training steps only, no evaluation or start-up)."""
    from escala.config import build_config
    from escala.train import run_training

    with tempfile.TemporaryDirectory(prefix="escala-plan-") as out:
        config = {
            "dataset": "synthetic",
            "synthetic_samples": samples,
            "synthetic_shape": tuple(shape),
            "model": model,
            "hidden": tuple(hidden),
            "batch_size": batch,
            "epochs": epochs,
            "lr": 0.01,
            "momentum": 0.9,
            "threads": 1,
            "out": out,
            "progress": "none",
            "tensorboard": False,
            "checkpoint_every": epochs,
            **fields,
        }
        summary = run_training(build_config(None, config))
    replicas = 1 if fields.get("pipeline", 1) > 1 or fields.get("tensor", 1) > 1 else fields["workers"]
    return batch * replicas / summary["samples_per_s"]


def empty_step_seconds(
    strategy: str,
    devices: int,
    batch: int,
    steps: int = 200,
    hidden: tuple | None = None,
    time_steps: int = 0,
    **kw,
) -> float:
    """Seconds per step of ``escala train`` running ``strategy`` on ``devices`` processes with an empty
    model (:data:`escala.plan.validate.EMPTY`): the fixed cost of a step of that strategy here.

    What it buys is the part of a step no FLOP or byte count sees: escala's loop (fetching the batch,
    the scheduler, hooks, metrics), DDP's bookkeeping, message headers and the wake-up of a process
    that blocked waiting for a peer. ``hidden``: the empty model's widths (2 units per layer; as many
    layers as the model predicted, so per-layer costs such as hooks and DTensor dispatch are in it).
    ``time_steps`` > 0: the empty model is the lstm zoo model (one layer of 2 units per entry of
    ``hidden``) reading ``time_steps`` steps of one feature, so a recurrent pipeline's per-step messages
    and waits are in it. The planner subtracts what it predicts for the same empty model
    and keeps the rest as ``overhead`` (:meth:`escala.plan.step.Setting.overhead`).
    """
    hidden = tuple(hidden or EMPTY["hidden"])
    key = ("empty", strategy, devices, batch, steps, hidden, time_steps, tuple(sorted(kw.items())))
    if key not in _CACHE:
        fields = train_fields(strategy, devices, recurrent=time_steps > 0, **kw)
        replicas = fields["workers"]
        _CACHE[key] = measured_step(
            fields,
            shape=(time_steps, 1) if time_steps else EMPTY["shape"],
            hidden=hidden,
            batch=batch,
            samples=batch * replicas * steps,
            model="lstm" if time_steps else "mlp",
        )
    return _CACHE[key]
