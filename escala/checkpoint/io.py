"""Atomic checkpoint files and safe loading.

A checkpoint is written to a temporary file in the same directory, flushed to disk and renamed over
the target, so a run killed mid-write leaves the previous checkpoint intact. Loading uses
``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain containers but never
executes code. A file that is truncated, foreign or from another program gets one clear
:class:`UserError`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from escala.errors import UserError

FORMAT = "escala-checkpoint"
VERSION = 1


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` to ``path`` so that ``path`` always holds either the old or the new complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Save a training state with the escala format marker."""
    return save_atomic({"format": FORMAT, "version": VERSION, **state}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check an escala checkpoint; any problem becomes a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"checkpoint {path} cannot be read (truncated, damaged or not a torch file): {reason[:200]}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not an escala checkpoint (no '{FORMAT}' marker)")
    if obj.get("version") != VERSION:
        raise UserError(
            f"checkpoint {path} has format version {obj.get('version')}; this escala reads {VERSION}"
        )
    for key in ("model", "epoch", "step"):
        if key not in obj:
            raise UserError(f"checkpoint {path} is incomplete: it has no '{key}' entry")
    return obj
