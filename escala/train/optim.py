"""Optimizers and learning-rate schedules, including the large-minibatch recipe.

Large-minibatch SGD (Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour"):

* linear scaling rule: when the global minibatch is k times the batch the learning rate ``eta`` was
  tuned for, use ``k * eta``;
* gradual warmup: start at ``eta`` and raise the rate by a constant amount every iteration until it
  reaches ``k * eta`` after the warmup epochs. Without linear scaling (k = 1) warmup ramps from
  ``eta / steps`` up to ``eta``, the common form of warmup for adaptive optimizers.

After warmup the rate follows the chosen schedule (constant, cosine to zero, or /10 every
``step_epochs`` epochs), all expressed per optimizer step so a resumed run continues seamlessly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from escala.config.schema import TrainConfig


def scaled_lr(config: TrainConfig) -> float:
    """The target learning rate after the linear scaling rule, if it is on."""
    if config.lr_scaling == "linear":
        reference = config.reference_batch or config.batch_size
        return config.lr * config.global_batch / reference
    return config.lr


def build_optimizer(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    lr = scaled_lr(config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def lr_factor(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the scaled learning rate at optimizer step ``step`` (0-based)."""
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        target = scaled_lr(config)
        start = (
            config.lr / target
            if target > 0 and config.lr_scaling == "linear" and target != config.lr
            else 0.0
        )
        if start == 0.0:
            return (step + 1) / warmup_steps
        return start + (1.0 - start) * step / warmup_steps
    epoch = step / steps_per_epoch
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch - warmup_steps
        done = min(step - warmup_steps, total)
        return 0.5 * (1.0 + math.cos(math.pi * done / max(total, 1)))
    if config.schedule == "step":
        return 0.1 ** int(epoch // config.step_epochs)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """A per-step ``LambdaLR`` following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, steps_per_epoch))
