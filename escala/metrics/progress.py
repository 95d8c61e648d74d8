"""Progress display: a rich bar on a terminal, one plain line per epoch elsewhere (logs, CI)."""

from __future__ import annotations

import sys
from typing import Any


def _fmt(values: dict[str, Any]) -> str:
    """One readable line: accuracy as a percentage, throughput as a whole number, the rest to 4 digits."""
    parts = []
    for k, v in values.items():
        if k in ("epoch_s", "step"):
            continue
        if k == "epoch" and "epochs" in values:
            parts.append(f"epoch {v}/{values['epochs']}")
        elif k == "epochs":
            continue
        elif k.endswith("acc") and isinstance(v, float):
            parts.append(f"{k} {100 * v:.2f}%")
        elif k == "samples_per_s":
            parts.append(f"{v:,.0f} samples/s")
        elif k == "wall_s":
            parts.append(f"{v:.1f}s")
        elif isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        else:
            parts.append(f"{k} {v}")
    return "  ".join(parts)


class Progress:
    """``mode``: auto (bar when stdout is a terminal), bar, plain or none."""

    def __init__(self, mode: str = "auto", enabled: bool = True):
        if not enabled or mode == "none":
            self.mode = "none"
        elif mode == "auto":
            self.mode = "bar" if sys.stdout.isatty() else "plain"
        else:
            self.mode = mode
        self._bar = None
        self._task = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if self.mode != "bar":
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=steps, completed=done, info="")

    def advance(self, loss: float | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, info="" if loss is None else f"loss {loss:.4f}")

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.mode != "none":
            print(_fmt(record), flush=True)

    def message(self, text: str) -> None:
        if self.mode != "none":
            print(text, flush=True)
