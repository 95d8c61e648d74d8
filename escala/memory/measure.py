"""Measure what an estimate predicts: saved-for-backward bytes on any device, peak memory.

* :func:`saved_tensor_bytes` runs a real forward pass under ``torch.autograd.graph.saved_tensors_hooks``
  and adds up the distinct storages autograd keeps (parameters and buffers excluded). It is
  deterministic, unlike process RSS, where the allocator keeps freed memory.
* :func:`measured_peak` runs real training steps under PyTorch's ``MemTracker`` (a
  ``TorchDispatchMode`` that follows every storage's lifetime; ``torch.distributed._tools``) and
  returns the peak of live tensor bytes of the last step, on CPU or GPU; on CUDA it also reports
  ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def saved_tensor_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> int:
    """Bytes of the distinct tensors autograd saves for backward in ``model(x)`` (+ the loss if ``y``)."""
    static = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        if st.data_ptr() not in static and st.nbytes() > 0:
            seen[st.data_ptr()] = st.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
        if y is not None:
            F.cross_entropy(out, y)
    return sum(seen.values())


def measured_peak(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int = 2
) -> dict[str, Any]:
    """Peak live tensor bytes over the last of ``steps`` training steps (earlier ones create state)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(steps - 1):
        step()
    tracker = MemTracker()
    tracker.track_external(model, optimizer, x, y)
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    with tracker:
        step()
    snap = tracker.get_tracker_snapshot("peak")[x.device]
    out = {"peak_bytes": int(snap["Total"])}
    out.update({str(getattr(k, "value", k)).lower(): int(v) for k, v in snap.items() if k != "Total"})
    if x.is_cuda:
        out["cuda_max_allocated"] = int(torch.cuda.max_memory_allocated())
    return out
