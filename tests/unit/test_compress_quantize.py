"""int8 through torch.ao runs and stays close to its float model; CSR layers compute the same thing."""

from __future__ import annotations

import pytest
import torch

from escala.compress import quantize as q
from escala.compress.pipeline import accuracy
from escala.compress.retrain import retrain, stage_config
from escala.compress.speed import SparseLinear, latency, sparse_copy
from escala.data import load_digits
from escala.models import build_model

# Stated tolerance: int8 may cost at most 2 points of validation accuracy on digits.
MAX_DROP = 0.02


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _trained(name, data, tmp, **kw):
    torch.manual_seed(0)
    model = build_model(name, data.input_shape, data.num_classes, **kw)
    base = {
        "dataset": "digits",
        "model": name,
        "lr": 0.05,
        "progress": "none",
        "hidden": list(kw.get("hidden", (128, 64))),
    }
    retrain(model, data, stage_config(base, tmp, epochs=6))
    return model.eval()


@pytest.mark.slow
def test_dynamic_int8_mlp_matches_float(digits, tmp_path):
    model = _trained("mlp", digits, tmp_path / "mlp", hidden=(128, 64))
    qm = q.dynamic(model)
    assert any("quantized" in type(m).__module__ for m in qm.modules())
    assert accuracy(model, digits.val) > 0.9
    assert accuracy(qm, digits.val) >= accuracy(model, digits.val) - MAX_DROP
    assert q.saved_bytes(qm) < q.saved_bytes(model) / 2.5  # int8 weights: about 4x smaller


@pytest.mark.slow
def test_static_int8_cnn_matches_float(digits, tmp_path):
    model = _trained("lenet5", digits, tmp_path / "cnn")
    calib = [digits.train.x[i : i + 64] for i in range(0, 512, 64)]
    qm = q.static(model, calib)
    out = qm(digits.val.x[:4])
    assert out.dtype == torch.float32 and out.shape == (4, 10)
    assert accuracy(qm, digits.val) >= accuracy(model, digits.val) - MAX_DROP


@pytest.mark.slow
def test_qat_trains_through_the_loop_and_converts(digits, tmp_path):
    model = _trained("mlp", digits, tmp_path / "base", hidden=(64,))
    base = {"dataset": "digits", "model": "mlp", "hidden": [64], "lr": 0.01, "progress": "none"}

    def train(prepared):
        retrain(prepared, digits, stage_config(base, tmp_path / "qat", epochs=1))

    qm = q.quantize(model, "qat", [digits.train.x[:64]], train)
    assert accuracy(qm, digits.val) >= accuracy(model, digits.val) - MAX_DROP


def test_sparse_linear_equals_dense():
    torch.manual_seed(0)
    layer = torch.nn.Linear(50, 20)
    with torch.no_grad():
        layer.weight[torch.rand(20, 50) < 0.8] = 0
    sparse = SparseLinear(layer)
    for batch in (1, 7):
        x = torch.randn(batch, 50)
        torch.testing.assert_close(sparse(x), layer(x), rtol=1e-5, atol=1e-6)


def test_sparse_copy_replaces_only_sparse_layers():
    torch.manual_seed(0)
    model = build_model("mlp", (16,), 4, hidden=(32,))
    with torch.no_grad():
        model.fc1.weight[torch.rand(32, 16) < 0.9] = 0
    copy, replaced = sparse_copy(model)
    assert (
        replaced == ["fc1"] and isinstance(copy.fc1, SparseLinear) and not isinstance(model.fc1, SparseLinear)
    )
    x = torch.randn(3, 16)
    torch.testing.assert_close(copy(x), model(x), rtol=1e-5, atol=1e-6)
    times = latency({"a": model, "b": copy}, x, budget_s=0.05)
    assert set(times) == {"a", "b"} and all(t > 0 for t in times.values())
