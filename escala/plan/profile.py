"""What the cost model needs to know about a model: FLOPs, parameter bytes, activation bytes, memory.

Everything is counted on the meta device (no weights are allocated, ResNet-50 costs nothing to build):

* FLOPs of forward + backward per sample, in total and per top-level child (the units a pipeline cuts),
  from :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions: 2 FLOPs per
  multiply-add, backward counted op by op, about twice the forward);
* each child's output bytes per sample (what a pipeline stage sends to the next);
* the output bytes per sample of every weight layer (Linear, Conv): what tensor parallelism all-reduces;
* the memory estimate of :func:`escala.memory.estimate.estimate_memory` at any batch size (cached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from escala.errors import UserError
from escala.memory.estimate import BYTES, MemoryEstimate, estimate_memory, optimizer_slots

DEFAULT_SHAPES = {"resnet50": ((3, 224, 224), 1000), "resnet20": ((3, 32, 32), 10)}
WEIGHT_LAYERS = ("Linear", "Conv1d", "Conv2d", "Conv3d")


@dataclass(frozen=True)
class ChildProfile:
    name: str
    params: int
    flops: float  # forward + backward FLOPs per sample
    out_bytes: float  # bytes of its output per sample (at the activation precision)


@dataclass
class ModelProfile:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    precision: str
    optimizer: str
    params: int
    flops_per_sample: float
    children: list[ChildProfile]
    tp_bytes_per_sample: float  # outputs of the weight layers, per sample
    tp_layers: int
    slots: int  # optimizer state slots per parameter
    hidden: tuple[int, ...] = (128, 64)  # mlp widths (to rebuild the model with real weights)
    grad_layers: list[tuple[int, float]] = field(
        default_factory=list
    )  # (params, flops) of each leaf, forward order
    model: nn.Module = field(repr=False, default=None)
    # escala's tensor engine (Megatron pairs of Linear layers, :mod:`escala.parallel.model.tensor`):
    # bytes per sample of each activation all-reduce of a step, and the FLOP share of the split layers
    tp_messages: list[float] = field(default_factory=list)
    tp_split_share: float = 1.0
    # Recurrent children (the lstm's LSTM layers) and the time steps they run over: escala pipelines
    # them over time steps (:mod:`escala.parallel.model.strategies.recurrent`), its tensor engine
    # cannot split them.
    recurrent_layers: tuple[str, ...] = ()
    time_steps: int = 0

    @property
    def param_bytes(self) -> float:
        return 4.0 * self.params

    @property
    def grad_bytes(self) -> float:
        return 4.0 * self.params

    def state_bytes(self, params: float | None = None) -> float:
        """Parameters + gradients + optimizer state (float32) for ``params`` parameters."""
        params = self.params if params is None else params
        return 4.0 * params * (2 + self.slots)

    def memory(self, batch: int) -> MemoryEstimate:
        return _estimate(self, max(1, int(batch)))

    def child_activation_bytes(self, batch: int) -> list[float]:
        """Bytes each child saves for backward at ``batch`` (the loss's share goes to the last child)."""
        est = self.memory(batch)
        index = {c.name: i for i, c in enumerate(self.children)}
        out = [0.0] * len(self.children)
        for layer in est.layers:
            top = layer.name.split(".")[0]
            out[index.get(top, len(out) - 1)] += layer.activation_bytes
        return out

    def describe(self) -> dict:
        return {
            "model": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "params": self.params,
            "param_bytes": self.param_bytes,
            "flops_per_sample": self.flops_per_sample,
            "precision": self.precision,
            "optimizer": self.optimizer,
            "children": [c.name for c in self.children],
        }


_CACHE: dict[tuple[int, int], MemoryEstimate] = {}


def _estimate(profile: ModelProfile, batch: int) -> MemoryEstimate:
    key = (id(profile), batch)
    if key not in _CACHE:
        _CACHE[key] = estimate_memory(
            profile.model,
            profile.input_shape,
            batch,
            precision=profile.precision,
            optimizer=profile.optimizer,
            num_classes=profile.num_classes,
        )
    return _CACHE[key]


def count_flops(
    model: nn.Module, input_shape: tuple[int, ...], num_classes: int, batch: int = 2
) -> tuple[float, dict[str, float], dict[str, float]]:
    """Forward + backward FLOPs per sample: (total, per top-level child, per module path)."""
    device = next((p.device for p in model.parameters()), torch.device("meta"))
    x = torch.randn(batch, *input_shape, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        nn.functional.cross_entropy(out.reshape(batch, -1), y).backward()
    root = type(model).__name__
    per_child, per_path = {}, {}
    for key, ops in counter.get_flop_counts().items():
        parts = key.split(".")
        if parts[0] == root and len(parts) > 1:
            per_path[".".join(parts[1:])] = sum(ops.values()) / batch
            if len(parts) == 2:
                per_child[parts[1]] = per_path[parts[1]]
    return counter.get_total_flops() / batch, per_child, per_path


def child_output_bytes(model: nn.Module, input_shape: tuple[int, ...], elem: int) -> dict[str, float]:
    sizes: dict[str, float] = {}
    hooks = [
        child.register_forward_hook(lambda _m, _i, o, name=name: sizes.__setitem__(name, o.numel() * elem))
        for name, child in model.named_children()
    ]
    try:
        with torch.no_grad():
            model(torch.empty(1, *input_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return sizes


def profile_model(
    name: str,
    batch_hint: int = 2,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    hidden: tuple[int, ...] = (128, 64),
    precision: str = "fp32",
    optimizer: str = "sgd",
) -> ModelProfile:
    """Profile zoo model ``name`` (default shapes: ImageNet for resnet50, CIFAR for resnet20, MNIST else)."""
    from escala.models import build_model

    if precision not in BYTES:
        raise UserError(f"--precision {precision!r}: choose fp32, bf16 or fp16")
    shape, classes = DEFAULT_SHAPES.get(name, ((1, 28, 28), 10))
    shape = tuple(input_shape or shape)
    classes = num_classes or classes
    torch.manual_seed(0)
    with torch.device("meta"):
        model = build_model(name, shape, classes, hidden=hidden)
    total, per_child, per_path = count_flops(model, shape, classes)
    grad_layers = [
        (sum(p.numel() for p in m.parameters(recurse=False)), per_path.get(path, 0.0))
        for path, m in model.named_modules()
        if path and any(True for _ in m.parameters(recurse=False))
    ]
    elem = BYTES[precision]
    outs = child_output_bytes(model, shape, elem)
    children = [
        ChildProfile(n, sum(p.numel() for p in m.parameters()), per_child.get(n, 0.0), outs.get(n, 0.0))
        for n, m in model.named_children()
    ]
    tp_bytes, tp_layers = 0.0, 0
    for module in model.modules():
        if type(module).__name__ in WEIGHT_LAYERS:
            tp_layers += 1
    est = estimate_memory(model, shape, 1, precision=precision, optimizer=optimizer, num_classes=classes)
    for layer in est.layers:
        if layer.kind in WEIGHT_LAYERS:
            tp_bytes += math.prod(layer.out_shape) * elem  # batch 1: per sample
    tp_messages, tp_split = tensor_messages(model, elem, per_child, total)
    recurrent = tuple(n for n, m in model.named_children() if isinstance(m, nn.RNNBase))
    return ModelProfile(
        name=name,
        input_shape=shape,
        num_classes=classes,
        precision=precision,
        optimizer=optimizer,
        params=sum(p.numel() for p in model.parameters()),
        flops_per_sample=total,
        children=children,
        tp_bytes_per_sample=tp_bytes,
        tp_layers=tp_layers,
        slots=optimizer_slots(optimizer),
        hidden=tuple(hidden),
        grad_layers=grad_layers,
        model=model,
        tp_messages=tp_messages,
        tp_split_share=tp_split,
        recurrent_layers=recurrent,
        time_steps=int(getattr(model, "steps", 0)) if recurrent else 0,
    )


def tensor_messages(
    model: nn.Module, elem: int, per_child: dict[str, float], total: float
) -> tuple[list[float], float]:
    """What escala's tensor engine all-reduces per step, per sample, and the FLOP share it splits.

    Each Linear pair (column, row) all-reduces the row layer's output forward and the column layer's
    input gradient backward, except for a column layer no weight layer precedes (its input needs no
    gradient). Unpaired layers stay whole on every rank. ``([], 1.0)`` for a model the engine cannot
    split (not an ``nn.Sequential`` of Linear pairs): the planner then counts one all-reduce per
    weight layer.
    """
    from escala.parallel.model.tensor import linear_pairs

    try:
        pairs, _ = linear_pairs(model)
    except UserError:
        return [], 1.0
    if not pairs:
        return [], 1.0
    children = dict(model.named_children())
    first = next((n for n, m in children.items() if any(True for _ in m.parameters())), None)
    messages: list[float] = []
    for col, row in pairs:
        messages.append(float(children[row].out_features * elem))
        if col != first:
            messages.append(float(children[col].in_features * elem))
    split = sum(per_child.get(n, 0.0) for pair in pairs for n in pair)
    return messages, (split / total if total else 1.0)
