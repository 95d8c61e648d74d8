"""Training with a simulated number format: in the matrix multiplications only, or everywhere.

``scope="matmul"``: every ``nn.Linear`` (and ``nn.Conv2d``, through im2col) becomes a module whose
forward and backward products are computed in the format: the inputs (activations, weights, output
gradients) are rounded onto the format's grid, each scalar product ``a_ik * b_kj`` is a format
multiplication and the ``K`` products are summed by format additions in a balanced binary tree (the
adder tree of a hardware dot-product unit); bias additions too. Everything else stays float32.

``scope="all"`` adds, in the spirit of qtorch (Zhang et al., "QPyTorch", 2019): the output of every
other leaf module and its gradient are rounded to the format, the weights are stored on the grid,
and the optimizer's update is applied by a format addition (:mod:`escala.precision.kahan`, with or
without Kahan compensation). Normalisation statistics and the loss are computed in float32 from
on-grid inputs. Stochastic rounding, when asked for, applies to gradients and weight updates.

Values are float32 tensors lying on the format's grid, so speed is float32's plus the cost of
rounding and of the element-wise product tree (this simulates accuracy, not throughput).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from escala.precision.formats.base import Format, tree_sum

# Upper bound on the elements of one block of products held at once (M x K x N is chunked over M).
_BLOCK_ELEMENTS = 1 << 22


def format_matmul(fmt: Format, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for on-grid ``a`` (M x K) and ``b`` (K x N) by ``fmt.matmul``, in blocks of rows."""
    m, k = a.shape
    n = b.shape[1]
    rows = max(1, _BLOCK_ELEMENTS // max(k * n, 1))
    out = [fmt.matmul(a[start : start + rows], b) for start in range(0, m, rows)]
    return torch.cat(out) if out else a.new_zeros(0, n)


class _FormatLinear(torch.autograd.Function):
    """y = x W^T + b with every product and sum in the format, forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, fmt, stochastic):
        xq, wq = fmt.quantize(x), fmt.quantize(weight)
        y = format_matmul(fmt, xq, wq.t())
        if bias is not None:
            y = fmt.add(y, fmt.quantize(bias))
        ctx.save_for_backward(xq, wq)
        ctx.fmt, ctx.stochastic, ctx.has_bias = fmt, stochastic, bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        xq, wq = ctx.saved_tensors
        fmt = ctx.fmt
        g = fmt.quantize(grad, ctx.stochastic)
        grad_x = format_matmul(fmt, g, wq) if ctx.needs_input_grad[0] else None
        grad_w = format_matmul(fmt, g.t(), xq) if ctx.needs_input_grad[1] else None
        grad_b = tree_sum(fmt, g, dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


def format_linear(x, weight, bias, fmt: Format, stochastic: bool = False) -> torch.Tensor:
    lead = x.shape[:-1]
    y = _FormatLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias, fmt, stochastic)
    return y.reshape(*lead, weight.shape[0])


class FormatLinear(nn.Module):
    """Drop-in for an ``nn.Linear`` sharing its parameters (same state-dict keys), matmul in ``fmt``."""

    def __init__(self, linear: nn.Linear, fmt: Format, stochastic: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.fmt, self.stochastic = fmt, stochastic

    def forward(self, x):
        return format_linear(x, self.weight, self.bias, self.fmt, self.stochastic)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.fmt!r}"


class FormatConv2d(nn.Module):
    """Drop-in for an ``nn.Conv2d`` (groups=1) sharing its parameters: im2col, then :func:`format_linear`."""

    def __init__(self, conv: nn.Conv2d, fmt: Format, stochastic: bool = False) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("simulated Conv2d supports groups=1 with numeric zero padding only")
        self.weight, self.bias = conv.weight, conv.bias
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.fmt, self.stochastic = fmt, stochastic

    def forward(self, x):
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # B x (C k k) x L
        h, w = _out_size(x.shape[-2], self, 0), _out_size(x.shape[-1], self, 1)
        y = format_linear(cols.transpose(1, 2), self.weight.flatten(1), self.bias, self.fmt, self.stochastic)
        return y.transpose(1, 2).reshape(x.shape[0], self.out_channels, h, w)


def _out_size(size, conv, i):
    k, s, p, d = conv.kernel_size[i], conv.stride[i], conv.padding[i], conv.dilation[i]
    return math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1


class _Round(torch.autograd.Function):
    """Round to the format in the forward pass and round the gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x, fmt, stochastic):
        ctx.fmt, ctx.stochastic = fmt, stochastic
        return fmt.quantize(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.fmt.quantize(grad, ctx.stochastic), None, None


def round_activation(x: torch.Tensor, fmt: Format, stochastic: bool = False) -> torch.Tensor:
    return _Round.apply(x, fmt, stochastic)


class Simulation:
    """The changes made to a model by :func:`simulate_model`; ``remove()`` drops the hooks."""

    def __init__(self, fmt: Format, scope: str, replaced: list[str], handles: list[Any]):
        self.fmt, self.scope, self.replaced, self.handles = fmt, scope, replaced, handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def simulate_model(
    model: nn.Module, fmt: Format, scope: str = "matmul", stochastic: bool = False
) -> Simulation:
    """Put ``model``'s matmuls (``scope="matmul"``) or everything (``"all"``) into ``fmt``, in place.

    Linear/Conv2d children are replaced by :class:`FormatLinear`/:class:`FormatConv2d` sharing the
    same ``Parameter`` objects, so an optimizer built before or after sees the same tensors and
    checkpoints keep their keys. With ``"all"`` the weights are rounded now and every other leaf's
    output (and gradient) is rounded by a forward hook; weight updates are the optimizer hook's job
    (:class:`~escala.precision.kahan.KahanUpdates`).
    """
    if scope not in ("matmul", "all"):
        raise ValueError(f"scope {scope!r}: choose 'matmul' or 'all'")
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            new = None
            if type(child) is nn.Linear:
                new = FormatLinear(child, fmt, stochastic)
            elif type(child) is nn.Conv2d and child.groups == 1 and not isinstance(child.padding, str):
                new = FormatConv2d(child, fmt, stochastic)
            if new is not None:
                setattr(module, child_name, new)
                replaced.append(f"{name}.{child_name}" if name else child_name)
    handles: list[Any] = []
    if scope == "all":
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(fmt.quantize(p))

        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                return round_activation(output, fmt, stochastic)
            return output

        for module in model.modules():
            leaf = next(module.children(), None) is None
            if leaf and not isinstance(module, (FormatLinear, FormatConv2d)):
                handles.append(module.register_forward_hook(hook))
    return Simulation(fmt, scope, replaced, handles)
