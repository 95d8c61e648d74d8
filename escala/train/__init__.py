"""The one training loop, its optimizers and schedules, and the ``train`` entry point."""

from escala.train.launch import run_training, train
from escala.train.trainer import Trainer

__all__ = ["Trainer", "run_training", "train"]
