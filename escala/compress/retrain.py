"""Retraining for compression steps, through escala's one training loop.

Every step that retrains (pruning, centroid fine-tuning, distillation, quantization-aware training)
calls :func:`escala.train.launch.run_training` with the checkpoint's own configuration, changed only
in what the step must change (epochs, learning rate, output directory). The run writes its usual
metrics.jsonl, summary.json and checkpoint under ``OUT/stages/STEP``. With several workers the model is
trained in spawned processes, so the trained weights are read back from the stage's checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from escala.checkpoint import load_checkpoint
from escala.compress.prune import detach_masked
from escala.compress.share import refresh_shared
from escala.config import TrainConfig, build_config
from escala.data import DataSplit


def stage_config(base: dict[str, Any], out: Path, **changes: Any) -> TrainConfig:
    """The checkpoint's config with ``changes``; keys this escala no longer knows are dropped."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in base.items() if k in names}
    values.update(resume=False, overwrite=True, out=str(out), tensorboard=False)
    values.update({k: v for k, v in changes.items() if v is not None})
    return build_config(None, values)


def retrain(model: nn.Module, data: DataSplit, config: TrainConfig) -> dict[str, Any]:
    """Train ``model`` in place with ``config`` through the one loop; return the run's summary."""
    from escala.train.launch import run_training

    # Pruned and shared weights are non-leaf tensors recomputed before each forward: copies and
    # spawned workers refuse them, and after training or loading they must be recomputed.
    refresh(model)
    summary = run_training(config, model=model, dataset=data)
    state = load_checkpoint(Path(config.out) / "checkpoints" / "last.pt")["model"]
    model.load_state_dict(state)
    refresh(model)
    return summary


def refresh(model: nn.Module) -> None:
    """Recompute masked and shared ``weight`` tensors from their parameters, outside autograd."""
    detach_masked(model)
    refresh_shared(model)
