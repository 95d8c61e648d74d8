"""A stacked LSTM with its layers spread over processes, pipelined over time steps.

Process r holds a contiguous group of the L layers of an ``nn.LSTM``. At time step t it receives the
top hidden state h_t of the group below, runs its cells, and sends its own top h_t upwards without
waiting, so while group r works on step t, group r+1 works on step t-1: after a fill of P-1 steps
all P processes compute at once (the wavefront of Sutskever, Vinyals and Le, "Sequence to Sequence
Learning with Neural Networks", NeurIPS 2014, who placed one LSTM layer per GPU this way).

Backpropagation through time is pipelined the same way in reverse. Every step's recurrent state
(h_{t-1}, c_{t-1}) and received input enter the step's graph as leaves, so step t can be
differentiated alone: with the gradient of its top output from the group above (or from the loss)
plus the gradients of (h_t, c_t) carried back from step t+1, one ``torch.autograd.backward`` gives
the parameter gradients (accumulated), the gradients of (h_{t-1}, c_{t-1}) to carry on, and the
gradient of the input, sent down to the group below at once. Point-to-point messages go over c10d
(isend/recv on gloo); gloo keeps messages between a pair of processes in order.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import nn

from escala.errors import UserError


def lstm_cell(lstm: nn.LSTM, k: int) -> nn.LSTMCell:
    """An LSTMCell that *shares* layer k's parameters with ``lstm`` (same gate layout i, f, g, o)."""
    # Built on the meta device: no memory and no draw from the RNG for weights replaced at once.
    size = lstm.input_size if k == 0 else lstm.hidden_size
    cell = nn.LSTMCell(size, lstm.hidden_size, bias=lstm.bias, device="meta")
    for name in ("weight_ih", "weight_hh", *(("bias_ih", "bias_hh") if lstm.bias else ())):
        setattr(cell, name, getattr(lstm, f"{name}_l{k}"))
    return cell


class PipelinedLSTM:
    """This process's group of layers of ``lstm`` (``batch_first=True``, unidirectional).

    ``forward(x)``: the first process passes the input (N, T, F); the last one gets the top layer's
    outputs (N, T, H) as a leaf tensor requiring grad, the others None. After computing its loss,
    the last process calls ``backward(out.grad)`` and the others ``backward()``.
    """

    def __init__(
        self,
        lstm: nn.LSTM | None = None,
        group: dist.ProcessGroup | None = None,
        *,
        cells: list[nn.LSTMCell] | None = None,
    ) -> None:
        self.group = group
        self.rank, self.parts = dist.get_rank(group), dist.get_world_size(group)
        if cells is None:
            if lstm is None:
                raise UserError("pipelined LSTM needs an nn.LSTM or this process's cells")
            if not lstm.batch_first or lstm.bidirectional or lstm.proj_size:
                raise UserError(
                    "pipelined LSTM needs nn.LSTM(batch_first=True) without bidirectional or proj_size"
                )
            layers = lstm.num_layers
            if layers < self.parts or layers % self.parts:
                raise UserError(
                    f"an LSTM of {layers} layers cannot be split evenly over {self.parts} processes; "
                    "use a number of processes that divides the layer count"
                )
            per = layers // self.parts
            cells = [lstm_cell(lstm, k) for k in range(self.rank * per, (self.rank + 1) * per)]
        if not cells:
            raise UserError(f"pipelined LSTM: process {self.rank} holds no layer")
        self.cells = list(cells)
        self.first, self.last = self.rank == 0, self.rank == self.parts - 1
        self.hidden, self.input_size = self.cells[-1].hidden_size, self.cells[0].input_size
        self._steps: list = []
        self.busy_s = 0.0  # seconds computing (cells forward, autograd backward) since reset_clock()

    def _peer(self, r: int) -> int:
        return dist.get_global_rank(self.group, r) if self.group is not None else r

    def parameters(self):
        return [p for c in self.cells for p in c.parameters()]

    def forward(self, x: torch.Tensor | None = None, batch: int | None = None, steps: int | None = None):
        """Run all time steps; non-first processes need ``batch`` and ``steps`` (or infer from x).

        Under ``torch.no_grad()`` (evaluation) nothing is kept for a backward pass."""
        if self.first:
            batch, steps = x.shape[0], x.shape[1]
        if batch is None or steps is None:
            raise UserError("pipelined LSTM: processes after the first need batch and steps")
        keep = torch.is_grad_enabled()
        w = self.cells[0].weight_ih
        hs = [torch.zeros(batch, c.hidden_size, dtype=w.dtype, device=w.device) for c in self.cells]
        cs = [torch.zeros_like(h) for h in hs]
        self._steps, sends, tops = [], [], []
        for t in range(steps):
            if self.first:
                inp = x[:, t].detach().requires_grad_(x.requires_grad and keep)
            else:
                inp = torch.empty(batch, self.input_size, dtype=w.dtype, device=w.device)
                dist.recv(inp, self._peer(self.rank - 1), group=self.group)
                inp.requires_grad_(keep)
            t0 = time.perf_counter()
            prev = [(h.detach().requires_grad_(keep), c.detach().requires_grad_(keep)) for h, c in zip(hs, cs)]
            below = inp
            hs, cs = [], []
            for cell, state in zip(self.cells, prev):
                h, c = cell(below, state)
                hs.append(h)
                cs.append(c)
                below = h
            self.busy_s += time.perf_counter() - t0
            if keep:
                self._steps.append((inp, prev, hs, cs))
            if self.last:
                tops.append(below.detach())
            else:
                out = below.detach()
                sends.append((dist.isend(out, self._peer(self.rank + 1), group=self.group), out))
        for work, _ in sends:
            work.wait()
        if self.last:
            return torch.stack(tops, dim=1).requires_grad_(keep)
        return None

    def backward(self, grad_output: torch.Tensor | None = None) -> torch.Tensor | None:
        """Backpropagate through time; the first process returns the input gradient (N, T, F) when the
        input required grad."""
        if not self._steps:
            raise RuntimeError("backward called before forward")
        batch = self._steps[0][0].shape[0]
        w = self.cells[0].weight_ih
        carry_h = [torch.zeros(batch, c.hidden_size, dtype=w.dtype, device=w.device) for c in self.cells]
        carry_c = [torch.zeros_like(h) for h in carry_h]
        sends, in_grads = [], []
        for t in reversed(range(len(self._steps))):
            inp, prev, hs, cs = self._steps[t]
            if self.last:
                g_top = grad_output[:, t]
            else:
                g_top = torch.empty(batch, self.hidden, dtype=w.dtype, device=w.device)
                dist.recv(g_top, self._peer(self.rank + 1), group=self.group)
            t0 = time.perf_counter()
            grads_h = [*carry_h[:-1], carry_h[-1] + g_top]
            torch.autograd.backward([*hs, *cs], [*grads_h, *carry_c])
            carry_h = [h.grad if h.grad is not None else torch.zeros_like(h) for h, _ in prev]
            carry_c = [c.grad if c.grad is not None else torch.zeros_like(c) for _, c in prev]
            self.busy_s += time.perf_counter() - t0
            if not self.first:
                g_in = inp.grad.contiguous()
                sends.append((dist.isend(g_in, self._peer(self.rank - 1), group=self.group), g_in))
            elif inp.requires_grad:
                in_grads.append(inp.grad)
        for work, _ in sends:
            work.wait()
        self._steps = []
        if self.first and in_grads:
            return torch.stack(in_grads[::-1], dim=1)
        return None
