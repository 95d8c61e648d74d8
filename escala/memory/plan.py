"""Static memory planning by liveness analysis over the traced graph (forward + backward).

Every tensor of a training step becomes a buffer with a lifetime ``[first, last]`` on a timeline of
``2n + 1`` steps (forward of node 0..n-1, the loss, backward of node n-1..0):

* a forward output lives from its node until its last forward reader, or, if autograd saves it,
  until the backward of the earliest node that saved it; the input batch lives to the end (the
  training loop holds it);
* tensors kept only for backward (pool indices, batch-norm statistics) live from their node's
  forward to its backward; the gradient of a value lives from the backward of its last reader to
  the backward of its producer; a layer's parameter gradients appear at its backward and stay
  until the optimizer step (the end);
* views (Flatten) and in-place activations share their input's buffer.

The *naive* footprint gives every tensor its own memory (the sum of all sizes). The *eager* peak is
what freeing each tensor when it dies gives (PyTorch's reference counting): the maximum over time of
live bytes. The *plan* goes further like a static allocator (Graphcore's Poplar, TFLite's "greedy by
size" arena planner, Pisarchyk and Lee 2020): ReLUs whose input nobody else needs run in place, and
buffers are placed at offsets of one arena, largest first, each at the lowest offset that overlaps
no buffer alive at the same time. ``planned_peak_bytes = static + arena size``; static is the
parameters and the optimizer state. The eager peak matches PyTorch's own ``MemTracker`` measurement
of a real step to within 0.2 % on the zoo models (``escala bench memory``).
"""

from __future__ import annotations

from dataclasses import dataclass

from escala.memory.trace import Node, storage_of


@dataclass
class Buffer:
    name: str
    size: int
    start: int
    end: int
    offset: int = -1


@dataclass
class MemoryPlan:
    static_bytes: int  # parameters + optimizer state
    naive_bytes: int  # static + the sum of every tensor's size
    eager_peak_bytes: int  # static + max live bytes, freeing each tensor when it dies
    planned_peak_bytes: int  # static + arena size after in-place activations and offset packing
    inplace: list[str]
    buffers: list[Buffer]

    def as_dict(self) -> dict:
        return {
            "static_bytes": self.static_bytes,
            "naive_bytes": self.naive_bytes,
            "eager_peak_bytes": self.eager_peak_bytes,
            "planned_peak_bytes": self.planned_peak_bytes,
            "inplace": list(self.inplace),
            "buffers": len(self.buffers),
        }


def _inplace_candidates(nodes: list[Node]) -> set[str]:
    """ReLU-like nodes that may overwrite their input: it has no other reader and nobody saves it."""
    readers: dict[str, int] = {}
    saved_by_other: set[str] = set()
    for node in nodes:
        for i in node.inputs:
            readers[i] = readers.get(i, 0) + 1
    root = storage_of(nodes)
    for node in nodes:
        for value in node.saved:
            if value != node.name:
                saved_by_other.add(root[value])
    out = set()
    for node in nodes:
        if node.kind in ("ReLU", "relu") and node.alias is None and len(node.inputs) == 1:
            src = node.inputs[0]
            producer = next(n for n in nodes if n.name == src)
            if producer.kind != "input" and readers[src] == 1 and root[src] not in saved_by_other:
                out.add(node.name)
    return out


def lifetimes(
    nodes: list[Node], inplace: set[str] = frozenset(), num_classes: int = 0, param_grads: bool = False
) -> list[Buffer]:
    """Buffers with their lifetimes on the forward+backward timeline (see the module docstring)."""
    n = len(nodes)
    index = {node.name: i for i, node in enumerate(nodes)}
    alias = {node.name: node.alias for node in nodes}
    for name in inplace:
        alias[name] = nodes[index[name]].inputs[0]
    root: dict[str, str] = {}
    for node in nodes:
        a = alias[node.name]
        root[node.name] = root.get(a, a) if a else node.name
    bwd = {node.name: 2 * n - index[node.name] for node in nodes}  # backward step of each node
    start: dict[str, int] = {}
    end: dict[str, int] = {}
    size: dict[str, int] = {}
    for i, node in enumerate(nodes):
        r = root[node.name]
        if r == node.name:
            start[r], end[r], size[r] = i, i, node.out_bytes
        end[r] = max(end[r], i)
        for inp in node.inputs:
            end[root[inp]] = max(end[root[inp]], i)
        for value in node.saved:
            end[root[value]] = max(end[root[value]], bwd[node.name])
    end[root[nodes[-1].name]] = max(end[root[nodes[-1].name]], n)  # the logits feed the loss
    for node in nodes:  # the caller holds the input batch for the whole step (a copying first layer,
        if node.kind == "input":  # such as a batch-first LSTM, does not free it)
            end[node.name] = 2 * n
    buffers = [Buffer(r, size[r], start[r], end[r]) for r in size]
    for i, node in enumerate(nodes):
        if node.extra_saved_bytes:
            buffers.append(Buffer(f"{node.name}.saved", node.extra_saved_bytes, i, bwd[node.name]))
        # Gradient of this node's output: formed at the backward of its last reader (or by the loss),
        # consumed by this node's backward. Views and in-place nodes reuse their input's gradient.
        if node.kind == "input" or root[node.name] != node.name:
            continue
        readers = [index[m.name] for m in nodes if node.name in m.inputs]
        first = bwd[nodes[max(readers)].name] if readers else n
        buffers.append(Buffer(f"{node.name}.grad", node.out_bytes, first, bwd[node.name]))
    if param_grads:
        # Parameter gradients appear at their layer's backward and stay until the optimizer step.
        for node in nodes:
            if node.params:
                buffers.append(Buffer(f"{node.name}.param_grad", 4 * node.params, bwd[node.name], 2 * n + 1))
    if num_classes:
        batch = nodes[-1].out_shape[0]
        buffers.append(Buffer("loss.logp", batch * num_classes * 4, n, n))
    return buffers


def eager_peak(buffers: list[Buffer]) -> int:
    events = sorted({b.start for b in buffers})
    return max((sum(b.size for b in buffers if b.start <= t <= b.end) for t in events), default=0)


def pack(buffers: list[Buffer]) -> int:
    """Greedy-by-size offset assignment; returns the arena size."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.start)):
        clashes = sorted(
            (p for p in placed if p.start <= buf.end and buf.start <= p.end), key=lambda p: p.offset
        )
        offset = 0
        for p in clashes:
            if offset + buf.size <= p.offset:
                break
            offset = max(offset, p.offset + p.size)
        buf.offset = offset
        placed.append(buf)
    return max((b.offset + b.size for b in placed), default=0)


def plan_memory(
    nodes: list[Node], static_bytes: int, num_classes: int = 0, inplace: bool = True
) -> MemoryPlan:
    """Naive, eager and planned footprints of one training step of the traced ``nodes``."""
    plain = lifetimes(nodes, num_classes=num_classes, param_grads=True)
    chosen = _inplace_candidates(nodes) if inplace else set()
    planned = lifetimes(nodes, chosen, num_classes=num_classes, param_grads=True)
    arena = pack(planned)
    return MemoryPlan(
        static_bytes=static_bytes,
        naive_bytes=static_bytes + sum(b.size for b in plain),
        eager_peak_bytes=static_bytes + eager_peak(plain),
        planned_peak_bytes=static_bytes + arena,
        inplace=sorted(chosen, key=[n.name for n in nodes].index),
        buffers=planned,
    )
