"""Stacked LSTM split by layers over processes, pipelined over time: same outputs, parameter
gradients and input gradient as ``nn.LSTM(num_layers=L)`` in one process (tolerance 1e-5); and the
zoo's lstm model trained with ``--pipeline K`` ends where the unsplit run ends."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import escala
from escala.cli.main import main
from escala.errors import UserError
from escala.parallel.model.recurrent import PipelinedLSTM
from escala.runtime import spawn_workers

TOL = 1e-5
N, T, FEAT, HID = 3, 5, 4, 6


def _lstm(layers):
    torch.manual_seed(0)
    return nn.LSTM(FEAT, HID, num_layers=layers, batch_first=True)


def _close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max abs difference {err:.2e} > {TOL}"


def _parity(ctx, layers):
    ref, mine = _lstm(layers), _lstm(layers)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, T, FEAT, generator=g)
    target = torch.randn(N, T, HID, generator=g)
    xr = x.clone().requires_grad_(True)
    ref_out, _ = ref(xr)
    ((ref_out - target) ** 2).sum().backward()

    stack = PipelinedLSTM(mine)
    out = stack.forward(x.clone().requires_grad_(True) if stack.first else None, batch=N, steps=T)
    if stack.last:
        _close(out, ref_out.detach(), "top-layer outputs")
        ((out - target) ** 2).sum().backward()
        gx = stack.backward(out.grad)
    else:
        assert out is None
        gx = stack.backward()
    if stack.first:
        _close(gx, xr.grad, "input gradient")
    per = layers // ctx.world_size
    for k in range(ctx.rank * per, (ctx.rank + 1) * per):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            p, q = getattr(mine, f"{name}_l{k}"), getattr(ref, f"{name}_l{k}")
            _close(p.grad, q.grad, f"grad {name}_l{k}")
        # Layers held elsewhere got no gradient here.
    others = [k for k in range(layers) if not ctx.rank * per <= k < (ctx.rank + 1) * per]
    assert all(getattr(mine, f"weight_ih_l{k}").grad is None for k in others)


def _cases(ctx):
    _parity(ctx, 2)  # one layer per process
    _parity(ctx, 4)  # two layers per process


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_pipelined_lstm_matches_stacked_lstm():
    spawn_workers(_cases, 2, options={"timeout_s": 60})


def _uneven(ctx):
    PipelinedLSTM(_lstm(3))


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_layers_not_divisible_by_processes_is_a_user_error():
    with pytest.raises(UserError, match="LSTM of 3 layers cannot be split evenly over 2 processes"):
        spawn_workers(_uneven, 2, options={"timeout_s": 60})


# -- through the training loop: escala train --model lstm --pipeline K -------------------------------
# Parity: the unsplit nn.LSTM layers in one process vs LSTMCells sharing their weights on K processes;
# the two compute the same floats up to summation order, so the weights agree within 1e-5 after 60
# SGD steps that cross an evaluation and the short last batch of an epoch.

LSTM_RUN = {"model": "lstm", "hidden": (16, 16, 16), "max_steps": 60, "lr": 0.1}


@pytest.mark.distributed
@pytest.mark.timeout(240)
@pytest.mark.parametrize("stages, cuts", [(2, ()), (3, ()), (2, (2,))], ids=["K2", "K3", "cut-at-lstm2"])
def test_lstm_pipelined_over_time_trains_like_the_unsplit_model(quick, tmp_path, same_run, stages, cuts):
    quick.update(LSTM_RUN)
    escala.train(**dict(quick, out=str(tmp_path / "one")))
    s = escala.train(**dict(quick, out=str(tmp_path / "pipe"), pipeline=stages, pipeline_cuts=cuts))
    same_run(tmp_path / "one", tmp_path / "pipe")
    assert s["processes"] == stages and s["strategy"] == "pipeline"
    pipe = s["pipeline"]
    assert pipe["pipelined_over"] == "time steps" and pipe["time_steps"] == 8  # digits: 8 rows
    groups = pipe["layers_per_stage"]
    assert [layer for g in groups for layer in g] == ["lstm1", "lstm2", "lstm3"] and all(groups)
    if cuts:
        assert groups == [["lstm1"], ["lstm2", "lstm3"]]
    assert pipe["bubble_theory"] == pytest.approx((stages - 1) / (8 + stages - 1))
    assert 0.0 <= pipe["bubble_measured"] < 1.0
    assert sum(s["parameter_bytes_per_process"]) == 4 * s["params"]


@pytest.mark.distributed
@pytest.mark.timeout(240)
def test_lstm_pipeline_with_two_replicas_matches_two_data_parallel_workers(quick, tmp_path, same_run):
    quick.update(LSTM_RUN, hidden=(16, 16), workers=2, batch_size=16, max_steps=50)
    escala.train(**dict(quick, out=str(tmp_path / "dp")))
    s = escala.train(**dict(quick, out=str(tmp_path / "pp"), pipeline=2))
    same_run(tmp_path / "dp", tmp_path / "pp")
    assert s["processes"] == 4 and s["workers"] == 2 and s["layout"]["model_groups"] == [[0, 1], [2, 3]]


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"pipeline": 3}, "model lstm has 2 LSTM layers"),
        ({"pipeline": 2, "pipeline_cuts": (3,)}, "must begin at an LSTM layer after the first"),
        ({"pipeline": 2, "pipeline_schedule": "1f1b", "microbatches": 2}, "pipelined over time steps"),
        ({"pipeline": 2, "pipeline_balance": "time"}, "balances its layer groups by parameter count"),
        ({"tensor": 2}, "no pair of Linear layers"),
        ({"hidden": ()}, "at least one layer"),
    ],
)
def test_lstm_layouts_that_cannot_run_fail_before_starting(quick, overrides, words):
    quick.update(model="lstm", hidden=(16, 16))
    with pytest.raises(UserError, match=words):
        escala.train(**dict(quick, **overrides))


def test_cli_lstm_with_too_many_stages_is_one_line_exit_2(tmp_path, capsys):
    args = ["train", "--model", "lstm", "--hidden", "16,16", "--pipeline", "4", "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--progress", "none"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "--pipeline 4: model lstm has 2 LSTM layers" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.distributed
@pytest.mark.timeout(240)
def test_lstm_pipeline_resume_matches_uninterrupted(quick, resume_matches_whole_run):
    quick.update(LSTM_RUN, hidden=(16, 16), pipeline=2, max_steps=0, epochs=1)
    resume_matches_whole_run(quick, stop_at=20)
