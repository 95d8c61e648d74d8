"""What really runs faster: sparse (CSR) layers, thinned layers and int8, timed on the CPU.

A pruning mask alone saves nothing: the dense kernel multiplies the zeros too. :func:`sparse_copy`
replaces each pruned ``nn.Linear`` by :class:`SparseLinear`, whose weight is a ``torch.sparse_csr``
matrix; its kernels touch only the stored non-zeros (Deep Compression, sec. 6, reports about 3x for
pruned fully connected layers at batch 1, where the dense layer is bound by reading the weights).
Batch 1 uses the sparse matrix-vector product (``addmv``); larger batches the sparse-dense product.
:func:`latency` times a model the same way for every variant, interleaving their repetitions so that
drift of a shared machine hits all of them alike.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import torch
from torch import nn


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored in CSR (inference only)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach().clone()
        self.out_features, self.in_features = linear.weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is not None else x.new_zeros(self.out_features)
        if x.shape[0] == 1:
            return torch.addmv(bias, self.weight, x[0]).unsqueeze(0)
        return (self.weight @ x.t()).t() + bias


def sparse_copy(model: nn.Module, max_density: float = 0.5) -> tuple[nn.Module, list[str]]:
    """A copy whose Linear layers with at most ``max_density`` non-zeros are :class:`SparseLinear`."""
    out = copy.deepcopy(model).cpu().eval()
    replaced = []
    for name, module in list(out.named_modules()):
        if isinstance(module, nn.Linear) and name:
            density = float((module.weight != 0).float().mean())
            if density <= max_density:
                parent_name, _, child = name.rpartition(".")
                parent = out.get_submodule(parent_name) if parent_name else out
                setattr(parent, child, SparseLinear(module))
                replaced.append(name)
    return out, replaced


@torch.inference_mode()
def latency(
    models: dict[str, nn.Module], x: torch.Tensor, budget_s: float = 1.0, clock=time.perf_counter
) -> dict[str, float]:
    """Median seconds per forward of each model on ``x``, repetitions interleaved across models.

    ``clock`` is wall time by default; with one torch thread, ``time.thread_time`` (CPU seconds of
    the calling thread) ignores the time other processes of a shared machine take the core away.
    """
    for m in models.values():
        m.eval()
        m(x)  # warm-up: first-call allocations and kernel selection
    t0 = clock()
    for m in models.values():
        m(x)
    once = max(clock() - t0, 1e-6)
    inner = max(1, int(0.02 / once))  # each sample lasts ~20 ms so the timer's resolution is irrelevant
    rounds = max(3, min(50, int(budget_s / (once * inner + 1e-9))))
    samples: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, m in models.items():
            start = clock()
            for _ in range(inner):
                m(x)
            samples[key].append((clock() - start) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}
