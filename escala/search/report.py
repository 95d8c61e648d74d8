"""What a finished (or running) study shows: a table of trials, best-so-far against wall time, HParams."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from escala.search.store import Trial


def best_so_far(trials: dict[int, Trial], direction: str) -> list[tuple[float, float]]:
    """(end time, best completed value up to then) for every completed trial, in time order."""
    done = sorted((t for t in trials.values() if t.status == "completed"), key=lambda t: t.ended)
    out, best = [], None
    for t in done:
        if best is None or (t.value > best if direction == "max" else t.value < best):
            best = t.value
        out.append((t.ended, best))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, list):
        return ",".join(_fmt(x) for x in v)
    return "-" if v is None else str(v)


def trials_table(trials: dict[int, Trial], metric: str, direction: str, limit: int | None = None) -> str:
    """Trials best first (completed, then stopped, running, failed), one line each, aligned columns."""
    keys: list[str] = []
    for t in trials.values():
        keys += [k for k in t.config if k not in keys]
    varying = [k for k in keys if len({json.dumps(t.config.get(k)) for t in trials.values()}) > 1] or keys
    order = {"completed": 0, "stopped": 1, "running": 2, "proposed": 2, "failed": 3}
    sign = -1 if direction == "max" else 1

    def last_value(t):
        if t.value is not None:
            return t.value
        vals = [r.get(metric) for r in t.reports if isinstance(r.get(metric), (int, float))]
        return vals[-1] if vals else None

    rows = sorted(
        trials.values(),
        key=lambda t: (
            order.get(t.status, 4),
            sign * (last_value(t) if last_value(t) is not None else -sign * 1e300),
        ),
    )
    header = ["trial", "status", metric, "steps", "seconds", *varying]
    lines = [header]
    for t in rows[:limit]:
        secs = (t.ended - t.started) if t.ended is not None and t.started is not None else None
        steps = t.reports[-1]["step"] if t.reports else None
        lines.append(
            [str(t.id), t.status, _fmt(last_value(t)), _fmt(steps), _fmt(secs)]
            + [_fmt(t.config.get(k)) for k in varying]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines]
    errors = [f"trial {t.id}: {t.error}" for t in rows if t.status == "failed" and t.error]
    return "\n".join(text + ([""] + errors if errors else []))


def plot_best(path: str | Path, trials: dict[int, Trial], direction: str, metric: str) -> bool:
    """PNG of best-so-far against wall time; False (nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    curve = best_so_far(trials, direction)
    fig, ax = plt.subplots(figsize=(6, 4))
    done = [t for t in trials.values() if t.status == "completed"]
    ax.scatter([t.ended for t in done], [t.value for t in done], s=12, alpha=0.5, label="completed trial")
    if curve:
        xs, ys = zip(*curve)
        ax.step(xs, ys, where="post", color="C1", label="best so far")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel(metric)
    ax.set_title(f"{len(done)} trials completed")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_hparams(directory: str | Path, trials: dict[int, Trial], metric: str) -> bool:
    """TensorBoard HParams: one run per completed trial under ``directory``; False without TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return False
    with SummaryWriter(log_dir=str(directory)) as writer:
        for t in trials.values():
            if t.status != "completed":
                continue
            params = {
                k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                for k, v in t.config.items()
            }
            writer.add_hparams(params, {f"hparam/{metric}": t.value}, run_name=f"trial-{t.id:05d}")
    return True
