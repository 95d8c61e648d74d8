"""Micro-batch schedules as explicit action lists, and what they cost in idle time and memory.

A schedule tells each of K stages the order in which it runs the forward (``F``) and backward (``B``)
passes of M micro-batches:

* **GPipe / fill-drain** (Huang et al., NeurIPS 2019): all M forwards, then all M backwards.
  Every stage stashes the activations of all M micro-batches before the first backward.
* **1F1B** (PipeDream-flush: Narayanan et al., "PipeDream: Generalized Pipeline Parallelism for DNN
  Training", SOSP 2019; "Memory-Efficient Pipeline-Parallel DNN Training", ICML 2021): stage s runs
  ``min(K - s - 1, M)`` warm-up forwards, then alternates one forward and one backward, then drains
  the remaining backwards. Same bubble as GPipe, but at most ``K - s`` micro-batches in flight.

With equal stage times and per-micro-batch costs f (forward) and b (backward), both schedules finish
in ``(M + K - 1)(f + b)``, of which each stage is busy ``M (f + b)``, so the idle ("bubble") fraction is

    bubble = (K - 1) / (M + K - 1).

:func:`simulate` replays any action list under those dependencies (F(s, m) needs F(s-1, m);
B(s, m) needs B(s+1, m) and F(s, m); each stage runs its actions in order, one at a time), so the
formula and the peak number of stashed micro-batches are checked rather than assumed. The engine that
runs these schedules over processes is PyTorch's (``torch.distributed.pipelining``); these lists
document and test what it does and feed the benchmark's theory column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from escala.errors import UserError

SCHEDULES: tuple[str, ...] = ("gpipe", "1f1b")

Action = tuple[str, int]  # ("F" | "B", micro-batch index)


def _check(stages: int, microbatches: int) -> None:
    if stages < 1:
        raise UserError(f"pipeline stages must be >= 1, got {stages}")
    if microbatches < 1:
        raise UserError(f"microbatches must be >= 1, got {microbatches}")


def gpipe(stages: int, microbatches: int) -> list[list[Action]]:
    """Fill-drain: per stage, F0..F(M-1) then B0..B(M-1)."""
    _check(stages, microbatches)
    one = [("F", m) for m in range(microbatches)] + [("B", m) for m in range(microbatches)]
    return [list(one) for _ in range(stages)]


def one_f_one_b(stages: int, microbatches: int) -> list[list[Action]]:
    """1F1B: warm-up forwards, steady one-forward-one-backward, cool-down backwards."""
    _check(stages, microbatches)
    out = []
    for s in range(stages):
        warm = min(stages - s - 1, microbatches)
        acts: list[Action] = [("F", m) for m in range(warm)]
        f, b = warm, 0
        while f < microbatches:
            acts += [("F", f), ("B", b)]
            f, b = f + 1, b + 1
        acts += [("B", m) for m in range(b, microbatches)]
        out.append(acts)
    return out


def schedule(name: str, stages: int, microbatches: int) -> list[list[Action]]:
    if name == "gpipe":
        return gpipe(stages, microbatches)
    if name == "1f1b":
        return one_f_one_b(stages, microbatches)
    raise UserError(f"pipeline schedule {name!r} is unknown; choose one of {', '.join(SCHEDULES)}")


def theoretical_bubble(stages: int, microbatches: int) -> float:
    """(K - 1) / (M + K - 1): the idle fraction of each stage with equal stage times."""
    _check(stages, microbatches)
    return (stages - 1) / (microbatches + stages - 1)


@dataclass(frozen=True)
class Simulation:
    makespan: float
    busy: list[float]  # per stage
    peak_in_flight: list[int]  # per stage: most micro-batches forwarded but not yet backwarded

    @property
    def bubble(self) -> float:
        """Mean idle fraction over stages."""
        return 1.0 - sum(self.busy) / (len(self.busy) * self.makespan)


def simulate(
    actions: list[list[Action]],
    forward: float | Sequence[float] = 1.0,
    backward: float | Sequence[float] = 2.0,
) -> Simulation:
    """Replay per-stage action lists with no communication cost; raise if they deadlock or miss an
    action. ``forward``/``backward``: the cost of one micro-batch's pass, the same on every stage or
    one per stage (measured stage times: the idle time of fill/drain plus that of unequal stages)."""
    k = len(actions)
    f_cost = [float(forward)] * k if isinstance(forward, (int, float)) else [float(v) for v in forward]
    b_cost = [float(backward)] * k if isinstance(backward, (int, float)) else [float(v) for v in backward]
    if len(f_cost) != k or len(b_cost) != k:
        raise UserError(f"simulate: {k} stages need {k} forward and backward costs")
    m_count = max((m for acts in actions for _, m in acts), default=-1) + 1
    done: dict[tuple[str, int, int], float] = {}
    pos = [0] * k
    clock = [0.0] * k
    busy = [0.0] * k
    in_flight, peak = [0] * k, [0] * k
    remaining = sum(len(a) for a in actions)
    while remaining:
        progressed = False
        for s in range(k):
            if pos[s] == len(actions[s]):
                continue
            kind, m = actions[s][pos[s]]
            deps = [("F", s - 1, m)] if kind == "F" and s > 0 else []
            if kind == "B":
                deps = [("F", s, m)] + ([("B", s + 1, m)] if s < k - 1 else [])
            if not all(d in done for d in deps):
                continue
            start = max([clock[s]] + [done[d] for d in deps])
            cost = f_cost[s] if kind == "F" else b_cost[s]
            clock[s] = done[(kind, s, m)] = start + cost
            busy[s] += cost
            in_flight[s] += 1 if kind == "F" else -1
            peak[s] = max(peak[s], in_flight[s])
            pos[s] += 1
            remaining -= 1
            progressed = True
        if not progressed:
            raise RuntimeError("schedule deadlocks: no stage can run its next action")
    for s in range(k):
        for m in range(m_count):
            if ("F", s, m) not in done or ("B", s, m) not in done:
                raise RuntimeError(f"stage {s} never runs both passes of micro-batch {m}")
    return Simulation(makespan=max(clock), busy=busy, peak_in_flight=peak)
