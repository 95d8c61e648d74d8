"""Memory: estimate a training step's memory, plan it by liveness, checkpoint activations to a budget.

* :func:`estimate_memory` (:mod:`escala.memory.estimate`): params, grads, optimizer, activations, peak.
* :func:`plan_memory` (:mod:`escala.memory.plan`): naive vs eager vs planned (liveness + in-place) peak.
* :func:`plan_checkpoints` / :class:`CheckpointedSequential` (:mod:`escala.memory.checkpointing`).
* :mod:`escala.memory.measure`: saved-tensor bytes and MemTracker peaks, the measurements they are checked against.
"""

from escala.memory.checkpointing import CheckpointedSequential, plan_checkpoints, sqrt_plan, unit_costs
from escala.memory.estimate import MemoryEstimate, estimate_memory
from escala.memory.plan import MemoryPlan, plan_memory
from escala.memory.trace import trace

__all__ = [
    "CheckpointedSequential",
    "MemoryEstimate",
    "MemoryPlan",
    "estimate_memory",
    "plan_checkpoints",
    "plan_memory",
    "sqrt_plan",
    "trace",
    "unit_costs",
]
