"""Activation checkpointing under a memory budget (Chen, Xu, Zhang and Guestrin, "Training deep nets
with sublinear memory cost", arXiv:1604.06174, 2016).

The model is cut into *units*: its top-level children, with nested ``nn.Sequential`` stages opened
(so a ResNet-50 gives its 16 bottleneck blocks plus stem and head). A plan groups consecutive
units into segments; a *checkpointed* segment keeps only its input during the forward pass and
recomputes its activations during backward (``torch.utils.checkpoint``, non-reentrant), a *stored*
segment keeps its activations as usual. With ``a_i`` the bytes unit ``i`` saves, ``b_i`` its input
and ``f_i`` its forward FLOPs, a plan costs::

    memory  = sum(stored a_i) + sum(checkpointed segment inputs b) + max(checkpointed segment sum a)
    compute = sum(checkpointed f_i)                (one extra forward of those units)

The last term of ``memory`` is the recomputed segment, alive during its own backward. Chen et al.'s
rule cuts ``n`` units into ``sqrt(n)`` segments, giving ``O(sqrt(n))`` memory for one extra forward.
:func:`plan_checkpoints` instead finds the plan with the least recomputation that fits a budget:
for each candidate cap on the recomputed segment, a shortest path over units with the memory
discretised into 256 steps (rounded up, so a plan found always fits). FLOPs come from PyTorch's
``FlopCounterMode`` on the meta device. Batch-norm running statistics are not updated twice: the
recomputation runs with momentum 0 and restores ``num_batches_tracked``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from escala.errors import UserError
from escala.memory.trace import storage_of, trace

STEPS = 256


def units_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children of a sequential model, nested ``nn.Sequential`` stages opened."""
    if not isinstance(model, nn.Sequential):
        raise UserError(
            "activation checkpointing needs an nn.Sequential model (all of escala's zoo models are)"
        )
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, seq: nn.Sequential) -> None:
        for name, child in seq.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                walk(full + ".", child)
            else:
                out.append((full, child))

    walk("", model)
    return out


@dataclass
class UnitCost:
    name: str
    input_bytes: int
    saved_bytes: int
    flops: int


def unit_costs(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> list[UnitCost]:
    """Per unit: input bytes, activation bytes saved for backward, forward FLOPs (meta tensors).

    Saved bytes come from one trace of the whole model, so a tensor saved by two units (a ReLU's
    output that the next Linear saves as its input) is counted once, at the last.
    """
    units = units_of(model)
    names = [name for name, _ in units]
    nodes = trace(model, tuple(input_shape), batch_size)
    node_unit: dict[str, int] = {}
    for node in nodes:
        owner = [
            k for k, name in enumerate(names) if node.target == name or node.target.startswith(name + ".")
        ]
        node_unit[node.name] = owner[-1] if owner else 0
    # A tensor saved by layers of two units (a ReLU's output that the next unit's Linear keeps) is
    # charged to the last of them: if that unit is stored, the tensor stays whatever happens before;
    # if it is checkpointed, the tensor is exactly its kept input.
    root = storage_of(nodes)
    size = {n.name: n.out_bytes for n in nodes}
    owner_of: dict[str, int] = {}
    for node in nodes:
        for value in node.saved:
            owner_of[root[value]] = max(owner_of.get(root[value], -1), node_unit[node.name])
    saved = [0] * len(units)
    for value, unit in owner_of.items():
        saved[unit] += size[value]
    for node in nodes:
        saved[node_unit[node.name]] += node.extra_saved_bytes
    costs = []
    shape = tuple(input_shape)
    for k, (name, unit) in enumerate(units):
        x = torch.empty((batch_size, *shape), device="meta")
        with FlopCounterMode(display=False) as counter:
            y = _meta_copy(unit)(x)
        costs.append(UnitCost(name, x.numel() * x.element_size(), saved[k], int(counter.get_total_flops())))
        shape = tuple(y.shape[1:])
    return costs


def _meta_copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).to("meta")


@dataclass
class CheckpointPlan:
    segments: list[tuple[int, int, bool]]  # (first unit, end unit exclusive, checkpointed)
    memory_bytes: int  # activation memory of the plan (formula in the module docstring)
    baseline_bytes: int  # activation memory without checkpointing
    extra_flops: int
    step_flops: int  # forward + backward FLOPs of a step without checkpointing (~3x forward)

    @property
    def extra_compute(self) -> float:
        return self.extra_flops / self.step_flops if self.step_flops else 0.0

    def as_dict(self) -> dict:
        return {
            "segments": [list(s) for s in self.segments],
            "checkpointed_segments": sum(1 for s in self.segments if s[2]),
            "activation_bytes_planned": self.memory_bytes,
            "activation_bytes_plain": self.baseline_bytes,
            "memory_ratio": self.baseline_bytes / max(self.memory_bytes, 1),
            "extra_compute": self.extra_compute,
        }


def plan_cost(costs: list[UnitCost], segments) -> tuple[int, int]:
    """(memory, extra flops) of a segmentation, by the formula of the module docstring."""
    memory, peak, flops = 0, 0, 0
    for i, j, ckpt in segments:
        a = sum(c.saved_bytes for c in costs[i:j])
        if ckpt:
            memory += costs[i].input_bytes
            peak = max(peak, a)
            flops += sum(c.flops for c in costs[i:j])
        else:
            memory += a
    return memory + peak, flops


