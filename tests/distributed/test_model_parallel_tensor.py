"""Tensor parallelism on gloo (DTensor, Megatron pairs): same outputs, gradients and parameters after
SGD steps as the single-process MLP (tolerance 1e-5), one all-reduce per Linear pair forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributed.tensor.debug import CommDebugMode

from escala.errors import UserError
from escala.models import build_model
from escala.parallel.model.tensor import (
    full_parameters,
    linear_pairs,
    local_parameter_count,
    tensor_parallel,
)
from escala.runtime import spawn_workers

TOL = 1e-5


def _model(hidden=(16, 8, 8)):
    torch.manual_seed(0)
    return build_model("mlp", (12,), 4, hidden=hidden)


def _close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max abs difference {err:.2e} > {TOL}"


def _parity(ctx):
    ref, model = _model(), _model()
    tensor_parallel(model)
    pairs, _ = linear_pairs(ref)
    assert len(pairs) == 2
    # fc1 and fc3 split by rows of W (output features), fc2 and fc4 by columns: half of each on this rank.
    whole = sum(p.numel() for p in ref.parameters())
    split = sum(
        ref.get_submodule(n).weight.numel() + ref.get_submodule(n).bias.numel() for n in ("fc1", "fc3")
    )
    split += sum(ref.get_submodule(n).weight.numel() for n in ("fc2", "fc4"))
    assert local_parameter_count(model) == whole - split // 2
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(6, 12, generator=g), torch.randint(0, 4, (6,), generator=g)
        opt.zero_grad()
        ref_opt.zero_grad()
        with CommDebugMode() as comm:
            out = model(x)
        counts = {str(k): v for k, v in comm.get_comm_counts().items()}
        assert sum(v for k, v in counts.items() if "all_reduce" in k) == len(pairs), counts
        _close(out, ref(x), f"output step {step}")
        F.cross_entropy(out, y).backward()
        F.cross_entropy(ref(x), y).backward()
        grads = {
            n: p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            for n, p in model.named_parameters()
        }
        for n, q in ref.named_parameters():
            _close(grads[n], q.grad, f"grad {n} step {step}")
        opt.step()
        ref_opt.step()
    for n, p in full_parameters(model).items():
        _close(p, ref.get_parameter(n).detach(), f"param {n} after 3 steps")


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_tensor_parallel_mlp_matches_single_process():
    spawn_workers(_parity, 2, options={"timeout_s": 60})


def _indivisible(ctx):
    tensor_parallel(_model(hidden=(15, 8)))


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_width_not_divisible_by_tensor_size_is_a_user_error():
    with pytest.raises(
        UserError, match="fc1 has 15 output features, not divisible by tensor-parallel size 2"
    ):
        spawn_workers(_indivisible, 2, options={"timeout_s": 60})


def test_pairs_are_found_across_elementwise_modules_only():
    pairs, single = linear_pairs(build_model("lenet300", (1, 28, 28), 10, dropout=0.5))
    assert pairs == [("fc1", "fc2")] and single == ["fc3"]
    norm = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 4))
    assert linear_pairs(norm) == ([], ["0", "2"])
