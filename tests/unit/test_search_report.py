"""The study's TensorBoard HParams output holds every completed trial, read back from the event files."""

from __future__ import annotations

import pytest

from escala.search.report import write_hparams
from escala.search.store import Trial

pytest.importorskip("tensorboard")


def _trials():
    return {
        0: Trial(0, {"lr": 0.1, "hidden": [64], "model": "mlp"}, status="completed", value=0.91),
        1: Trial(1, {"lr": 0.01, "hidden": [128, 64], "model": "mlp"}, status="completed", value=0.95),
        2: Trial(2, {"lr": 0.5, "hidden": [32], "model": "mlp"}, status="failed", error="boom"),
        3: Trial(3, {"lr": 0.3, "hidden": [32], "model": "mlp"}, status="stopped", value=0.4),
    }


def _read_run(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    datas = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    start = next(d.session_start_info for d in datas.values() if d.HasField("session_start_info"))
    experiment = next(d.experiment for d in datas.values() if d.HasField("experiment"))
    hparams = {}
    for name, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[name] = getattr(value, kind)
    metrics = {m.name.tag for m in experiment.metric_infos}
    scalars = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return hparams, metrics, scalars


def test_hparams_hold_every_completed_trial_with_its_config_and_value(tmp_path):
    assert write_hparams(tmp_path / "tb", _trials(), "val_acc")
    runs = sorted(p.name for p in (tmp_path / "tb").iterdir() if p.is_dir())
    assert runs == ["trial-00000", "trial-00001"]  # the failed and the stopped trial are not results
    seen = {}
    for run in runs:
        hparams, metrics, scalars = _read_run(tmp_path / "tb" / run)
        assert metrics == {"hparam/val_acc"}
        assert set(hparams) == {"lr", "hidden", "model"} and hparams["model"] == "mlp"
        (value,) = scalars["hparam/val_acc"]
        seen[run] = (hparams["lr"], hparams["hidden"], value)
    assert seen["trial-00000"] == (pytest.approx(0.1), "[64]", pytest.approx(0.91))
    assert seen["trial-00001"] == (pytest.approx(0.01), "[128, 64]", pytest.approx(0.95))
