"""Shared checks of the distributed tests."""

from __future__ import annotations

import pytest
import torch

import escala
from escala.checkpoint import load_checkpoint


def final_params(out) -> dict[str, torch.Tensor]:
    """The model a run left in its last checkpoint."""
    return load_checkpoint(f"{out}/checkpoints/last.pt")["model"]


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
