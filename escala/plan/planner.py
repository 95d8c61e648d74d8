"""Predict every strategy on N = 1..N_max devices, and recommend the fastest plan that fits.

Rows are computed for N = 1, 2, 4, ... and N_max (every power of two and the cluster's size). For the
combinations (pipeline x data, tensor x data) each N gets the best split that fits: pipeline stages
``K`` and tensor shards ``T`` (``T`` within a node) dividing ``N`` with at least two replicas. Scaling
efficiency is against one device training alone (the allreduce row at N = 1).

``recommended`` is the row of highest throughput among those that fit in device memory (ties: fewer
devices). When no row fits, :func:`no_fit_message` says by how much, with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from escala.plan.dataparallel import allreduce_cost, backup_cost, localsgd_cost
from escala.plan.modelparallel import pipeline_cost, split_fits_model, tensor_cost
from escala.plan.paramserver import paramserver_cost
from escala.plan.step import Setting, StepCost
from escala.plan.units import human_bytes

STRATEGIES = (
    "allreduce",
    "allreduce+fp16",
    "allreduce+qsgd",
    "allreduce+topk",
    "localsgd",
    "backup",
    "paramserver",
    "pipeline",
    "tensor",
    "pipeline x data",
    "tensor x data",
)


def device_counts(n_max: int) -> list[int]:
    out, n = [], 1
    while n < n_max:
        out.append(n)
        n *= 2
    return [*out, n_max]


@dataclass
class Plan:
    setting: Setting
    rows: list[StepCost]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    baseline: StepCost | None = None

    @property
    def fitting(self) -> list[StepCost]:
        return [r for r in self.rows if r.fits]

    @property
    def recommended(self) -> StepCost | None:
        fitting = self.fitting
        return max(fitting, key=lambda r: (r.throughput, -r.devices)) if fitting else None

    def best_devices(self) -> dict[str, int]:
        """Per strategy, the device count of highest throughput (the knee under strong scaling)."""
        best: dict[str, StepCost] = {}
        for r in self.rows:
            if r.strategy not in best or r.throughput > best[r.strategy].throughput:
                best[r.strategy] = r
        return {k: v.devices for k, v in best.items()}


def _best(candidates: list[StepCost]) -> StepCost | None:
    if not candidates:
        return None
    fitting = [c for c in candidates if c.fits]
    if fitting:
        return max(fitting, key=lambda c: c.throughput)
    return min(candidates, key=lambda c: c.memory)


def step_overhead(s: Setting, strategy: str, row: StepCost) -> float:
    """The fixed cost per step of ``row``: the device's ``step_overhead``, or when it is "measure",
    :func:`measured_overhead`."""
    dev = s.cluster.device
    if not dev.overhead_measured:
        return dev.step_overhead
    return measured_overhead(s, strategy, row)


def measured_overhead(s: Setting, strategy: str, row: StepCost) -> float:
    """An empty model's measured step under ``strategy`` here, minus this model's prediction for it.

    The empty model (two units per hidden layer, as many layers as an mlp being predicted, on 1x1x1
    inputs; for a recurrent model an lstm of 2-unit layers over the same number of time steps of one
    feature) has no compute and no bytes to
    speak of, so what its step costs beyond the prediction is the strategy's fixed cost on this machine;
    it is added to every model's prediction. 0 for a layout this machine cannot run.
    """
    from escala.plan.profile import profile_model
    from escala.plan.validate import EMPTY, empty_step_seconds

    dev = s.cluster.device
    # As many layers as the model (an mlp), each of two units: per-layer fixed costs (autograd hooks,
    # DTensor dispatch, one collective per tensor-parallel message) are in the empty step.
    hidden = (2,) * len(s.profile.hidden) if s.profile.name == "mlp" and s.profile.hidden else EMPTY["hidden"]
    time_steps = s.profile.time_steps
    if time_steps:  # a recurrent model: an lstm of 2-unit layers over as many steps of one feature
        hidden = (2,) * len(s.profile.recurrent_layers)
        empty = profile_model(
            "lstm", input_shape=(time_steps, 1), num_classes=s.profile.num_classes, hidden=hidden
        )
    else:
        empty = profile_model(
            "mlp", input_shape=EMPTY["shape"], num_classes=s.profile.num_classes, hidden=hidden
        )
    quiet = replace(s.cluster, device=replace(dev, overhead_measured=False, step_overhead=0.0))
    predicted, _ = predict(replace(s, cluster=quiet, profile=empty), strategy, row.devices)
    replicas = row.layout.get("data", 1)
    batch = max(1, round(row.samples / replicas))
    try:
        measured = empty_step_seconds(
            strategy,
            row.devices,
            batch,
            hidden=hidden,
            time_steps=time_steps,
            h=s.localsgd_h,
            # (a recurrent pipeline's time steps may outnumber the batch's samples)
            microbatches=min(row.layout.get("microbatches", 4), batch),
            backups=row.layout.get("backups", 0),
        )
    except ValueError:  # pipeline x data, tensor x data: no layout of this machine runs them
        return 0.0
    return max(0.0, measured - (predicted.step if predicted else 0.0))


def predict(s: Setting, strategy: str, devices: int) -> tuple[StepCost | None, str]:
    """One row, or (None, why it does not apply)."""
    mem = s.cluster.device.memory
    per_node = s.cluster.devices_per_node

    def mark(c: StepCost | None) -> StepCost | None:
        if c is not None:
            c.fits = c.memory <= mem
            c.overhead = step_overhead(s, strategy, c)
        return c

    if strategy in ("tensor", "tensor x data") and s.profile.recurrent_layers:
        layers = ", ".join(s.profile.recurrent_layers)
        return (
            None,
            f"escala's tensor engine splits Linear pairs; {s.profile.name}'s recurrent layers ({layers}) stay whole",
        )
    if strategy in ("pipeline", "tensor x data", "pipeline x data", "tensor") and devices == 1:
        return None, "needs at least 2 devices"
    if s.scaling == "strong" and s.batch < devices and strategy not in ("pipeline", "tensor"):
        return None, f"a global batch of {s.batch} cannot give each of {devices} replicas a sample"
    if strategy == "allreduce":
        return mark(allreduce_cost(s, devices)), ""
    if strategy.startswith("allreduce+"):
        return mark(allreduce_cost(s, devices, codec=strategy.split("+", 1)[1])), ""
    if strategy == "localsgd":
        return mark(localsgd_cost(s, devices)), ""
    if strategy == "backup":
        if devices < 2:
            return None, "needs at least 2 devices (one is a backup)"
        return mark(backup_cost(s, devices)), ""
    if strategy == "paramserver":
        return mark(paramserver_cost(s, devices)), ""
    if strategy == "pipeline":
        why = split_fits_model(s, devices)
        return (None, why) if why else (mark(pipeline_cost(s, devices)), "")
    if strategy == "tensor":
        return mark(tensor_cost(s, devices)), ""
    if strategy == "pipeline x data":
        cands = [
            mark(pipeline_cost(s, k, devices // k))
            for k in range(2, devices // 2 + 1)
            if devices % k == 0 and split_fits_model(s, k) is None
        ]
        best = _best(cands)
        return (best, "") if best else (None, "no K >= 2 with D >= 2 replicas divides the devices")
    if strategy == "tensor x data":
        cands = [
            mark(tensor_cost(s, t, devices // t))
            for t in range(2, min(per_node, devices // 2) + 1)
            if devices % t == 0
        ]
        best = _best(cands)
        return (
            (best, "") if best else (None, f"no T in 2..{per_node} with D >= 2 replicas divides the devices")
        )
    raise ValueError(strategy)


def make_plan(s: Setting, n_max: int, strategies: tuple[str, ...] = STRATEGIES) -> Plan:
    baseline, _ = predict(s, "allreduce", 1)
    plan = Plan(s, [], [], baseline)
    for strategy in strategies:
        for n in device_counts(n_max):
            row, why = predict(s, strategy, n)
            if row is None:
                plan.skipped.append({"strategy": strategy, "devices": n, "reason": why})
                continue
            row.efficiency = (
                row.throughput / (n * baseline.throughput) if baseline.throughput else float("nan")
            )
            plan.rows.append(row)
    return plan


def no_fit_message(plan: Plan) -> str:
    s = plan.setting
    smallest = min(plan.rows, key=lambda r: r.memory)
    base = plan.baseline
    est = s.profile.memory(int(s.replica_batch(1)))
    state = est.param_bytes + est.grad_bytes + est.optimizer_bytes
    return (
        f"no plan fits in {human_bytes(s.cluster.device.memory)} per device ({s.cluster.device.name}): "
        f"{s.profile.name} at batch {s.batch} needs {human_bytes(base.memory)} on one device "
        f"({human_bytes(state)} of parameters, gradients and optimizer state, {human_bytes(est.activation_bytes)} "
        f"of activations); the smallest need is {human_bytes(smallest.memory)} "
        f"({smallest.strategy} {smallest.layout} on {smallest.devices} devices). "
        "Lower --batch-size, allow more devices (--devices), or describe a device with more memory"
    )
