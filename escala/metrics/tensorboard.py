"""TensorBoard event files, written only when TensorBoard is installed (the ``tensorboard`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TensorBoardWriter:
    """Scalars per epoch under ``DIR/tb``; a no-op when TensorBoard is missing."""

    def __init__(self, directory: str | Path, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra is not installed: metrics.jsonl still has everything
            return
        self.writer = SummaryWriter(log_dir=str(directory))

    @property
    def active(self) -> bool:
        return self.writer is not None

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
