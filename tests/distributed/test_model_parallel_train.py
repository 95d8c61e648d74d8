"""Model parallelism through the one training loop (``escala.train(..., pipeline=K)`` etc.).

Parity: a split model trains exactly as the unsplit one, step for step (same data order, loss
weighting and evaluation), so its checkpointed weights match within 1e-5 (float summation order)
and its per-epoch metrics agree; with 2 data-parallel replicas of a split model it matches 2 plain
data-parallel workers. Also: resume of a split run, the summary's layout and bubble, and the
one-line errors for layouts that cannot run.
"""


import pytest
import torch

import escala
from escala.checkpoint import load_checkpoint
from escala.cli.main import main
from escala.errors import UserError

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(240)]


def _params(out):
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_trains_like_the_unsplit_model(quick, tmp_path, schedule, same_run):
    # 2 epochs cross an evaluation (forward-only schedule) and the short last batch (filler padding).
    quick.update(hidden=(32, 16), max_steps=60)
    escala.train(**dict(quick, out=str(tmp_path / "one")))
    s = escala.train(
        **dict(quick, out=str(tmp_path / "pipe"), pipeline=2, microbatches=4, pipeline_schedule=schedule)
    )
    same_run(tmp_path / "one", tmp_path / "pipe")
    assert s["processes"] == 2 and s["workers"] == 1 and s["strategy"] == "pipeline"
    assert s["layout"]["model_groups"] == [[0, 1]]
    pipe = s["pipeline"]
    assert pipe["bubble_theory"] == pytest.approx(1 / 5)
    assert 0.0 <= pipe["bubble_measured"] < 1.0
    # Idle time split: what the schedule implies with the measured stage times, and the rest.
    assert 0.0 < pipe["bubble_schedule"] < 1.0
    assert pipe["bubble_schedule"] + pipe["bubble_overhead"] == pytest.approx(pipe["bubble_measured"])
    assert len(s["parameter_bytes_per_process"]) == 2
    assert sum(s["parameter_bytes_per_process"]) == 4 * s["params"]


def test_tensor_parallel_trains_like_the_unsplit_model(quick, tmp_path, same_run):
    quick.update(hidden=(32, 16), max_steps=60)
    escala.train(**dict(quick, out=str(tmp_path / "one")))
    s = escala.train(**dict(quick, out=str(tmp_path / "tp"), tensor=2))
    same_run(tmp_path / "one", tmp_path / "tp")
    # The paired layers are split, the last (unpaired) one is replicated.
    assert max(s["parameter_bytes_per_process"]) < 4 * s["params"]


def test_spatial_split_trains_like_the_unsplit_model(quick, tmp_path, same_run):
    quick.update(model="lenet5", batch_size=128, epochs=1, lr=0.05)  # 12 steps, one evaluation
    escala.train(**dict(quick, out=str(tmp_path / "one")))
    escala.train(**dict(quick, out=str(tmp_path / "sp"), spatial=2))
    same_run(tmp_path / "one", tmp_path / "sp", tol=1e-4)


def test_pipeline_with_two_replicas_matches_two_data_parallel_workers(quick, tmp_path, same_run):
    quick.update(hidden=(32, 16), max_steps=50, workers=2, batch_size=16)
    escala.train(**dict(quick, out=str(tmp_path / "dp")))
    s = escala.train(**dict(quick, out=str(tmp_path / "pp"), pipeline=2, microbatches=2))
    same_run(tmp_path / "dp", tmp_path / "pp")
    assert s["processes"] == 4 and s["workers"] == 2 and s["global_batch"] == 32
    assert s["layout"]["model_groups"] == [[0, 1], [2, 3]]


def test_pipeline_resume_matches_uninterrupted(quick, tmp_path):
    quick.update(hidden=(32, 16), pipeline=2, microbatches=2)
    escala.train(**dict(quick, out=str(tmp_path / "whole")))
    escala.train(**dict(quick, out=str(tmp_path / "parts"), max_steps=30))
    escala.train(**dict(quick, out=str(tmp_path / "parts"), resume=True))
    a, b = _params(tmp_path / "whole"), _params(tmp_path / "parts")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"pipeline": 2, "tensor": 2}, "one way at a time"),
        ({"pipeline": 9}, "stages"),
        ({"tensor": 3}, "not divisible by 3"),
        ({"spatial": 2}, "does not start with a convolution"),
        ({"pipeline": 2, "strategy": "paramserver"}, "allreduce only"),
        ({"pipeline": 2, "microbatches": 5}, "multiple of --microbatches"),
        ({"pipeline": 2, "pipeline_schedule": "1f1b", "microbatches": 1}, "1f1b needs"),
        ({"pipeline": 2, "precision": "bf16"}, "fp32 only"),
    ],
)
def test_layouts_that_cannot_run_fail_before_starting(quick, tmp_path, overrides, words):
    quick.update(hidden=(32, 16))
    with pytest.raises(UserError, match=words):
        escala.train(**dict(quick, **overrides))


def test_cli_bad_layout_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--pipeline", "2", "--tensor", "2", "--out", str(tmp_path / "x"), "--progress", "none"])
    code = exit_.value.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--pipeline 2 and --tensor 2" in err
    assert not (tmp_path / "x").exists()
