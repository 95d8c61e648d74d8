"""What ``escala plan`` prints and writes: the table, ``summary.json`` and ``throughput.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from escala.errors import UserError
from escala.plan.planner import Plan, device_counts
from escala.plan.units import human_bytes

KIND = "escala plan"
OUTPUTS = {"summary.json", "throughput.png"}


def check_out_dir(out: Path) -> None:
    """Refuse a non-empty ``out`` unless it holds nothing but an earlier plan's output."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    names = {p.name for p in out.iterdir()}
    earlier = False
    if "summary.json" in names:
        try:
            earlier = json.loads((out / "summary.json").read_text()).get("kind") == KIND
        except (OSError, ValueError, AttributeError):
            earlier = False
    if not earlier or not names <= OUTPUTS:
        raise UserError(
            f"--out {out} is not empty and not an earlier plan's output ({', '.join(sorted(names)[:3])}); "
            "choose an empty or new directory"
        )


def summary(plan: Plan, n_max: int) -> dict[str, Any]:
    s, c = plan.setting, plan.setting.cluster
    table: dict[str, list[dict]] = {}
    for r in plan.rows:
        table.setdefault(r.strategy, []).append(r.as_dict())
    rec = plan.recommended
    return {
        "kind": KIND,
        "model": s.profile.describe(),
        "batch_size": s.batch,
        "scaling": s.scaling,
        "cluster": {
            "name": c.name,
            "source": c.source,
            "nodes": c.nodes,
            "devices_per_node": c.devices_per_node,
            "device": c.device.name,
            "device_memory": c.device.memory,
            "sustained_flops": c.device.flops(s.profile.precision) if not c.device.measured else None,
            "measured": c.device.measured,
            "intra": {
                "bandwidth": c.intra.bandwidth,
                "latency": c.intra.latency,
                "p2p_bandwidth": c.intra.p2p_bandwidth,
                "p2p_latency": c.intra.p2p_latency,
            },
            "inter": {"bandwidth": c.inter.bandwidth, "latency": c.inter.latency},
            "calibration": c.calibration,
        },
        "devices": device_counts(n_max),
        "strategies": table,
        "skipped": plan.skipped,
        "best_devices": plan.best_devices(),
        "recommended": rec.as_dict() if rec else None,
    }


def _ms(x: float) -> str:
    return f"{x * 1e3:.4g}"


def print_plan(plan: Plan) -> None:
    s = plan.setting
    c = s.cluster
    print(
        f"{s.profile.name}: {s.profile.params:,} parameters, {s.profile.flops_per_sample / 1e9:.3g} GFLOP per sample "
        f"(fwd+bwd), batch {s.batch} ({s.scaling} scaling) on {c.name}: {c.nodes} x {c.devices_per_node} "
        f"{c.device.name}, {human_bytes(c.device.memory)} each"
    )
    head = (
        f"{'strategy':<16} {'N':>5} {'layout':<22} {'step ms':>9} {'compute':>8} {'comm':>8} {'bubble':>8} "
        f"{'ovh':>7} {'samples/s':>11} {'eff':>6} {'mem/dev':>11} {'stale':>5} fits"
    )
    print(head)
    print("-" * len(head))
    for r in plan.rows:
        layout = ",".join(f"{k[0].upper()}{v}" for k, v in r.layout.items() if k != "microbatches")
        if "microbatches" in r.layout:
            layout += f",M{r.layout['microbatches']}"
        print(
            f"{r.strategy:<16} {r.devices:>5} {layout:<22} {_ms(r.step):>9} {_ms(r.compute):>8} {_ms(r.comm):>8} "
            f"{_ms(r.bubble + r.wait):>8} {_ms(r.overhead):>7} {r.throughput:>11,.1f} {r.efficiency:>6.3f} "
            f"{human_bytes(r.memory):>11} {r.staleness:>5.0f} {'yes' if r.fits else 'NO'}"
        )
    rec = plan.recommended
    if rec:
        print(
            f"recommended: {rec.strategy} on {rec.devices} devices {rec.layout}: {rec.throughput:,.1f} samples/s, "
            f"step {_ms(rec.step)} ms, efficiency {rec.efficiency:.2f}, {human_bytes(rec.memory)} per device"
        )


def plot(plan: Plan, path: Path) -> bool:
    """PNG of predicted throughput against devices, one line per strategy (False without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'escala[plot]'): no throughput.png")
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    series: dict[str, list] = {}
    for r in plan.rows:
        series.setdefault(r.strategy, []).append((r.devices, r.throughput, r.fits))
    for name, pts in series.items():
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        (line,) = ax.plot(xs, ys, marker="o", ms=3, label=name)
        bad = [(x, y) for x, y, f in pts if not f]
        if bad:
            ax.scatter(*zip(*bad), marker="x", color=line.get_color(), s=40)
    xs = sorted({r.devices for r in plan.rows})
    if plan.baseline:
        ax.plot(xs, [x * plan.baseline.throughput for x in xs], "k:", lw=1, label="ideal")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("devices")
    ax.set_ylabel("predicted samples / s")
    s = plan.setting
    ax.set_title(f"{s.profile.name}, batch {s.batch} ({s.scaling}), {s.cluster.name}"[:90], fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plan(plan: Plan, out: Path, n_max: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    data = summary(plan, n_max)
    (out / "summary.json").write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    plot(plan, out / "throughput.png")
    return data


def _jsonable(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    raise TypeError(type(x).__name__)
