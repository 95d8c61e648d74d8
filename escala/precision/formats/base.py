"""The interface every simulated number format implements.

A format is simulated on float32 tensors whose values all lie on the format's grid: ``quantize``
maps any float32 tensor onto the grid, and ``mul``/``add`` combine two on-grid tensors the way
hardware working in that format would (the exact result rounded once, by default). Logarithmic
formats override ``mul``/``add`` with their own arithmetic. Simulation, not emulation of speed: the
values are what low-precision hardware would compute, the time is float32's plus the rounding.
"""

from __future__ import annotations

from typing import Any

import torch


class Format:
    """Base class: ``quantize`` is abstract; ``mul``/``add`` round the float32 result once."""

    name = "format"

    def quantize(
        self, x: torch.Tensor, stochastic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Product of two on-grid tensors, rounded to nearest once."""
        return self.quantize(a * b)

    def add(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        stochastic: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sum of two on-grid tensors, rounded once (to nearest, or stochastically)."""
        return self.quantize(a + b, stochastic, generator)

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` (M x K by K x N, on-grid): format products summed by a balanced tree of format adds.

        The tree is what a hardware dot-product unit's adder tree does; depth ``ceil(log2 K)``.
        """
        return tree_sum(self, self.mul(a[:, :, None], b[None, :, :]), dim=1)

    def describe(self) -> dict[str, Any]:
        """The format's parameters (for summaries and benchmark tables)."""
        return {"format": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.describe().items() if k != "format")
        return f"{type(self).__name__}({args})"


def tree_sum(fmt: Format, terms: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum ``terms`` along ``dim`` by pairwise format additions (depth ``ceil(log2 K)``)."""
    terms = terms.movedim(dim, 0)
    while terms.shape[0] > 1:
        if terms.shape[0] % 2:
            # An odd count carries its last term up one level unchanged (adding zero is exact).
            terms = torch.cat([terms, torch.zeros_like(terms[:1])])
        terms = fmt.add(terms[0::2], terms[1::2])
    return terms[0]
