"""Liveness planning: buffers alive at the same time never share memory; the plan beats the naive sum."""

from __future__ import annotations

import pytest
import torch

from escala.memory.plan import eager_peak, lifetimes, pack, plan_memory
from escala.memory.trace import trace
from escala.models import build_model


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 16, 16))])
def test_plan_is_valid_and_smaller_than_naive(name, shape):
    nodes = trace(build_model(name, shape, 10), shape, 32)  # activations dominate the weights
    plan = plan_memory(nodes, static_bytes=1000, num_classes=10)
    bufs = plan.buffers
    for i, a in enumerate(bufs):
        for b in bufs[i + 1 :]:
            if a.start <= b.end and b.start <= a.end:  # alive together: disjoint address ranges
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
    arena = plan.planned_peak_bytes - 1000
    assert arena >= eager_peak(bufs)  # no plan beats the live-bytes lower bound
    assert plan.planned_peak_bytes <= plan.eager_peak_bytes < plan.naive_bytes
    assert (plan.naive_bytes - 1000) / arena >= 2.0  # the 2-3x of a static plan over no reuse
    assert plan.inplace  # some ReLUs run in place


def test_inplace_relu_only_where_its_input_is_not_needed():
    nodes = trace(build_model("mlp", (4,), 3, hidden=(8,)), (4,), 2)
    plan = plan_memory(nodes, 0)
    # fc1 -> relu1: Linear saves its input, not its output, so the ReLU may overwrite fc1's output.
    assert plan.inplace == ["relu1"]
    names = {b.name for b in plan.buffers}
    assert "fc1" in names and "relu1" not in names  # relu1 lives in fc1's buffer


def test_pack_hand_example():
    from escala.memory.plan import Buffer

    bufs = [Buffer("a", 4, 0, 1), Buffer("b", 4, 2, 3), Buffer("c", 2, 1, 2)]
    assert pack(bufs) == 6  # a and b share offset 0; c overlaps both in time
    assert bufs[0].offset == bufs[1].offset == 0 and bufs[2].offset == 4
    assert lifetimes(trace(torch.nn.Sequential(torch.nn.Linear(2, 2)), (2,), 1))
