"""Pipeline partitioning and schedules, in one process: balance, explicit cuts, errors, bubble theory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from escala.errors import UserError
from escala.models import build_model
from escala.parallel.model.pipeline import (
    balance,
    gpipe,
    layer_param_costs,
    layer_time_costs,
    one_f_one_b,
    partition,
    pipeline_bubble,
    schedule,
    simulate,
    theoretical_bubble,
)


def _brute_force_best(costs, k):
    """Smallest possible largest-stage cost, by trying every set of cuts."""
    from itertools import combinations

    n = len(costs)
    best = float("inf")
    for cuts in combinations(range(1, n), k - 1):
        bounds = [0, *cuts, n]
        best = min(best, max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:])))
    return best


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_balance_is_optimal(k):
    costs = [5, 1, 1, 8, 2, 2, 9, 1, 3]
    starts = balance(costs, k)
    bounds = [*starts, len(costs)]
    got = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
    assert starts[0] == 0 and len(starts) == k
    assert got == _brute_force_best(costs, k)


def test_balance_splits_equal_layers_evenly():
    assert balance([1.0] * 8, 4) == [0, 2, 4, 6]


def test_partition_shares_modules_and_keeps_names():
    model = build_model("mlp", (12,), 3, hidden=(16, 16, 8))
    parts = partition(model, 2)
    assert sum(len(p) for p in parts) == len(model)
    # Same module objects, not copies: training the stages trains the model.
    assert parts[0][0] is model[0]
    names = [n for p in parts for n in p.state_dict()]
    assert names == list(model.state_dict())
    x = torch.randn(5, 12)
    assert torch.equal(parts[1](parts[0](x)), model(x))


def test_partition_balances_parameters():
    model = build_model("lenet300", (1, 28, 28), 10)
    parts = partition(model, 2)
    per_stage = [sum(p.numel() for p in s.parameters()) for s in parts]
    # fc1 (784*300+300 = 235,500) dominates: the best cut puts it alone.
    assert per_stage[0] == 235_500
    assert sum(per_stage) == sum(layer_param_costs(model))


def test_partition_by_time_runs_on_a_sample():
    model = build_model("mlp", (12,), 3, hidden=(16, 16))
    parts = partition(model, 3, by="time", sample=torch.randn(4, 12))
    assert len(parts) == 3 and all(len(p) >= 1 for p in parts)
    assert all(p.grad is None for p in model.parameters())


def test_explicit_cuts_by_name_and_index():
    model = build_model("mlp", (12,), 3, hidden=(16, 16))
    names = [n for n, _ in model.named_children()]
    by_name = partition(model, cuts=["fc2"])
    assert next(iter(by_name[1].named_children()))[0] == "fc2"
    by_index = partition(model, 2, cuts=[names.index("fc2")])
    assert [len(p) for p in by_index] == [len(p) for p in by_name]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stages": 99}, "into 99 pipeline stages"),
        ({"cuts": ["nope"]}, "not a layer"),
        ({"cuts": [3, 2]}, "strictly increasing"),
        ({"cuts": [0, 99]}, "out of range"),
        ({"stages": 3, "cuts": [2]}, "make 2 stages"),
        ({"stages": 2, "by": "flops"}, "balance 'flops'"),
        ({"stages": 2, "by": "time"}, "needs a sample"),
    ],
)
def test_bad_splits_are_user_errors(kwargs, message):
    model = build_model("mlp", (12,), 3, hidden=(16, 16))
    with pytest.raises(UserError, match=message):
        partition(model, **kwargs)


def test_non_sequential_model_is_refused():
    class Net(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UserError, match="nn.Sequential"):
        partition(Net(), 2)


@pytest.mark.parametrize("k, m", [(2, 1), (2, 4), (3, 5), (4, 8), (4, 2)])
@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
def test_simulated_bubble_matches_theory(name, k, m):
    sim = simulate(schedule(name, k, m), forward=1.0, backward=2.0)
    assert sim.makespan == pytest.approx((m + k - 1) * 3.0)
    assert sim.bubble == pytest.approx(theoretical_bubble(k, m))


def test_simulation_with_unequal_stages_by_hand():
    # K=2, M=2, GPipe, stage 1 twice as slow. Stage 0: F0 [0,1] F1 [1,2]; stage 1: F0 [1,3] F1 [3,5]
    # B0 [5,9] B1 [9,13]; stage 0: B0 [9,11] B1 [13,15]. Busy 6 and 12 of 15 each.
    sim = simulate(gpipe(2, 2), forward=[1.0, 2.0], backward=[2.0, 4.0])
    assert sim.makespan == 15.0 and sim.busy == [6.0, 12.0]
    assert sim.bubble == pytest.approx(1 - 18 / 30)
    with pytest.raises(UserError, match="2 stages need 2"):
        simulate(gpipe(2, 2), forward=[1.0])


def test_pipeline_bubble_splits_schedule_idle_from_overhead():
    # The stages of the hand example, one timed step: stage 0 busy 6, stage 1 busy 12.
    def stats(walls):
        return [
            {"walls": [walls[0]], "forward_s": 2.0, "backward_s": 4.0},
            {"walls": [walls[1]], "forward_s": 4.0, "backward_s": 8.0},
        ]

    exact = pipeline_bubble(stats([15.0, 13.0]), "gpipe", 2)  # stage 1 ends first: the step is 15
    assert exact["bubble_per_stage"] == pytest.approx([0.6, 0.2])
    assert exact["bubble_measured"] == pytest.approx(0.4) and exact["bubble_schedule"] == pytest.approx(0.4)
    assert exact["bubble_overhead"] == pytest.approx(0.0, abs=1e-12)
    slow = pipeline_bubble(stats([20.0, 18.0]), "gpipe", 2)  # 5 s of communication on top
    assert slow["bubble_measured"] == pytest.approx((0.7 + 0.4) / 2)
    assert slow["bubble_overhead"] == pytest.approx(0.55 - 0.4)
    assert pipeline_bubble([{"walls": [], "forward_s": 0.0, "backward_s": 0.0}] * 2, "gpipe", 2)["bubble_measured"] is None


def test_time_costs_leave_out_the_input_gradient_of_the_first_weighted_layer():
    # As in training, where the data needs no gradient: the first weighted layer is timed without
    # its input gradient (one matrix product fewer), every later layer with it.
    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            seen.append(x.requires_grad)
            return super().forward(x)

    model = nn.Sequential(nn.Flatten(), Probe(4, 4), nn.ReLU(), Probe(4, 4))
    layer_time_costs(model, torch.randn(2, 4), repeats=1)
    assert seen == [False, False, True, False]  # timed run, then the no-grad pass to the next layer


def test_1f1b_stashes_at_most_k_minus_s_microbatches_gpipe_stashes_m():
    k, m = 4, 8
    assert simulate(gpipe(k, m)).peak_in_flight == [m] * k
    assert simulate(one_f_one_b(k, m)).peak_in_flight == [4, 3, 2, 1]


def test_every_stage_runs_every_pass_once():
    for acts in one_f_one_b(3, 5):
        assert sorted(acts) == sorted([("F", i) for i in range(5)] + [("B", i) for i in range(5)])


def test_simulate_detects_a_deadlock():
    bad = [[("B", 0), ("F", 0)], [("F", 0), ("B", 0)]]
    with pytest.raises(RuntimeError, match="deadlock"):
        simulate(bad)


def test_unknown_schedule():
    with pytest.raises(UserError, match="interleaved"):
        schedule("interleaved", 2, 2)
