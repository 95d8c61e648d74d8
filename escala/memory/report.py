"""What ``escala memory`` prints and writes: the estimate, the plan and the checkpointing choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from escala.errors import UserError
from escala.memory.checkpointing import plan_checkpoints, sqrt_plan, unit_costs
from escala.memory.estimate import estimate_memory
from escala.memory.plan import plan_memory
from escala.memory.trace import trace


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def memory_report(
    model_name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int,
    *,
    hidden: tuple[int, ...] = (128, 64),
    precision: str = "fp32",
    optimizer: str = "sgd",
    budget: int | None = None,
) -> dict[str, Any]:
    """The summary of ``escala memory`` (all sizes in bytes)."""
    from escala.models import build_model

    torch.manual_seed(0)
    with torch.device("meta"):  # no memory for the weights: ResNet-50 costs nothing to build here
        model = build_model(model_name, input_shape, num_classes, hidden=hidden)
    est = estimate_memory(
        model, input_shape, batch_size, precision=precision, optimizer=optimizer, num_classes=num_classes
    )
    static = est.param_bytes + est.grad_bytes + est.optimizer_bytes
    # The plan's timeline places gradients itself: its static part is parameters + optimizer state.
    plan = plan_memory(
        trace(model, input_shape, batch_size), est.param_bytes + est.optimizer_bytes, num_classes=num_classes
    )
    summary: dict[str, Any] = {
        "model": model_name,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "batch_size": batch_size,
        "precision": precision,
        "optimizer": optimizer,
        "params": est.params,
        "param_bytes": est.param_bytes,
        "grad_bytes": est.grad_bytes,
        "optimizer_bytes": est.optimizer_bytes,
        "activation_bytes": est.activation_bytes,
        "activation_elements": est.activation_elements,
        "peak_bytes": est.peak_bytes,
        "total_bytes": est.total_bytes,
        "naive_bytes": plan.naive_bytes,
        "eager_peak_bytes": plan.eager_peak_bytes,
        "planned_peak_bytes": plan.planned_peak_bytes,
        "inplace_layers": plan.inplace,
        "layers": est.as_dict()["layers"],
    }
    if budget is not None:
        costs = unit_costs(model, input_shape, batch_size)
        room = budget - static - est.largest_output_bytes
        if room <= 0:
            raise UserError(
                f"--budget {budget:,} bytes is below the model state alone ({static + est.largest_output_bytes:,} "
                "bytes of parameters, gradients, optimizer state and one layer output)"
            )
        ck = plan_checkpoints(costs, room)
        summary["budget_bytes"] = budget
        summary["checkpoint"] = {
            **ck.as_dict(),
            "units": [c.name for c in costs],
            "peak_bytes": static + est.largest_output_bytes + ck.memory_bytes,
            "sqrt_n": sqrt_plan(costs).as_dict(),
        }
    return summary


def print_report(s: dict[str, Any]) -> None:
    print(
        f"{s['model']}  batch {s['batch_size']}  input {tuple(s['input_shape'])}  {s['precision']}  {s['optimizer']}"
    )
    print(f"{'layer':<28}{'type':<18}{'output':<22}{'params':>12}{'saved for backward':>20}")
    for layer in s["layers"]:
        shape = "x".join(map(str, layer["out_shape"]))
        print(
            f"{layer['name'][:27]:<28}{layer['kind'][:17]:<18}{shape[:21]:<22}{layer['params']:>12,}"
            f"{human(layer['activation_bytes']):>20}"
        )
    rows = [
        ("parameters", s["param_bytes"]),
        ("gradients", s["grad_bytes"]),
        ("optimizer state", s["optimizer_bytes"]),
        ("activations", s["activation_bytes"]),
        ("peak (estimate)", s["peak_bytes"]),
        ("sum of all (upper bound)", s["total_bytes"]),
        ("naive (no reuse)", s["naive_bytes"]),
        ("eager (free when dead)", s["eager_peak_bytes"]),
        ("planned (liveness+in-place)", s["planned_peak_bytes"]),
    ]
    print(f"params: {s['params']:,}   saved activation elements: {s['activation_elements']:,}")
    for name, value in rows:
        print(f"  {name:<30}{human(value):>14}  ({value:,} bytes)")
    ck = s.get("checkpoint")
    if ck:
        print(
            f"checkpointing under {human(s['budget_bytes'])}: {ck['checkpointed_segments']} recomputed segments, "
            f"activations {human(ck['activation_bytes_plain'])} -> {human(ck['activation_bytes_planned'])} "
            f"({ck['memory_ratio']:.2f}x less) for {100 * ck['extra_compute']:.0f}% more compute; "
            f"peak {human(ck['peak_bytes'])}"
        )


def write_report(s: dict[str, Any], out: Path) -> None:
    from escala.metrics import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", s)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'escala[plot]'): no memory.png")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    layers = [layer for layer in s["layers"] if layer["activation_bytes"] > 0]
    ax1.bar(range(len(layers)), [layer["activation_bytes"] / 2**20 for layer in layers], color="tab:blue")
    ax1.set_xticks(range(len(layers)), [layer["name"] for layer in layers], rotation=90, fontsize=6)
    ax1.set_ylabel("MiB saved for backward")
    ax1.set_title(f"{s['model']}, batch {s['batch_size']}: activations per layer")
    parts = [
        ("params", s["param_bytes"]),
        ("grads", s["grad_bytes"]),
        ("optimizer", s["optimizer_bytes"]),
        ("activations", s["activation_bytes"]),
    ]
    bottom = 0.0
    for name, value in parts:
        ax2.bar(["estimate"], [value / 2**20], bottom=bottom, label=name)
        bottom += value / 2**20
    ax2.bar(["planned"], [s["planned_peak_bytes"] / 2**20], color="tab:gray", label="planned peak")
    ax2.set_ylabel("MiB")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=120)
    plt.close(fig)
