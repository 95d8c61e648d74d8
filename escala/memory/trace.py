"""Trace a model's forward pass into a graph of tensors with sizes and what autograd saves of them.

The graph comes from ``torch.fx.symbolic_trace``; shapes come from running it on the ``meta`` device
(no memory, no compute: ResNet-50 at batch 256 traces in a fraction of a second). Each node gets:

* ``out_bytes``: the size of its output, and ``alias``: the node whose storage the output shares
  (views such as ``Flatten`` and in-place activations allocate nothing);
* ``saved``: which values autograd keeps for the backward pass of this node (its input, its output)
  and ``extra_saved_bytes`` for tensors it creates only for backward (max-pool indices, batch-norm
  statistics, dropout masks). These rules are PyTorch's derivative formulas
  (``tools/autograd/derivatives.yaml``): Linear/Conv keep their input, ReLU its output, MaxPool its
  input plus int64 indices, BatchNorm its input plus per-channel mean and inverse std, adaptive
  average pooling and views nothing. :mod:`escala.memory.measure` checks them against the bytes
  ``saved_tensors_hooks`` actually sees.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from escala.errors import UserError

# Module types whose output is a view of (or the same storage as) their input.
_VIEWS = (nn.Flatten, nn.Identity, nn.Unflatten)
_ELEMENTWISE_SAVES_OUTPUT = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Softmax, nn.LogSoftmax)
_SAVES_INPUT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Embedding)


@dataclass
class Node:
    name: str  # fx node name
    target: str  # qualified module name or function name
    kind: str  # module class name or function name
    inputs: list[str]
    out_shape: tuple[int, ...]
    out_bytes: int
    alias: str | None = None  # node whose storage the output is
    saved: list[str] = field(default_factory=list)  # values (node names) kept for backward
    extra_saved_bytes: int = 0
    params: int = 0  # parameters of the module, counted at its first call only
    dtype: torch.dtype = torch.float32


def _nbytes(meta) -> int:
    return math.prod(meta.shape) * meta.dtype.itemsize


def trace(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, dtype=torch.float32) -> list[Node]:
    """The forward graph of ``model`` on a batch of ``batch_size`` samples of ``input_shape``."""
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model).to("meta"))
    except Exception as err:  # fx cannot trace data-dependent control flow
        raise UserError(f"cannot trace the model with torch.fx for a memory estimate: {err}") from err
    gm.train()
    x = torch.empty((batch_size, *input_shape), device="meta", dtype=dtype)
    ShapeProp(gm).propagate(x)
    modules = dict(gm.named_modules())
    seen_modules: set[int] = set()
    nodes: list[Node] = []
    by_name: dict[str, Node] = {}
    for n in gm.graph.nodes:
        if n.op == "output":
            continue
        meta = n.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise UserError(f"memory estimate: node {n.name} does not produce a single tensor")
        ins = [a.name for a in n.all_input_nodes]
        node = Node(n.name, str(n.target), n.op, ins, tuple(meta.shape), _nbytes(meta), dtype=meta.dtype)
        first = by_name[ins[0]] if ins else None
        if n.op == "placeholder":
            node.kind = "input"
        elif n.op == "call_module":
            mod = modules[n.target]
            node.kind = type(mod).__name__
            if id(mod) not in seen_modules:
                node.params = sum(p.numel() for p in mod.parameters(recurse=False))
                seen_modules.add(id(mod))
            _module_rule(node, mod, first)
        else:
            node.kind = getattr(n.target, "__name__", str(n.target))
            _function_rule(node, n, first)
        nodes.append(node)
        by_name[node.name] = node
    return nodes


def _module_rule(node: Node, mod: nn.Module, first: Node | None) -> None:
    inp = first.name if first else None
    if isinstance(mod, _VIEWS) or (isinstance(mod, nn.Dropout) and mod.p == 0):
        node.alias = inp
    elif isinstance(mod, _ELEMENTWISE_SAVES_OUTPUT):
        if getattr(mod, "inplace", False):
            node.alias = inp
        node.saved = [node.name]
    elif isinstance(mod, _SAVES_INPUT):
        node.saved = [inp]
    elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
        node.saved = [inp]
        node.extra_saved_bytes = 2 * mod.num_features * 4  # save_mean, save_invstd (float32)
    elif isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        node.saved = [inp]
        node.extra_saved_bytes = math.prod(node.out_shape) * 8  # int64 argmax indices
    elif isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        pass  # backward needs only the input's shape
    elif isinstance(mod, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        node.saved = [inp]
    elif isinstance(mod, nn.Dropout):
        node.extra_saved_bytes = node.out_bytes  # the scaled keep-mask (float on CPU)
    elif isinstance(mod, nn.LayerNorm):
        node.saved = [inp]
        node.extra_saved_bytes = 2 * node.out_bytes // max(mod.normalized_shape[-1], 1)
    elif not any(True for _ in mod.parameters(recurse=False)) and not list(mod.children()):
        node.saved = [inp] if inp else []  # unknown parameter-free layer: assume it keeps its input
    else:
        node.saved = [inp] if inp else []


def _function_rule(node: Node, n: fx.Node, first: Node | None) -> None:
    name = node.kind
    if n.target in (operator.add, torch.add, operator.sub, torch.cat, operator.getitem):
        return  # gradients pass through without saved values
    if name in ("flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous", "size"):
        node.alias = first.name if first else None
        return
    if name in ("relu", "sigmoid", "tanh", "softmax", "log_softmax"):
        node.saved = [node.name]
        return
    if n.target in (operator.mul, torch.mul, torch.matmul, operator.matmul):
        node.saved = [a.name for a in n.all_input_nodes]
        return
    node.saved = [first.name] if first else []  # conservative for anything else


def storage_of(nodes: list[Node]) -> dict[str, str]:
    """Map each value to the node that owns its storage (following view/in-place aliases)."""
    root: dict[str, str] = {}
    for node in nodes:
        root[node.name] = root.get(node.alias, node.alias) if node.alias else node.name
    return root
