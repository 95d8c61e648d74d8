"""Spatial parallelism: split the rows of a convolutional network's activations over processes.

Each of P processes owns a contiguous band of rows of every activation (``torch.tensor_split``
bands: the first ``H mod P`` bands are one row taller). For a windowed layer (convolution or max
pooling) with kernel k, stride s, padding p and dilation d, output row o reads input rows

    o*s - p  ..  o*s - p + d*(k-1)

so the process owning output rows [o0, o1) needs input rows [o0*s - p, (o1-1)*s - p + d*(k-1) + 1).
The rows of that range it does not own (the *halo*) come from the processes that own them by c10d
point-to-point send/recv; rows outside the image are the layer's padding (zeros for convolution,
-inf for max pooling). The layer then runs with vertical padding 0 on the extended band, which
yields exactly this process's output rows. In the backward pass the gradient of each halo row is
sent back to its owner and added to the owner's own gradient (the adjoint of the exchange).

Weights are replicated; each process's weight gradient covers its rows only, so
:meth:`SpatialParallel.sync_gradients` sums them over processes (one all-reduce). Before the first
layer that mixes rows (Flatten, Linear), the bands are gathered and the rest of the model runs
replicated; its gradient is then the same on every process and only each band's part flows back.

This is the spatial decomposition of Dryden et al., "Improving Strong-Scaling of CNN Training by
Exploiting Finer-Grained Parallelism", IPDPS 2019. No maintained PyTorch library does it on CPU,
so it is written here on c10d.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from escala.errors import UserError

ROWWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout2d)


def bands(height: int, parts: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) of ``parts`` contiguous bands of ``height`` rows (tensor_split sizes)."""
    base, extra = divmod(height, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def window(layer: nn.Module) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, dilation) of ``layer`` along the rows."""

    def first(v):
        return v[0] if isinstance(v, tuple) else v

    return first(layer.kernel_size), first(layer.stride), first(layer.padding), first(layer.dilation)


def needed_rows(out_band: tuple[int, int], k: int, s: int, p: int, d: int) -> tuple[int, int]:
    """Input rows [a, b) (may reach outside the image) that output rows ``out_band`` read."""
    o0, o1 = out_band
    return o0 * s - p, (o1 - 1) * s - p + d * (k - 1) + 1


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None


class _HaloExchange(torch.autograd.Function):
    """Own band -> extended band [a, b) (halo rows from their owners, ``fill`` outside the image)."""

    @staticmethod
    def forward(ctx, x, in_bands, need, rank, fill, group):
        a, b = need[rank]
        ext = x.new_full((*x.shape[:2], b - a, x.shape[3]), fill)
        mine = in_bands[rank]
        ops, recvs = [], []
        for q, their in enumerate(in_bands):
            if q == rank:
                ov = _overlap(mine, (a, b))
                if ov:
                    ext[:, :, ov[0] - a : ov[1] - a] = x[:, :, ov[0] - mine[0] : ov[1] - mine[0]]
                continue
            got = _overlap(their, (a, b))
            if got:
                buf = x.new_empty((*x.shape[:2], got[1] - got[0], x.shape[3]))
                ops.append(dist.P2POp(dist.irecv, buf, dist.get_global_rank(group, q) if group else q, group))
                recvs.append((got, buf))
            give = _overlap(mine, need[q])
            if give:
                part = x[:, :, give[0] - mine[0] : give[1] - mine[0]].contiguous()
                ops.append(
                    dist.P2POp(dist.isend, part, dist.get_global_rank(group, q) if group else q, group)
                )
        for work in dist.batch_isend_irecv(ops) if ops else []:
            work.wait()
        for (lo, hi), buf in recvs:
            ext[:, :, lo - a : hi - a] = buf
        ctx.meta = (in_bands, need, rank, group, x.shape)
        return ext

    @staticmethod
    def backward(ctx, grad):
        in_bands, need, rank, group, shape = ctx.meta
        a, b = need[rank]
        mine = in_bands[rank]
        out = grad.new_zeros(shape)
        ov = _overlap(mine, (a, b))
        if ov:
            out[:, :, ov[0] - mine[0] : ov[1] - mine[0]] += grad[:, :, ov[0] - a : ov[1] - a]
        ops, recvs = [], []
        for q, their in enumerate(in_bands):
            if q == rank:
                continue
            peer = dist.get_global_rank(group, q) if group else q
            sent = _overlap(their, (a, b))  # rows q gave us: their gradient goes back to q
            if sent:
                part = grad[:, :, sent[0] - a : sent[1] - a].contiguous()
                ops.append(dist.P2POp(dist.isend, part, peer, group))
            given = _overlap(mine, need[q])  # rows we gave q: q returns their gradient
            if given:
                buf = grad.new_empty((*shape[:2], given[1] - given[0], shape[3]))
                ops.append(dist.P2POp(dist.irecv, buf, peer, group))
                recvs.append((given, buf))
        for work in dist.batch_isend_irecv(ops) if ops else []:
            work.wait()
        for (lo, hi), buf in recvs:
            out[:, :, lo - mine[0] : hi - mine[0]] += buf
        return out, None, None, None, None, None


class _GatherRows(torch.autograd.Function):
    """Bands -> the whole activation on every process; backward keeps this band's rows of the
    gradient, which is the same on every process because everything after the gather is replicated."""

    @staticmethod
    def forward(ctx, x, in_bands, rank, group):
        tallest = max(e - s for s, e in in_bands)
        pad = F.pad(x, (0, 0, 0, tallest - x.shape[2])).contiguous()
        parts = [torch.empty_like(pad) for _ in in_bands]
        dist.all_gather(parts, pad, group=group)
        ctx.meta = (in_bands[rank],)
        return torch.cat([p[:, :, : e - s] for p, (s, e) in zip(parts, in_bands)], dim=2)

    @staticmethod
    def backward(ctx, grad):
        ((s, e),) = ctx.meta
        return grad[:, :, s:e], None, None, None


class SpatialLayer(nn.Module):
    """A Conv2d or MaxPool2d run on this process's band of rows of a ``height``-row input."""

    def __init__(self, layer: nn.Module, height: int, rank: int, parts: int, group=None) -> None:
        super().__init__()
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                raise UserError("spatial split supports Conv2d with numeric zero padding only")
            self.fill = 0.0
        elif isinstance(layer, nn.MaxPool2d):
            if layer.ceil_mode:
                raise UserError("spatial split does not support MaxPool2d(ceil_mode=True)")
            self.fill = -math.inf
        else:
            raise UserError(f"spatial split cannot run {type(layer).__name__} on a band of rows")
        self.layer, self.rank, self.group = layer, rank, group
        k, s, p, d = window(layer)
        out_h = (height + 2 * p - d * (k - 1) - 1) // s + 1
        if out_h < parts:
            raise UserError(
                f"{type(layer).__name__} outputs {out_h} rows, fewer than the {parts} spatial parts; "
                "use fewer parts or a taller input"
            )
        self.in_bands, self.out_bands = bands(height, parts), bands(out_h, parts)
        self.need = [needed_rows(ob, k, s, p, d) for ob in self.out_bands]
        self.out_height = out_h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ext = _HaloExchange.apply(x, self.in_bands, self.need, self.rank, self.fill, self.group)
        lay = self.layer
        if isinstance(lay, nn.Conv2d):
            return F.conv2d(
                ext, lay.weight, lay.bias, lay.stride, (0, lay.padding[1]), lay.dilation, lay.groups
            )
        k, s, p, d = lay.kernel_size, lay.stride, lay.padding, lay.dilation
        return F.max_pool2d(ext, k, s, (0, p[1] if isinstance(p, tuple) else p), d)


