"""Unit tests for escala.models: shapes, backward passes, parameter counts and config errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from escala.errors import UserError
from escala.models import MODELS, build_model, count_parameters
from escala.models.lenet5 import LeNet5
from escala.models.lstm import LSTMClassifier, lstm_parameter_count, sequence_shape
from escala.models.mlp import MLP, lenet300
from escala.models.resnet import resnet20, resnet50

DIGITS = (1, 8, 8)  # sklearn's digits data set
MNIST = (1, 28, 28)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [DIGITS, MNIST], ids=["8x8", "28x28"])
def test_forward_and_backward(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10)
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads), f"{name}: some parameters got no gradient"
    assert any(g.abs().sum() > 0 for g in grads)


def test_models_tuple_is_the_public_list() -> None:
    assert MODELS == ("mlp", "lenet300", "lenet5", "resnet20", "resnet50", "lstm")


def test_resnet50_parameter_count_matches_torchvision() -> None:
    assert count_parameters(resnet50((3, 224, 224), 1000)) == 25_557_032


def test_resnet50_small_input_forward_and_channels() -> None:
    model = resnet50((3, 64, 64), 7)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    # The stem adapts to the input channel count.
    assert build_model("resnet50", (5, 64, 64), 3).conv1.in_channels == 5


def test_resnet50_uses_v15_stride_on_3x3_and_torchvision_names() -> None:
    model = resnet50((3, 224, 224), 1000)
    first = model.layer2[0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    keys = set(model.state_dict())
    assert {"conv1.weight", "layer4.2.bn3.running_var", "layer2.0.downsample.0.weight", "fc.bias"} <= keys
    assert [n for n, _ in model.named_children()] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "flatten", "fc",
    ]  # fmt: skip
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


def test_resnet20_cifar_size_and_layout() -> None:
    model = resnet20((3, 32, 32), 10)
    # Paper's option A has 0.27M; option-B projections add 2 x (1x1 conv + BN) = 2,752.
    assert count_parameters(model) == 272_474
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 4)] == [3, 3, 3]
    assert [
        model.layer1[0].conv1.out_channels,
        model.layer2[0].conv1.out_channels,
        model.layer3[0].conv1.out_channels,
    ] == [16, 32, 64]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 20  # 19 3x3 convs + fc = 20 weighted layers (projections aside)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_smallest_supported_image() -> None:
    model = resnet20((1, 4, 4), 2)
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 2)


def test_lenet300_parameter_count_and_names() -> None:
    model = lenet300((784,), 10)
    assert count_parameters(model) == 266_610
    assert (model.fc1.out_features, model.fc2.out_features, model.fc3.out_features) == (300, 100, 10)
    assert [n for n, _ in model.named_children()] == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3"]


def test_mlp_hidden_and_dropout_respected() -> None:
    model = MLP((4, 5), 3, hidden=(7, 11, 13), dropout=0.25)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 7), (7, 11), (11, 13), (13, 3)]
    drops = [m for m in model if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.25 for d in drops)
    assert model.fc4 is linears[-1]
    assert model(torch.randn(2, 4, 5)).shape == (2, 3)


def test_mlp_without_dropout_has_no_dropout_modules_and_build_passes_hidden() -> None:
    model = build_model("mlp", (10,), 2, hidden=(5,))
    assert [n for n, _ in model.named_children()] == ["flatten", "fc1", "relu1", "fc2"]
    assert count_parameters(model) == 10 * 5 + 5 + 5 * 2 + 2
    assert count_parameters(build_model("mlp", (10,), 2, hidden=())) == 10 * 2 + 2


def test_mlp_relu_is_not_inplace_so_hooks_see_preactivations() -> None:
    model = MLP((4,), 2, hidden=(8,))
    seen: list[torch.Tensor] = []
    model.fc1.register_forward_hook(lambda _m, _i, out: seen.append(out))
    model(torch.randn(16, 4))
    assert (seen[0] < 0).any()


@pytest.mark.parametrize(
    ("shape", "flat"),
    [((1, 28, 28), 16 * 5 * 5), ((3, 32, 32), 16 * 5 * 5), ((1, 8, 8), 16 * 2 * 2), ((2, 4, 4), 16)],
)
def test_lenet5_adapts_to_input(shape: tuple[int, int, int], flat: int) -> None:
    model = LeNet5(shape, 10)
    assert model.fc1.in_features == flat
    assert model.conv1.in_channels == shape[0]
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_lenet5_classic_layout_on_mnist() -> None:
    model = LeNet5(MNIST, 10)
    assert model.conv1.padding == (2, 2) and model.conv2.padding == (0, 0)
    assert (model.conv1.out_channels, model.conv2.out_channels) == (6, 16)
    assert (model.fc1.out_features, model.fc2.out_features, model.fc3.out_features) == (120, 84, 10)
    assert count_parameters(model) == 61_706
    names = [n for n, _ in model.named_children()]
    assert names == [
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "pool2",
        "flatten",
        "fc1",
        "relu3",
        "fc2",
        "relu4",
        "fc3",
    ]


@pytest.mark.parametrize(
    ("name", "cut"), [("mlp", 2), ("lenet300", 3), ("lenet5", 6), ("resnet20", 5), ("resnet50", 6)]
)
def test_models_can_be_cut_into_pipeline_stages(name: str, cut: int) -> None:
    model = build_model(name, MNIST, 10).eval()
    first, second = model[:cut], model[cut:]
    assert type(first) is nn.Sequential and type(second) is nn.Sequential
    assert first[0] is model[0]  # stages share the model's modules, they are not copies
    x = torch.randn(2, *MNIST)
    with torch.no_grad():
        assert torch.equal(second(first(x)), model(x))


def test_count_parameters_counts_shared_once() -> None:
    shared = nn.Linear(3, 3)
    assert count_parameters(nn.Sequential(shared, shared)) == 12


def test_unknown_model_message() -> None:
    with pytest.raises(UserError) as err:
        build_model("vgg", (1, 8, 8), 10)
    assert str(err.value) == "model 'vgg' is unknown; choose one of mlp, lenet300, lenet5, resnet20, resnet50, lstm"


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "resnet50"])
def test_conv_model_rejects_flat_input(name: str) -> None:
    with pytest.raises(UserError, match=rf"model '{name}' needs \(C, H, W\).*\(64,\)"):
        build_model(name, (64,), 10)


def test_lenet5_rejects_too_small_images() -> None:
    with pytest.raises(UserError, match=r"lenet5.*at least 4x4.*\(1, 3, 8\)"):
        build_model("lenet5", (1, 3, 8), 10)


@pytest.mark.parametrize("hidden", [(0,), (64, -1), (8.5,), "64"])
def test_bad_hidden(hidden: object) -> None:
    with pytest.raises(UserError, match=r"^hidden .*>= 1"):
        build_model("mlp", (4,), 2, hidden=hidden)  # type: ignore[arg-type]


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, float("nan"), "0.5"])
def test_bad_dropout(dropout: object) -> None:
    with pytest.raises(UserError, match=r"^dropout .*\[0, 1\)"):
        build_model("mlp", (4,), 2, dropout=dropout)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shape", "classes", "field"),
    [((), 2, "input_shape"), ((0, 4), 2, "input_shape"), ((4,), 0, "num_classes")],
)
def test_bad_shape_or_classes(shape: tuple[int, ...], classes: int, field: str) -> None:
    with pytest.raises(UserError, match=rf"^{field} "):
        build_model("mlp", shape, classes)


def test_errors_are_one_line() -> None:
    for kwargs in ({"name": "x", "input_shape": (4,)}, {"name": "resnet20", "input_shape": (4,)}):
        with pytest.raises(UserError) as err:
            build_model(kwargs["name"], kwargs["input_shape"], 2)
        assert "\n" not in str(err.value)


def test_lstm_reads_rows_as_time_steps_and_counts_parameters() -> None:
    model = build_model("lstm", MNIST, 10, hidden=(32, 16))
    assert [n for n, _ in model.named_children()] == ["rows", "lstm1", "lstm2", "last", "fc"]
    assert (model.steps, model.features) == (28, 28)
    assert count_parameters(model) == lstm_parameter_count(28, (32, 16), 10)
    # Row t of the image is time step t: changing only the last row changes the output, but the
    # state after step T-1 alone is unaffected (compare the bottom layer's outputs up to step T-2).
    x = torch.randn(2, *MNIST)
    y = x.clone()
    y[:, :, -1] += 1.0
    seq_x, seq_y = model.rows(x), model.rows(y)
    assert torch.equal(seq_x[:, :-1], seq_y[:, :-1]) and torch.equal(seq_x[:, 3], x[:, 0, 3])
    assert torch.equal(model.lstm1(seq_x)[:, :-1], model.lstm1(seq_y)[:, :-1])
    assert not torch.equal(model(x), model(y))


def test_lstm_matches_torch_stacked_lstm() -> None:
    model = LSTMClassifier((5, 3), 4, hidden=(6, 6))
    ref = nn.LSTM(3, 6, num_layers=2, batch_first=True)
    with torch.no_grad():
        for k in range(2):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(getattr(model, f"lstm{k + 1}"), f"{name}_l0"))
    x = torch.randn(7, 5, 3)
    torch.testing.assert_close(model(x), model.fc(ref(x)[0][:, -1]))


def test_lstm_sequence_shapes_and_errors() -> None:
    assert sequence_shape((3, 8, 8)) == (8, 24) and sequence_shape((5, 3)) == (5, 3) and sequence_shape((9,)) == (9, 1)
    assert build_model("lstm", (9,), 3, hidden=(4,))(torch.randn(2, 9)).shape == (2, 3)
    with pytest.raises(UserError, match="at least one layer"):
        build_model("lstm", DIGITS, 10, hidden=())
    with pytest.raises(UserError, match="reads"):
        build_model("lstm", (1, 2, 3, 4), 10)
