"""Shared checks of the distributed tests."""

from __future__ import annotations

import json

import pytest
import torch

import escala
from escala.checkpoint import load_checkpoint


def final_params(out) -> dict[str, torch.Tensor]:
    """The model a run left in its last checkpoint."""
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


def _same_run(a_out, b_out, tol: float = 1e-5) -> None:
    a, b = final_params(a_out), final_params(b_out)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=tol, atol=tol, msg=name)
    ma = [json.loads(line) for line in open(f"{a_out}/metrics.jsonl")]
    mb = [json.loads(line) for line in open(f"{b_out}/metrics.jsonl")]
    for ra, rb in zip(ma, mb, strict=True):
        assert ra["val_acc"] == pytest.approx(rb["val_acc"], abs=1e-9)
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=tol)


@pytest.fixture
def same_run():
    """``check(a_out, b_out, tol=1e-5)``: two runs ended with the same weights (within ``tol``) and
    the same per-epoch metrics (validation accuracy exactly, training loss within ``tol``)."""
    return _same_run


@pytest.fixture
def resume_matches_whole_run(tmp_path):
    """``check(config, stop_at)``: a run stopped after ``stop_at`` steps and resumed with ``--resume``
    must end bit-identical to one uninterrupted run of ``config``; returns the whole run's summary and
    the resumed run's directory."""

    def check(config: dict, stop_at: int):
        whole, parts = tmp_path / "whole", tmp_path / "parts"
        summary = escala.train(**dict(config, out=str(whole)))
        escala.train(**dict(config, out=str(parts), max_steps=stop_at))
        escala.train(**dict(config, out=str(parts), resume=True))
        a, b = final_params(whole), final_params(parts)
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"resumed run differs from the whole run in {differ}"
        return summary, parts

    return check
