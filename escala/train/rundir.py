"""The output directory of a run: refuse to clobber, find what to resume, check it fits.

Checked in the launching process before any worker starts, so that a mistake costs nothing and a
failed start never overwrites what the directory already held.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from escala.checkpoint import load_checkpoint
from escala.config.schema import TrainConfig
from escala.errors import UserError
from escala.metrics import JsonlWriter

CHECKPOINT = Path("checkpoints") / "last.pt"
RUN_FILES = ("metrics.jsonl", "summary.json", "checkpoints", "tb")

# Fields a resumed run may change: where and how long it runs and how it reports, not what it computes.
MAY_CHANGE_ON_RESUME = {
    "epochs",
    "max_steps",
    "out",
    "resume",
    "overwrite",
    "checkpoint_every",
    "checkpoint_every_steps",
    "tensorboard",
    "progress",
    "timeout_s",
    "threads",
    "device",
    "backend",
    "data_dir",
}


def checkpoint_path(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT


def prepare_out_dir(config: TrainConfig) -> dict[str, Any] | None:
    """Make ``config.out`` ready; return the checkpoint to resume from, if resuming."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"out {out} exists and is not a directory")
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if config.resume:
        ckpt_file = checkpoint_path(out)
        if not ckpt_file.exists():
            raise UserError(f"resume: {out} holds no checkpoint ({CHECKPOINT}); nothing to continue")
        ckpt = load_checkpoint(ckpt_file)
        check_resumable(ckpt, config, ckpt_file)
        JsonlWriter(out / "metrics.jsonl").truncate_after("epoch", int(ckpt["epoch"]))
        return ckpt
    if existing and not config.overwrite:
        raise UserError(
            f"out {out} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    for name in existing:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None


def check_resumable(ckpt: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """A run continues only with the settings that produced its checkpoint."""
    saved = ckpt.get("config", {})
    for key, value in saved.items():
        if key in MAY_CHANGE_ON_RESUME or not hasattr(config, key):
            continue
        now = getattr(config, key)
        now = list(now) if isinstance(now, tuple) else now
        if now != value:
            raise UserError(
                f"resume: field '{key}' is {now!r} but the checkpoint {path} was made with {value!r}; "
                "resume with the same setting or start a new --out"
            )
    if int(ckpt["epoch"]) >= config.epochs and (
        config.max_steps == 0 or int(ckpt["step"]) >= config.max_steps
    ):
        pass  # already finished: resuming re-evaluates and rewrites the summary, harmless