def _make_plan(costs, segments) -> CheckpointPlan:
    memory, flops = plan_cost(costs, segments)
    base = sum(c.saved_bytes for c in costs)
    return CheckpointPlan(segments, memory, base, flops, 3 * sum(c.flops for c in costs))


def sqrt_plan(costs: list[UnitCost]) -> CheckpointPlan:
    """Chen et al.: ``ceil(sqrt(n))`` equal segments, all but the last checkpointed."""
    n = len(costs)
    k = max(1, math.ceil(math.sqrt(n)))
    bounds = [round(i * n / k) for i in range(k + 1)]
    segs = [(bounds[i], bounds[i + 1], i < k - 1) for i in range(k) if bounds[i] < bounds[i + 1]]
    return _make_plan(costs, segs)


def plan_checkpoints(costs: list[UnitCost], budget_bytes: int) -> CheckpointPlan:
    """The plan with the least recomputation whose activation memory fits ``budget_bytes``."""
    n = len(costs)
    a = [c.saved_bytes for c in costs]
    prefix = np.concatenate([[0], np.cumsum(a)])
    if prefix[-1] <= budget_bytes:
        return _make_plan(costs, [(0, n, False)])
    caps = sorted({int(prefix[j] - prefix[i]) for i in range(n) for j in range(i + 1, n + 1)})
    if len(caps) > 48:  # enough candidates to find the trade-off, few enough to stay fast
        caps = sorted(set(caps[:: max(1, len(caps) // 48)]) | {caps[-1]})
    flops_prefix = np.concatenate([[0], np.cumsum([c.flops for c in costs])])
    best = None
    for cap in caps:
        room = budget_bytes - cap
        if room < 0:
            continue
        unit = max(room / STEPS, 1.0)

        def steps(nbytes, unit=unit):
            return int(math.ceil(nbytes / unit - 1e-9))

        INF = float("inf")
        dp = np.full((n + 1, STEPS + 1), INF)
        choice: dict[tuple[int, int], tuple[int, int, bool]] = {}
        dp[0, 0] = 0.0
        for j in range(1, n + 1):
            # Stored unit j-1 (splitting stored runs into single units loses nothing).
            s = steps(a[j - 1])
            if s <= STEPS:
                cand = np.full(STEPS + 1, INF)
                cand[s:] = dp[j - 1, : STEPS + 1 - s]
                better = cand < dp[j]
                dp[j][better] = cand[better]
                for m in np.nonzero(better)[0]:
                    choice[(j, int(m))] = (j - 1, int(m) - s, False)
            for i in range(j):
                if prefix[j] - prefix[i] > cap:
                    continue
                s = steps(costs[i].input_bytes)
                if s > STEPS:
                    continue
                cand = np.full(STEPS + 1, INF)
                cand[s:] = dp[i, : STEPS + 1 - s] + (flops_prefix[j] - flops_prefix[i])
                better = cand < dp[j]
                dp[j][better] = cand[better]
                for m in np.nonzero(better)[0]:
                    choice[(j, int(m))] = (i, int(m) - s, True)
        m = int(np.argmin(dp[n]))
        if dp[n, m] == INF:
            continue
        segs, j = [], n
        while j > 0:
            i, m2, ck = choice[(j, m)]
            segs.append((i, j, ck))
            j, m = i, m2
        plan = _make_plan(costs, _merge(segs[::-1]))
        if plan.memory_bytes <= budget_bytes and (best is None or plan.extra_flops < best.extra_flops):
            best = plan
    if best is None:
        raise UserError(
            f"memory budget {budget_bytes:,} bytes for activations: no checkpoint plan of this model fits "
            f"(Chen et al.'s sqrt(n) plan needs {sqrt_plan(costs).memory_bytes:,}, no checkpointing "
            f"{int(prefix[-1]):,}); raise --budget or lower --batch-size"
        )
    return best


def _merge(segs):
    """Merge neighbouring stored segments (same memory, fewer checkpoint boundaries)."""
    out: list[tuple[int, int, bool]] = []
    for s in segs:
        if out and not s[2] and not out[-1][2]:
            out[-1] = (out[-1][0], s[1], False)
        else:
            out.append(s)
    return out


@contextlib.contextmanager
def _frozen_batchnorm(module: nn.Module):
    """During recomputation: no second running-statistics update (momentum 0, counter restored)."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append(
                (m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
            )
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


class CheckpointedSequential(nn.Module):
    """Runs ``model``'s units by ``plan``, recomputing checkpointed segments in backward.

    It shares ``model``'s modules (and parameters), so gradients land in the same tensors.
    """

    def __init__(self, model: nn.Module, plan: CheckpointPlan) -> None:
        super().__init__()
        units = [m for _, m in units_of(model)]
        self.segments = nn.ModuleList(nn.Sequential(*units[i:j]) for i, j, _ in plan.segments)
        self.checkpointed = [ck for _, _, ck in plan.segments]

    def forward(self, x):
        for seg, ck in zip(self.segments, self.checkpointed):
            if ck and torch.is_grad_enabled():
                x = checkpoint(
                    seg,
                    x,
                    use_reentrant=False,
                    context_fn=lambda seg=seg: (contextlib.nullcontext(), _frozen_batchnorm(seg)),
                )
            else:
                x = seg(x)
        return x
