"""The synthetic workload the model-parallel benchmarks share: a wide MLP and fixed random batches."""

from __future__ import annotations

import torch
from torch import nn

from escala.models import build_model


def mlp(spec: dict) -> nn.Module:
    """``spec["features"] -> spec["hidden"] -> 10``, the same initial weights on every call."""
    torch.manual_seed(0)
    return build_model("mlp", (spec["features"],), 10, hidden=spec["hidden"])


def random_batches(spec: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``spec["steps"]`` batches of ``spec["batch"]`` Gaussian inputs and uniform labels (seeded)."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(spec["batch"], spec["features"], generator=g),
            torch.randint(0, 10, (spec["batch"],), generator=g),
        )
        for _ in range(spec["steps"])
    ]
