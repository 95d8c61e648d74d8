"""``escala plan`` on the lstm: FLOPs against the LSTM's hand count, strategies that do not apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from escala.cli.main import main
from escala.models import build_model
from escala.plan.profile import count_flops

V100 = str(Path(__file__).resolve().parents[2] / "examples" / "clusters" / "v100-10gbe.toml")


def lstm_layer_flops(steps: int, width: int, hidden: int, input_grad: bool) -> int:
    """Forward + backward FLOPs per sample of one LSTM layer (2 FLOPs per multiply-add).

    Forward, per step: the gates ``W_ih x_t + W_hh h_{t-1}``, ``4H (I + H)`` multiply-adds. Backward,
    per step: the weight gradients ``dW_ih += dgates x_t^T`` and ``dW_hh += dgates h_{t-1}^T`` (the
    same counts), ``dh_{t-1} = W_hh^T dgates`` (``4H H``; none before the first step, whose ``h_0``
    is a constant) and, when the input needs a gradient, ``dx_t = W_ih^T dgates`` (``4H I``).
    """
    g = 4 * hidden
    forward = steps * g * (width + hidden)
    backward = (
        steps * g * (width + hidden) + (steps - 1) * g * hidden + (steps * g * width if input_grad else 0)
    )
    return 2 * (forward + backward)


def test_lstm_flops_match_the_hand_count():
    for shape, hidden, classes in [((1, 28, 28), (128, 64), 10), ((1, 8, 8), (16, 32, 8), 10)]:
        with torch.device("meta"):
            model = build_model("lstm", shape, classes, hidden=hidden)
        total, per_child, _ = count_flops(model, shape, classes)
        steps, width = model.steps, model.features
        expected = {}
        for i, h in enumerate(hidden, start=1):
            expected[f"lstm{i}"] = lstm_layer_flops(steps, width, h, input_grad=i > 1)
            width = h
        for name, flops in expected.items():
            assert per_child[name] == flops, (name, per_child[name], flops)
        fc = 2 * 2 * width * classes  # forward + weight gradient (its input's gradient: 2 * H K more)
        assert sum(expected.values()) + fc <= total <= sum(expected.values()) + 2 * fc
        # the forward alone is the textbook 2 * 4H (I + H) per step: backward is about twice it
        fwd = 2 * steps * 4 * hidden[0] * (model.features + hidden[0])
        assert 2.5 * fwd <= expected["lstm1"] <= 3 * fwd


def test_escala_plan_lstm_skips_tensor_and_limits_the_pipeline(tmp_path, capsys):
    out = tmp_path / "plan"
    argv = ["plan", "--model", "lstm", "--batch-size", "32", "--cluster", V100, "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [r for per_strategy in summary["strategies"].values() for r in per_strategy]
    assert any(r["strategy"] == "allreduce" for r in rows)
    assert not any(r["strategy"].startswith("tensor") for r in rows)
    pipes = [r for r in rows if r["strategy"].startswith("pipeline")]
    assert pipes and all(r["layout"]["pipeline"] <= 2 for r in pipes)  # two LSTM layers
    assert all(r["layout"]["microbatches"] == 28 for r in pipes)  # one per time step (MNIST rows)
    reasons = {(s["strategy"], s["devices"]): s["reason"] for s in summary["skipped"]}
    assert "recurrent layers (lstm1, lstm2)" in reasons[("tensor", 2)]
    assert "2 recurrent layers" in reasons[("pipeline", 4)]
    assert "lstm" in capsys.readouterr().out


def test_recurrent_pipeline_steps_are_a_time_step_of_the_engine(monkeypatch):
    """A recurrent pipeline's micro-batch is one time step of the whole batch: 1/T of the batch's step
    as escala's cell-by-cell engine runs it (calibrated on a measured device), split by FLOP share."""
    from dataclasses import replace

    import escala.plan.calibrate_recurrent as calibrate_recurrent
    from escala.plan.cluster import load_cluster
    from escala.plan.modelparallel import pipeline_cost, stage_plan
    from escala.plan.profile import profile_model
    from escala.plan.step import Setting

    base = load_cluster(V100, measure=None)
    profile = profile_model("lstm", input_shape=(1, 28, 28), num_classes=10, hidden=(64, 64))
    measured = replace(base, device=replace(base.device, measured=True, overhead_measured=False, step_overhead=0.0))
    calls = []

    def engine_step(prof, batch, threads, busy=1):
        calls.append((batch, busy))
        return 0.056 if busy > 1 else 0.050

    monkeypatch.setattr(calibrate_recurrent, "recurrent_step_seconds", engine_step)
    s = Setting(measured, profile, 32)
    row = pipeline_cost(s, 2)
    total = sum(c.flops for c in profile.children)
    share = [sum(profile.children[i].flops for i in st) / total for st in stage_plan(s, 2)]
    t = [0.056 * f / 28 for f in share]  # both stages busy: per time step
    assert (32, 2) in calls and (32, 1) in calls  # the whole batch, with 2 and 1 processes busy
    assert row.compute == pytest.approx(28 * sum(t) / 2)
    assert row.bubble == pytest.approx((2 - 1) * 0.050 * max(share) / 28 + 28 * (max(t) - sum(t) / 2))


def test_recurrent_engine_step_calibration_runs():
    """escala's time-step engine timed in one and in two processes at once (no timing asserted)."""
    from escala.plan.calibrate_recurrent import recurrent_step_seconds
    from escala.plan.profile import profile_model

    tiny = profile_model("lstm", input_shape=(1, 4, 4), num_classes=3, hidden=(8, 8))
    assert 0 < recurrent_step_seconds(tiny, 4, busy=1, count=2, rounds=1) < 5
    assert 0 <= recurrent_step_seconds(tiny, 4, busy=2, count=2, rounds=1) < 5  # barrier subtracted
