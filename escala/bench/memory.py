"""``escala bench memory``: the estimate against measurement, planned against naive, checkpointing.

1. Estimate vs measured on the zoo models: activation bytes against the bytes autograd saves
   (``saved_tensors_hooks``), and the peak against PyTorch's ``MemTracker`` peak of live tensors
   over a real training step (SGD with momentum, second step, so optimizer state exists).
2. Liveness planning: naive (no reuse) vs eager (free when dead, what PyTorch does) vs planned
   (liveness + in-place ReLUs + arena packing), traced on the meta device.
3. ResNet-50 (224x224, 1000 classes): parameters, and activations at batch 1 and 32 counted two
   ways: every layer output of the forward pass, and the distinct tensors kept for backward.
4. Activation checkpointing: a 50-layer MLP measured (MemTracker peak, step time) plain, with Chen
   et al.'s sqrt(n) segments and with the DP plan for a third of the activation memory; ResNet-50's
   plans from the estimate.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from escala.bench.report import machine_line, markdown_table, update_section
from escala.memory.checkpointing import CheckpointedSequential, plan_checkpoints, sqrt_plan, unit_costs
from escala.memory.estimate import estimate_memory
from escala.memory.measure import measured_peak, saved_tensor_bytes
from escala.memory.plan import plan_memory
from escala.memory.trace import trace
from escala.models import build_model

ZOO = [
    ("mlp", (1, 28, 28), 64),
    ("lenet300", (1, 28, 28), 64),
    ("lenet5", (1, 28, 28), 64),
    ("resnet20", (3, 32, 32), 32),
    ("resnet50", (3, 64, 64), 4),
]


def estimate_table(zoo) -> str:
    rows = []
    for name, shape, batch in zoo:
        torch.manual_seed(0)
        model = build_model(name, shape, 10)
        est = estimate_memory(model, shape, batch, num_classes=10, optimizer="sgd", momentum=0.9)
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        saved = saved_tensor_bytes(model, x, y)
        peak = measured_peak(model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), x, y)
        rows.append(
            [
                f"{name} {'x'.join(map(str, shape))} b{batch}",
                est.activation_bytes,
                saved,
                est.activation_bytes / saved,
                est.peak_bytes,
                peak["peak_bytes"],
                est.peak_bytes / peak["peak_bytes"],
            ]
        )
    return markdown_table(
        [
            "model",
            "activations est. (B)",
            "saved_tensors_hooks (B)",
            "ratio",
            "peak est. (B)",
            "MemTracker peak (B)",
            "ratio",
        ],
        rows,
    )


def plan_table(zoo) -> str:
    rows = []
    for name, shape, batch, classes in zoo:
        with torch.device("meta"):
            model = build_model(name, shape, classes)
        est = estimate_memory(model, shape, batch, num_classes=classes)
        static = est.param_bytes + est.optimizer_bytes  # gradients are on the plan's timeline
        p = plan_memory(trace(model, shape, batch), static, num_classes=classes)
        dyn = p.planned_peak_bytes - static
        rows.append(
            [
                f"{name} b{batch}",
                p.naive_bytes,
                p.eager_peak_bytes,
                p.planned_peak_bytes,
                (p.naive_bytes - static) / dyn,
                p.naive_bytes / p.planned_peak_bytes,
                len(p.inplace),
            ]
        )
    return markdown_table(
        [
            "model",
            "naive (B)",
            "eager (B)",
            "planned (B)",
            "naive/planned (activations + gradients)",
            "naive/planned total",
            "in-place ReLUs",
        ],
        rows,
    )


def resnet50_table() -> str:
    rows = []
    with torch.device("meta"):
        model = build_model("resnet50", (3, 224, 224), 1000)
    for batch in (1, 32):
        nodes = trace(model, (3, 224, 224), batch)
        outputs = sum(n.out_bytes // n.dtype.itemsize for n in nodes if n.alias is None and n.kind != "input")
        est = estimate_memory(model, (3, 224, 224), batch, num_classes=1000)
        rows.append(
            [
                batch,
                est.params,
                outputs,
                est.activation_elements,
                est.activation_bytes / 2**20,
                est.peak_bytes / 2**20,
            ]
        )
    return markdown_table(
        [
            "batch",
            "parameters",
            "activations: all layer outputs",
            "activations: kept for backward",
            "kept (MiB)",
            "peak est. (MiB)",
        ],
        rows,
    )


def _step_rates(runs, params, x, y, rounds) -> list[float]:
    """Median seconds per training step of each model in ``runs``, interleaved round by round."""
    opt = torch.optim.SGD(params, lr=0.01)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds + 1):
        for k, run in enumerate(runs):
            t0 = time.perf_counter()
            for _ in range(2):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(run(x), y).backward()
                opt.step()
            times[k].append((time.perf_counter() - t0) / 2)
    return [statistics.median(t[1:]) for t in times]


def checkpoint_table(quick: bool) -> str:
    torch.manual_seed(0)
    # Narrow and deep with a large batch: activations, not weights, dominate, as in the networks
    # checkpointing is for.
    batch, width = (1024, 128) if quick else (2048, 128)
    model = build_model("mlp", (1, 8, 8), 10, hidden=(width,) * 50)
    x, y = torch.randn(batch, 1, 8, 8), torch.randint(0, 10, (batch,))
    costs = unit_costs(model, (1, 8, 8), batch)
    base = sum(c.saved_bytes for c in costs)
    plans = [
        ("plain", None),
        ("sqrt(n) segments", sqrt_plan(costs)),
        ("DP, budget 1/3", plan_checkpoints(costs, base // 3)),
    ]
    rows = []
    repeats = 3 if quick else 7
    runs = [model if plan is None else CheckpointedSequential(model, plan) for _, plan in plans]
    times = _step_rates(runs, list(model.parameters()), x, y, repeats)
    weights_and_grads = 2 * 4 * sum(p.numel() for p in model.parameters())
    ref_act = ref_flops = None
    for (label, plan), run, t in zip(plans, runs, times):
        peak = measured_peak(run, torch.optim.SGD(model.parameters(), lr=0.01), x, y)
        act = peak["peak_bytes"] - weights_and_grads
        ref_act = ref_act or act
        with FlopCounterMode(display=False) as counter:  # counts the recomputation inside backward too
            F.cross_entropy(run(x), y).backward()
        flops = counter.get_total_flops()
        ref_flops = ref_flops or flops
        rows.append(
            [
                f"MLP 50x{width} b{batch}: {label}",
                0 if plan is None else sum(s[2] for s in plan.segments),
                act,
                ref_act / act,
                flops / ref_flops - 1.0,
                0.0 if plan is None else plan.extra_compute,
                t / times[0] - 1.0,
            ]
        )
    with torch.device("meta"):
        r50 = build_model("resnet50", (3, 224, 224), 1000)
    rc = unit_costs(r50, (3, 224, 224), 32)
    rbase = sum(c.saved_bytes for c in rc)
    for label, plan in (
        ("sqrt(n) segments", sqrt_plan(rc)),
        ("DP, budget 1/3", plan_checkpoints(rc, rbase // 3)),
    ):
        rows.append(
            [
                f"ResNet-50 b32 (estimate): {label}",
                sum(s[2] for s in plan.segments),
                plan.memory_bytes,
                rbase / plan.memory_bytes,
                float("nan"),
                plan.extra_compute,
                float("nan"),
            ]
        )
    return markdown_table(
        [
            "network / plan",
            "recomputed segments",
            "activation peak (B)",
            "memory saved (x)",
            "extra FLOPs (measured)",
            "extra FLOPs (plan)",
            "extra time (shared CPU, noisy)",
        ],
        rows,
    )


def main(quick: bool = False, docs: str | None = None) -> None:
    zoo = ZOO[:3] if quick else ZOO
    print("1. estimate vs measured")
    t1 = estimate_table(zoo)
    print(t1)
    print("2. planned vs naive")
    t2 = plan_table(
        [
            ("lenet5", (1, 28, 28), 64, 10),
            ("resnet20", (3, 32, 32), 128, 10),
            ("resnet50", (3, 224, 224), 32, 1000),
        ]
    )
    print(t2)
    print("3. ResNet-50")
    t3 = resnet50_table()
    print(t3)
    print("4. activation checkpointing")
    t4 = checkpoint_table(quick)
    print(t4)
    body = (
        "## Memory (`escala bench memory`)\n\n"
        f"{machine_line()}\n\n"
        "Estimate vs measurement (SGD with momentum, float32; measured on CPU: bytes seen by "
        "`saved_tensors_hooks`, and the peak of live tensors that PyTorch's `MemTracker` records over a "
        "real second training step):\n\n"
        f"{t1}\n\n"
        "Liveness planning of one training step (bytes, including parameters, gradients and optimizer "
        "state; *eager* frees each tensor when it dies, as PyTorch does):\n\n"
        f"{t2}\n\n"
        "ResNet-50, 3x224x224, 1000 classes (elements; the estimate's float32 bytes):\n\n"
        f"{t3}\n\n"
        "Activation checkpointing (Chen et al. 2016). MLP rows are measured: activation peak = MemTracker "
        "peak minus weights and gradients; extra FLOPs measured = FLOPs counted by `FlopCounterMode` over a "
        "real checkpointed forward+backward (recomputation included) / plain - 1; extra time = step time / "
        "plain - 1, median of interleaved rounds, on a CPU shared with other jobs, so only indicative. "
        "ResNet-50 rows come from the per-unit trace (meta device); plan FLOPs are relative to a plain step "
        "(forward + backward = 3 forwards):\n\n"
        f"{t4}\n"
    )
    update_section(docs, "memory", body)
