"""Recurrent layers in the memory estimate: the traced rule against what autograd saves, the CLI."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from escala.cli.main import main
from escala.memory.estimate import estimate_memory
from escala.memory.measure import measured_peak, saved_tensor_bytes
from escala.memory.recurrent import good_ld, onednn_lstm_workspace
from escala.memory.trace import trace
from escala.models import build_model

LSTM_ZOO = [
    ((1, 8, 8), (16,), 4),
    ((1, 8, 8), (32, 16), 32),
    ((1, 28, 28), (128, 64), 32),
    ((1, 28, 28), (64, 64, 64), 8),
    ((3, 8, 8), (20,), 5),  # RGB rows: the reshape copies
    ((28, 28), (48,), 3),  # (T, F) samples
]


@pytest.mark.parametrize("shape, hidden, batch", LSTM_ZOO, ids=[f"{z[0]}-{z[1]}" for z in LSTM_ZOO])
def test_lstm_estimate_matches_saved_tensor_bytes(shape, hidden, batch):
    torch.manual_seed(0)
    model = build_model("lstm", shape, 10, hidden=hidden)
    est = estimate_memory(model, shape, batch, num_classes=10)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    measured = saved_tensor_bytes(model, x, y)
    assert abs(est.activation_bytes - measured) <= 0.10 * measured  # the other models' aim
    assert abs(est.activation_bytes - measured) <= 16  # exact up to nll_loss's 4-byte total weight


class _Outputs(nn.Module):
    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        return self.lstm(x)[0]


RECURRENT = [
    (cls, kw, layers, bidirectional, batch_first)
    for cls, kw in [
        (nn.LSTM, {}),
        (nn.LSTM, {"proj_size": 3}),
        (nn.GRU, {}),
        (nn.RNN, {"nonlinearity": "relu"}),
    ]
    for layers in (1, 3)
    for bidirectional in (False, True)
    for batch_first in (True, False)
]


@pytest.mark.parametrize(
    "cls, kw, layers, bidirectional, batch_first",
    RECURRENT,
    ids=[
        f"{r[0].__name__}{'-proj' if r[1] else ''}-L{r[2]}{'-bi' if r[3] else ''}{'-bf' if r[4] else ''}"
        for r in RECURRENT
    ],
)
def test_plain_recurrent_layers_match(cls, kw, layers, bidirectional, batch_first):
    """Fused (oneDNN) LSTMs and the unfused cells (projected LSTM, GRU, RNN), byte for byte."""
    torch.manual_seed(0)
    rnn = cls(5, 11, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, **kw)
    model = _Outputs(rnn)
    shape = (7, 5)
    est = estimate_memory(model, shape, 3)
    with warnings.catch_warnings():  # "LSTM with projections is not supported with oneDNN"
        warnings.simplefilter("ignore", UserWarning)
        assert est.activation_bytes == saved_tensor_bytes(model, torch.randn(3, *shape))


def test_onednn_workspace_rule_against_the_saved_workspace():
    for steps, batch, width, hidden in [(1, 1, 1, 7), (8, 4, 8, 16), (28, 3, 28, 64), (5, 32, 100, 200)]:
        lstm = nn.LSTM(width, hidden, batch_first=True)
        sizes = []

        def pack(t, sizes=sizes):
            if t.dtype == torch.uint8:
                sizes.append(t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            lstm(torch.randn(batch, steps, width))
        assert sizes == [onednn_lstm_workspace(steps, batch, width, hidden)]
    assert good_ld(64) == 64 and good_ld(256) == 272 and good_ld(7) == 16


def test_lstm_trace_keeps_layers_whole_and_views_free():
    model = build_model("lstm", (1, 8, 8), 10, hidden=(16, 8))
    nodes = trace(model, (1, 8, 8), 4)
    kinds = [n.kind for n in nodes]
    assert kinds.count("LSTMLayer") == 2
    last = next(n for n in nodes if n.kind == "getitem")
    assert last.alias == "lstm2" and last.out_shape == (4, 8) and not last.saved
    assert all(not n.saved for n in nodes if n.kind in ("permute", "reshape"))


def test_lstm_peak_against_memtracker():
    torch.manual_seed(0)
    model = build_model("lstm", (1, 8, 8), 10, hidden=(32, 16))
    est = estimate_memory(model, (1, 8, 8), 32, num_classes=10, optimizer="sgd", momentum=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    peak = measured_peak(model, opt, torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    assert abs(est.peak_bytes / peak["peak_bytes"] - 1.0) <= 0.10, peak  # 0.996 here
    assert est.total_bytes >= peak["peak_bytes"]  # with the input batch the loop holds


def test_escala_memory_lstm_prints_the_table(capsys):
    assert main(["memory", "--model", "lstm", "--batch-size", "32"]) == 0
    out = capsys.readouterr().out
    for word in ("lstm1", "lstm2", "LSTMLayer", "activations", "peak (estimate)"):
        assert word in out
