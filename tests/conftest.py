"""Shared fixtures: small, fast training configs and a guard that every test leaves no process group."""

from __future__ import annotations

import pytest


@pytest.fixture
def quick(tmp_path):
    """Overrides for a fast digits run writing into a fresh directory."""
    return {
        "dataset": "digits",
        "model": "mlp",
        "hidden": (32,),
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.02,
        "out": str(tmp_path / "run"),
        "progress": "none",
        "tensorboard": False,
    }
