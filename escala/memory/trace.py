"""Trace a model's forward pass into a graph of tensors with sizes and what autograd saves of them.

The graph comes from a ``torch.fx`` trace that keeps recurrent layers (``nn.RNNBase``: LSTM, GRU,
RNN) as single module calls (their forward branches on values fx cannot trace); shapes come from
running it on the ``meta`` device (no memory, no compute: ResNet-50 at batch 256 traces in a
fraction of a second). Each node gets:

* ``out_bytes``: the size of its output, and ``alias``: the node whose storage the output shares
  (views such as ``Flatten`` and in-place activations allocate nothing);
* ``saved``: which values autograd keeps for the backward pass of this node (its input, its output)
  and ``extra_saved_bytes`` for tensors it creates only for backward (max-pool indices, batch-norm
  statistics, dropout masks). These rules are PyTorch's derivative formulas
  (``tools/autograd/derivatives.yaml``): Linear/Conv keep their input, ReLU its output, MaxPool its
  input plus int64 indices, BatchNorm its input plus per-channel mean and inverse std, adaptive
  average pooling and views nothing, recurrent layers what :mod:`escala.memory.recurrent` lists
  (oneDNN's LSTM: input, output, states and its workspace). :mod:`escala.memory.measure` checks
  them against the bytes ``saved_tensors_hooks`` actually sees.
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
from escala.memory.recurrent import recurrent_saved

# Module types whose output is a view of (or the same storage as) their input.
_VIEWS = (nn.Flatten, nn.Identity, nn.Unflatten)
_ELEMENTWISE_SAVES_OUTPUT = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Softmax, nn.LogSoftmax)
_FUNCTION_VIEWS = frozenset(
    "flatten view reshape squeeze unsqueeze contiguous size permute transpose t".split()
)
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
    module: nn.Module | None = field(default=None, repr=False, compare=False)  # recurrent layers only


def _nbytes(meta) -> int:
    return math.prod(meta.shape) * meta.dtype.itemsize


class _Tracer(fx.Tracer):
    """fx's tracer, with recurrent layers (and their subclasses) kept as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.RNNBase) or super().is_leaf_module(m, module_qualified_name)


def _tensor_meta(n: fx.Node):
    """The traced output of ``n`` as one tensor's metadata (a recurrent layer's output, not its
    final states, when it returns a tuple); None for values that are not tensors (``x.shape[0]``)."""
    meta = n.meta.get("tensor_meta")
    if isinstance(meta, (tuple, list)) and meta and hasattr(meta[0], "shape"):
        return meta[0]
    return meta if hasattr(meta, "shape") else None


def trace(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, dtype=torch.float32) -> list[Node]:
    """The forward graph of ``model`` on a batch of ``batch_size`` samples of ``input_shape``."""
    root = copy.deepcopy(model).to("meta")
    try:
        gm = fx.GraphModule(root, _Tracer().trace(root))
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
        meta = _tensor_meta(n)
        if meta is None:
            if n.op in ("call_module", "placeholder"):
                raise UserError(f"memory estimate: node {n.name} does not produce a single tensor")
            continue  # sizes and other Python values (x.shape[0]) hold no memory
        ins = [a.name for a in n.all_input_nodes if a.name in by_name]
        target = getattr(n.target, "__name__", str(n.target)) if n.op == "call_function" else str(n.target)
        node = Node(n.name, target, n.op, ins, tuple(meta.shape), _nbytes(meta), dtype=meta.dtype)
        first = by_name[ins[0]] if ins else None
        if n.op == "placeholder":
            node.kind = "input"
        elif n.op == "call_module":
            mod = modules[n.target]
            node.kind = type(mod).__name__
            if id(mod) not in seen_modules:
                node.params = sum(p.numel() for p in mod.parameters(recurse=False))
                seen_modules.add(id(mod))
            _module_rule(node, mod, first, by_name)
        else:
            node.kind = getattr(n.target, "__name__", str(n.target))
            _function_rule(node, n, first)
        nodes.append(node)
        by_name[node.name] = node
    return nodes


def _owner(node: Node, by_name: dict[str, Node]) -> Node:
    while node.alias is not None:
        node = by_name[node.alias]
    return node


def _module_rule(node: Node, mod: nn.Module, first: Node | None, by_name: dict[str, Node]) -> None:
    inp = first.name if first else None
    if isinstance(mod, nn.RNNBase) and first is not None:
        owner = _owner(first, by_name)
        time_major = isinstance(owner.module, nn.RNNBase) and owner.module.batch_first
        keeps_input, keeps_output, extra = recurrent_saved(mod, first.out_shape, time_major)
        node.module = mod
        node.saved = [inp] * keeps_input + [node.name] * keeps_output
        node.extra_saved_bytes = extra
    elif isinstance(mod, _VIEWS) or (isinstance(mod, nn.Dropout) and mod.p == 0):
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
    if n.target is operator.getitem and len(node.inputs) == 1:
        node.alias = first.name if first else None  # basic indexing (x[:, -1]) is a view
        return
    if n.target in (operator.add, torch.add, operator.sub, torch.cat, operator.getitem):
        return  # gradients pass through without saved values
    if name in _FUNCTION_VIEWS:
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
