"""Estimate the memory of a training step before running it.

For a model, a batch size and a precision::

    param_bytes      = 4 * params                       (float32 master weights)
    grad_bytes       = 4 * params
    optimizer_bytes  = 4 * params * k                   (k = 0 plain SGD, 1 with momentum, 2 AdamW)
    activation_bytes = sum of the distinct tensors autograd saves for backward, per layer
                       (traced on the meta device, :mod:`escala.memory.trace`), at the precision's
                       element size (bf16/fp16: 2 bytes, an approximation of what autocast keeps)
    total_bytes      = param + grad + optimizer + activation + the largest layer output
                       (+ the input batch when no layer keeps it: a batch-first LSTM keeps a copy)
    peak_bytes       = param + optimizer + max over the step of the live activations, activation
                       gradients and parameter gradients (the eager timeline of escala.memory.plan)

``total_bytes`` is the accounting of DeepSpeed's and Hugging Face's estimators (Rajbhandari et al.,
"ZeRO", SC 2020, sec. 3), a safe upper bound; ``peak_bytes`` follows when each tensor is created and
freed during forward and backward, as PyTorch does (the optimizer state exists from the second
step on). The activation count is validated against ``torch.autograd.graph.saved_tensors_hooks``
and the peak against PyTorch's ``MemTracker`` (``escala bench memory``, tests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from escala.errors import UserError
from escala.memory.plan import eager_peak, lifetimes
from escala.memory.trace import Node, storage_of, trace

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adamw": 2}


@dataclass
class LayerMemory:
    name: str
    kind: str
    out_shape: tuple[int, ...]
    params: int
    activation_bytes: int  # bytes newly kept for backward at this layer


@dataclass
class MemoryEstimate:
    params: int
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    activation_elements: int  # elements of the saved float tensors (what "activation count" means)
    largest_output_bytes: int
    total_bytes: int
    peak_bytes: int
    batch_size: int
    precision: str
    layers: list[LayerMemory] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = [dict(asdict(layer), out_shape=list(layer.out_shape)) for layer in self.layers]
        return out


def optimizer_slots(optimizer: str, momentum: float = 0.9) -> int:
    if optimizer == "sgd":
        return OPTIMIZER_SLOTS["momentum"] if momentum > 0 else 0
    if optimizer == "adamw":
        return OPTIMIZER_SLOTS["adamw"]
    raise UserError(f"optimizer {optimizer!r} is unknown; choose sgd or adamw")


def saved_values(nodes: list[Node]) -> dict[str, tuple[str, int]]:
    """Distinct storages saved for backward: storage -> (first layer that saved it, bytes)."""
    root = storage_of(nodes)
    size = {n.name: n.out_bytes for n in nodes}
    out: dict[str, tuple[str, int]] = {}
    for node in nodes:
        for value in node.saved:
            key = root[value]
            if key not in out:
                out[key] = (node.name, size[key])
    return out


def estimate_memory(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    *,
    precision: str = "fp32",
    optimizer: str = "sgd",
    momentum: float = 0.9,
    num_classes: int | None = None,
) -> MemoryEstimate:
    """Estimate the training memory of ``model`` on batches of ``batch_size`` (see module docstring).

    ``num_classes`` adds the loss's saved log-probabilities (cross-entropy), as the trainer uses.
    """
    if precision not in BYTES:
        raise UserError(f"precision {precision!r} is unknown; choose fp32, bf16 or fp16")
    if batch_size < 1:
        raise UserError(f"batch size {batch_size}: must be at least 1")
    nodes = trace(model, tuple(input_shape), batch_size)
    scale = BYTES[precision] / 4
    params = sum(p.numel() for p in model.parameters())
    saved = saved_values(nodes)
    per_layer: dict[str, int] = {}
    elements = 0
    for first, nbytes in saved.values():
        per_layer[first] = per_layer.get(first, 0) + int(nbytes * scale)
        elements += nbytes // 4
    layers = []
    for node in nodes:
        extra = int(node.extra_saved_bytes * (scale if node.kind == "Dropout" else 1))
        layers.append(
            LayerMemory(
                node.target, node.kind, node.out_shape, node.params, per_layer.get(node.name, 0) + extra
            )
        )
    if num_classes:
        # cross_entropy = log_softmax (keeps its float output) + nll_loss (keeps the int64 targets).
        loss_bytes = batch_size * num_classes * 4 + batch_size * 8
        layers.append(LayerMemory("loss", "CrossEntropy", (batch_size, num_classes), 0, loss_bytes))
    activation = sum(layer.activation_bytes for layer in layers)
    # The largest gradient in flight: outputs of real layers (the input batch gets no gradient,
    # views share their input's).
    largest = int(
        max((n.out_bytes for n in nodes if n.kind != "input" and n.alias is None), default=0) * scale
    )
    # The training loop holds the input batch; it is in ``activation`` only if a layer keeps it.
    held_input = sum(n.out_bytes for n in nodes if n.kind == "input" and n.name not in saved)
    p_bytes = 4 * params
    opt_bytes = p_bytes * optimizer_slots(optimizer, momentum)
    return MemoryEstimate(
        params=params,
        param_bytes=p_bytes,
        grad_bytes=p_bytes,
        optimizer_bytes=opt_bytes,
        activation_bytes=activation,
        activation_elements=elements,
        largest_output_bytes=largest,
        total_bytes=2 * p_bytes + opt_bytes + activation + largest + held_input,
        peak_bytes=p_bytes
        + opt_bytes
        + int(scale * eager_peak(lifetimes(nodes, num_classes=num_classes or 0, param_grads=True))),
        batch_size=batch_size,
        precision=precision,
        layers=layers,
    )
