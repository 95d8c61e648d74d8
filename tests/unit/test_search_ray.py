"""The Ray executor runs a small search on a local Ray instance (skipped when Ray is not installed)."""

from __future__ import annotations

import pytest

from escala.search import launch
from escala.search.store import read_study

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'escala[ray]'); not installed")


def curve(config, reporter):
    if config["q"] == 0.5:
        raise ValueError("a crashing trial")
    for epoch in range(1, 5):
        reporter.report(epoch, acc=config["q"] * epoch / 4)
    return {"acc": config["q"]}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_executor_runs_a_search_with_early_stopping_and_a_crash(tmp_path):
    from escala.search.executors.ray import RayExecutor

    executor = RayExecutor(parallel=2, init_options={"num_cpus": 2})
    summary = launch(
        curve,
        {"q": [0.9, 0.8, 0.5, 0.3, 0.2]},
        metric="acc",
        early_stop="asha",
        out=tmp_path / "ray",
        executor=executor,
    )
    assert not ray.is_initialized()  # the executor shut down the Ray instance it started
    _, trials = read_study(tmp_path / "ray")
    by_q = {t.config["q"]: t for t in trials.values()}
    assert by_q[0.9].status == "completed" and summary["best_value"] == 0.9
    assert by_q[0.5].status == "failed" and "a crashing trial" in by_q[0.5].error
    assert by_q[0.2].status == "stopped" and len(by_q[0.2].reports) < 4
    assert summary["trials_completed"] + summary["trials_failed"] + summary["trials_stopped_early"] == 5


def test_missing_ray_is_a_clear_error(monkeypatch):
    import builtins

    from escala.errors import UserError
    from escala.search.executors import ray as ray_executor

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError, match="pip install 'escala\\[ray\\]'"):
        ray_executor.RayExecutor()
