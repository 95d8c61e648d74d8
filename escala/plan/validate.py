"""Run a plan's row for real on this machine: the ``escala train`` settings of a strategy, and the
seconds per step the trainer measures.

Used twice, on different models: by the calibration (:func:`escala.plan.calibrate.empty_step_seconds`)
on an *empty* model, two hidden units on 1x1x1 inputs, to measure the fixed cost of a step of each
strategy (escala's loop, DDP hooks, message handling, process wake-ups: what no FLOP or byte count
sees), and by ``escala bench plan`` on the model being predicted, to compare. The prediction of a
model never uses a measurement of that model under that strategy.
"""

from __future__ import annotations

import tempfile
from typing import Any

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
