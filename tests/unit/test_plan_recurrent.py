"""``escala plan`` on the lstm: FLOPs against the LSTM's hand count, strategies that do not apply."""

from __future__ import annotations

import json
from pathlib import Path

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
