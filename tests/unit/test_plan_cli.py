"""``escala plan``: summary.json keys, bad input exits 2 with one line, layout dry-runs, --out rules."""

import json
from pathlib import Path

import pytest

from escala.cli.main import main
from escala.errors import UserError
from escala.plan.layout import parse_layout, rank_coords, validate_layout

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"
V100 = str(EXAMPLES / "v100-10gbe.toml")


def one_line_exit(capsys, argv, match):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert match in err, err
    return err


def test_summary_has_the_keys(tmp_path, capsys):
    out = tmp_path / "plan"
    argv = [
        "plan",
        "--model",
        "mlp",
        "--batch-size",
        "64",
        "--cluster",
        V100,
        "--devices",
        "8",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    data = json.loads((out / "summary.json").read_text())
    for key in (
        "kind",
        "model",
        "cluster",
        "batch_size",
        "devices",
        "strategies",
        "recommended",
        "best_devices",
    ):
        assert key in data
    assert data["devices"] == [1, 2, 4, 8]
    row = data["strategies"]["allreduce"][-1]
    for key in (
        "step_s",
        "compute_s",
        "comm_s",
        "bubble_s",
        "throughput",
        "efficiency",
        "memory_per_device",
        "fits",
    ):
        assert key in row
    assert data["recommended"]["fits"]
    assert (out / "throughput.png").stat().st_size > 0
    assert "recommended:" in capsys.readouterr().out
    assert main(argv) == 0  # an earlier plan's output may be replaced


def test_refuses_a_foreign_out_dir(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    one_line_exit(
        capsys,
        ["plan", "--model", "mlp", "--batch-size", "8", "--cluster", V100, "--out", str(tmp_path)],
        "not empty",
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_no_fit_gives_the_numbers(tmp_path, capsys):
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(Path(V100).read_text().replace('memory = "16GiB"', 'memory = "100KiB"'))
    err = one_line_exit(
        capsys,
        ["plan", "--model", "mlp", "--batch-size", "64", "--cluster", str(tiny), "--devices", "4"],
        "no plan fits",
    )
    assert "100.00 KiB" in err and "activations" in err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["plan", "--model", "mlp", "--batch-size", "8"], "--cluster is required"),
        (["plan", "--model", "mlp", "--batch-size", "0", "--cluster", V100], "--batch-size 0"),
        (["plan", "--model", "mlp", "--batch-size", "8", "--cluster", "nope.toml"], "no such file"),
        (
            ["plan", "--model", "mlp", "--batch-size", "8", "--cluster", V100, "--devices", "999"],
            "has 32 devices",
        ),
        (
            ["plan", "--model", "mlp", "--batch-size", "8", "--cluster", V100, "--strategies", "magic"],
            "magic",
        ),
        (["plan", "--model", "vgg", "--batch-size", "8", "--cluster", V100], "invalid choice"),
        (["plan", "--dry-run", "--devices", "10", "--layout", "pipeline=4"], "do not divide"),
        (
            ["plan", "--dry-run", "--devices", "32", "--layout", "tensor=16", "--cluster", V100],
            "inside one node",
        ),
        (["plan", "--dry-run", "--devices", "8", "--layout", "pipeline=x"], "whole number"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, match):
    one_line_exit(capsys, argv, match)


def test_dry_run_ok(capsys):
    argv = ["plan", "--dry-run", "--devices", "64", "--layout", "pipeline=4", "--cluster", V100]
    with pytest.raises(UserError, match="fit on the cluster's 32"):
        validate_layout(64, pipeline=4, cluster_devices=32)
    assert main(["plan", "--dry-run", "--devices", "32", "--layout", "tensor=2", "--cluster", V100]) == 0
    assert "tensor 2 x data 16" in capsys.readouterr().out
    one_line_exit(capsys, argv, "32 devices")


def test_layout_rules():
    assert validate_layout(4096, pipeline=8)["data"] == 512  # any world size, no hardware
    assert parse_layout("K=2, data=3") == {"pipeline": 2, "data": 3}
    assert parse_layout("P=2") == {"spatial": 2}
    with pytest.raises(UserError, match="= 12 processes, but the world has 32"):
        validate_layout(32, tensor=4, data=3)
    with pytest.raises(UserError, match="only 11 top-level layers"):
        validate_layout(16, pipeline=16, model_layers=11)
    with pytest.raises(UserError, match="micro-batches"):
        validate_layout(4, pipeline=4, batch=8, microbatches=16)
    with pytest.raises(UserError, match="does not divide the 8 devices"):
        validate_layout(24, tensor=3, devices_per_node=8)
    with pytest.raises(UserError, match="one way at a time"):  # the trainer's own rule
        validate_layout(64, pipeline=4, tensor=2)


def test_dry_run_is_the_training_layout():
    """The planner's layout is the one escala train builds: same replicas, same rank -> (replica, part)."""
    from escala.parallel.model.layout import layout_from_config

    class Config:  # the fields layout_from_config reads
        workers, pipeline, tensor, spatial = 3, 4, 1, 1

    trained = layout_from_config(Config())
    checked = validate_layout(12, pipeline=4)
    assert checked["layout"] == trained.describe()
    assert [rank_coords(r, trained) for r in (0, 5, 11)] == [(0, 0), (1, 1), (2, 3)]
