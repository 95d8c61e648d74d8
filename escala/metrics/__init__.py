"""Metrics: JSON lines, TensorBoard event files, progress display."""

from escala.metrics.jsonl import JsonlWriter, read_jsonl, write_json
from escala.metrics.progress import Progress
from escala.metrics.tensorboard import TensorBoardWriter

__all__ = ["JsonlWriter", "Progress", "TensorBoardWriter", "read_jsonl", "write_json"]