class GatherRows(nn.Module):
    def __init__(self, height: int, rank: int, parts: int, group=None) -> None:
        super().__init__()
        self.in_bands, self.rank, self.group = bands(height, parts), rank, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GatherRows.apply(x, self.in_bands, self.rank, self.group)


class SpatialParallel(nn.Module):
    """Run the convolutional front of a sequential model on bands of rows, the rest replicated.

    ``forward`` takes the *whole* batch (N, C, H, W) on every process and keeps this process's band
    (a real input pipeline would load only that band). Layers up to the first one that is neither a
    Conv2d, a MaxPool2d nor rowwise (ReLU...) run split; the gather comes before that layer. Call
    :meth:`sync_gradients` after backward and before the optimizer step.
    """

    def __init__(self, model: nn.Sequential, input_shape: tuple[int, int, int], group=None) -> None:
        super().__init__()
        if not isinstance(model, nn.Sequential):
            raise UserError(f"spatial split needs an nn.Sequential model (got {type(model).__name__})")
        self.model, self.group = model, group
        self.parts, self.rank = dist.get_world_size(group), dist.get_rank(group)
        height = input_shape[1]
        if height < self.parts:
            raise UserError(f"input has {height} rows, fewer than the {self.parts} spatial parts")
        self.in_band = bands(height, self.parts)[self.rank]
        front, self.split_params = [], []
        children = list(model.named_children())
        i = 0
        for i, (_name, child) in enumerate(children):  # noqa: B007 - i is used after the loop
            if isinstance(child, (nn.Conv2d, nn.MaxPool2d)):
                front.append(SpatialLayer(child, height, self.rank, self.parts, group))
                height = front[-1].out_height
                self.split_params += list(child.parameters())
            elif isinstance(child, ROWWISE):
                front.append(child)
            else:
                break
        else:
            i = len(children)
        if not any(isinstance(m, SpatialLayer) for m in front):
            raise UserError("spatial split found no Conv2d/MaxPool2d at the start of the model to split")
        self.front = nn.Sequential(*front, GatherRows(height, self.rank, self.parts, group))
        self.back = nn.Sequential(*[c for _, c in children[i:]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        band = x[:, :, self.in_band[0] : self.in_band[1]]
        return self.back(self.front(band))

    def sync_gradients(self) -> None:
        """Sum the split layers' weight gradients (each process saw its band only)."""
        grads = [p.grad for p in self.split_params if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, group=self.group)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
