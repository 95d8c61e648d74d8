import pytest

from escala.config import TrainConfig, build_config
from escala.errors import UserError


def test_defaults_then_file_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('lr = 0.5\nepochs = 7\nhidden = [16, 8]\nmodel = "lenet300"\n')
    cfg = build_config(f, {"lr": "0.25", "batch-size": "8"})
    assert cfg.lr == 0.25  # flag beats file
    assert cfg.epochs == 7  # file beats default
    assert cfg.hidden == (16, 8)
    assert cfg.batch_size == 8
    assert cfg.momentum == TrainConfig().momentum


def test_train_table_is_accepted(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nworkers = 3\n")
    assert build_config(f).workers == 3


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"lr": "fast"}, "field 'lr' must be a number"),
        ({"epochs": 0}, "field 'epochs' must be >= 1"),
        ({"epochs": 2.5}, "field 'epochs' must be an integer"),
        ({"optimizer": "lbfgs"}, "field 'optimizer' must be one of sgd, adamw"),
        ({"hidden": "12,x"}, "field 'hidden' must be a list of integers"),
        ({"hidden": "0"}, "field 'hidden' must hold widths >= 1"),
        ({"resume": "maybe"}, "field 'resume' must be true or false"),
        ({"batchsize": 3}, "unknown key 'batchsize' (did you mean 'batch_size'?)"),
        ({"dataset": "mnist"}, "field 'data_dir' is required"),
        ({"resume": True, "overwrite": True}, "exclude each other"),
    ],
)
def test_bad_values_name_the_field(overrides, needle):
    with pytest.raises(UserError) as err:
        build_config(None, overrides)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1")
    with pytest.raises(UserError, match="bad.toml is not valid TOML"):
        build_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'red'\n")
    with pytest.raises(UserError, match=r"unknown.toml: unknown key 'colour'"):
        build_config(unknown)
    with pytest.raises(UserError, match="missing.toml does not exist"):
        build_config(tmp_path / "missing.toml")


def test_global_batch():
    assert build_config(None, {"batch_size": 16, "workers": 4}).global_batch == 64
