"""Cut a sequential model into K contiguous pipeline stages.

A pipeline (GPipe, Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline
Parallelism", NeurIPS 2019) runs as fast as its slowest stage, so the cut should balance the stages.
Given per-layer costs ``c_1..c_n`` (parameter counts, or measured forward+backward seconds) we pick
cut points ``0 = b_0 < b_1 < ... < b_K = n`` minimising the largest stage cost

    max_k  sum_{i = b_{k-1}}^{b_k - 1} c_i

which is the classic linear-partition problem; it is solved exactly by dynamic programming in
O(K n^2) (torchgpipe's ``balance_by_size``/``balance_by_time`` solve the same problem). Ties are
broken towards the smallest sum of squared stage costs so equal layers split evenly.

An explicit cut list names where stages start (child indices or child names) and is checked, never
adjusted. A model that cannot be split as asked (more stages than layers, a cut out of range or out
of order, a child that is not a module of an ``nn.Sequential``) raises :class:`UserError`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from escala.errors import UserError


def _children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise UserError(
            f"pipeline needs an nn.Sequential model (got {type(model).__name__}); "
            "wrap the layers in nn.Sequential so the model can be cut between them"
        )
    return list(model.named_children())


def layer_param_costs(model: nn.Module) -> list[float]:
    """Parameter elements of each child of ``model`` (a stage's memory for weights, grads and state)."""
    return [float(sum(p.numel() for p in m.parameters())) for _, m in _children(model)]


def layer_time_costs(model: nn.Module, sample: torch.Tensor, repeats: int = 3) -> list[float]:
    """Median seconds of forward + backward of each child on ``sample`` (a typical micro-batch).

    Each child is timed on the activation the preceding children produce, so shapes are real. The
    backward uses a unit gradient on the child's output; parameter grads are cleared afterwards. A
    child's input needs a gradient only when some earlier child has trainable parameters (as in
    training, where the data needs none): the first weighted layer computes no input gradient, one
    matrix product fewer in its backward, which a cut must see or the first stage gets too little work.
    """
    children = _children(model)
    costs: list[float] = []
    x = sample
    trainable_before = False
    for _, child in children:
        runs = []
        for _ in range(repeats):
            inp = x.detach().requires_grad_(x.is_floating_point() and trainable_before)
            t0 = time.perf_counter()
            out = child(inp)
            if out.requires_grad:
                out.backward(torch.ones_like(out))
            runs.append(time.perf_counter() - t0)
        costs.append(sorted(runs)[len(runs) // 2])
        trainable_before = trainable_before or any(p.requires_grad for p in child.parameters())
        with torch.no_grad():
            x = child(x)
    for p in model.parameters():
        p.grad = None
    return costs


def balance(costs: Sequence[float], stages: int) -> list[int]:
    """Start index of each of ``stages`` contiguous groups of ``costs`` minimising the largest group sum.

    Returns ``[0, b_1, ..., b_{K-1}]``. Exact dynamic programme over (groups, prefix length).
    """
    n = len(costs)
    if stages < 1:
        raise UserError(f"pipeline stages must be >= 1, got {stages}")
    if stages > n:
        raise UserError(f"cannot cut a model of {n} layers into {stages} pipeline stages; use at most {n}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = (float("inf"), float("inf"))
    # best[k][j]: (max group cost, sum of squares) splitting the first j layers into k groups.
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    arg = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = (0.0, 0.0)
    for k in range(1, stages + 1):
        for j in range(k, n - (stages - k) + 1):
            for i in range(k - 1, j):
                prev = best[k - 1][i]
                if prev[0] == float("inf"):
                    continue
                s = prefix[j] - prefix[i]
                cand = (max(prev[0], s), prev[1] + s * s)
                if cand < best[k][j]:
                    best[k][j], arg[k][j] = cand, i
    starts, j = [], n
    for k in range(stages, 0, -1):
        j = arg[k][j]
        starts.append(j)
    return starts[::-1]


def resolve_cuts(names: list[str], cuts: Sequence[int | str], stages: int | None) -> list[int]:
    """``[0, *cuts]`` as child indices of the layers ``names``, checked (range, order, count)."""
    idx = []
    for c in cuts:
        if isinstance(c, str) and not c.isdigit():
            if c not in names:
                raise UserError(
                    f"pipeline cut {c!r} is not a layer of the model; layers are {', '.join(names)}"
                )
            idx.append(names.index(c))
        else:
            idx.append(int(c))
    if idx and idx[0] == 0:
        idx = idx[1:]  # "stage 0 starts at layer 0" is implied; accept it when spelled out
    for a in idx:
        if not 0 < a < len(names):
            raise UserError(f"pipeline cut {a} is out of range; cuts must lie in 1..{len(names) - 1}")
    if any(b <= a for a, b in zip(idx, idx[1:])):
        raise UserError(f"pipeline cuts {list(cuts)} must be strictly increasing")
    if stages is not None and len(idx) + 1 != stages:
        raise UserError(f"{len(idx)} pipeline cuts make {len(idx) + 1} stages, but {stages} were asked for")
    return [0, *idx]


def partition(
    model: nn.Module,
    stages: int | None = None,
    *,
    cuts: Sequence[int | str] | None = None,
    by: str = "params",
    sample: torch.Tensor | None = None,
) -> list[nn.Sequential]:
    """Split ``model`` (an ``nn.Sequential``) into contiguous stages sharing its parameters.

    Args:
        stages: number of stages K (may be omitted when ``cuts`` is given).
        cuts: where stages 1..K-1 begin, as child indices or child names (e.g. ``["fc2"]``).
        by: ``"params"`` balances parameter counts; ``"time"`` balances measured forward+backward
            time on ``sample``.

    Each stage is a new ``nn.Sequential`` holding the *same* child modules (no copies), with the
    original child names, so ``stage.state_dict()`` keys match the unsplit model's.
    """
    children = _children(model)
    names = [n for n, _ in children]
    if cuts is not None:
        starts = resolve_cuts(names, cuts, stages)
    else:
        if stages is None:
            raise UserError("pipeline needs a number of stages or an explicit cut list")
        if by == "params":
            costs = layer_param_costs(model)
        elif by == "time":
            if sample is None:
                raise UserError("pipeline balance 'time' needs a sample micro-batch to time the layers on")
            costs = layer_time_costs(model, sample)
        else:
            raise UserError(f"pipeline balance {by!r} is unknown; choose params or time")
        starts = balance(costs, stages)
    ends = [*starts[1:], len(children)]
    return [nn.Sequential(OrderedDict(children[a:b])) for a, b in zip(starts, ends)]


def stage_starts(model: nn.Module, parts: Sequence[nn.Module]) -> list[str]:
    """Name of the first layer of each stage (for summaries and logs)."""
    return [next(iter(p.named_children()))[0] for p in parts]
