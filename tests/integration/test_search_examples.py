"""The Hops/Maggy one-liners run as documented: examples/search_grid.py and examples/search_evolution.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], cwd=cwd, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    return done.stdout


@pytest.mark.timeout(300)
def test_grid_one_liner(tmp_path):
    printed = _run("search_grid.py", tmp_path)  # launch(train, {"lr": [...3], "dropout": [...2]})
    summary = json.loads((tmp_path / "runs/search_grid/summary.json").read_text())
    assert summary["searcher"] == "grid" and summary["trials_completed"] == 6
    assert summary["best_config"]["lr"] in (0.001, 0.005, 0.01)
    assert summary["best_config"]["dropout"] in (0.5, 0.6)
    assert f"best val_acc {summary['best_value']:.4f}" in printed


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_evolutionary_search_one_liner(tmp_path):
    printed = _run("search_evolution.py", tmp_path)  # popsize 10, generations 3: 40 trials of DE
    summary = json.loads((tmp_path / "runs/search_de/summary.json").read_text())
    assert summary["searcher"] == "de" and summary["trials_completed"] == 40
    best = summary["best_config"]
    assert 0.001 <= best["lr"] <= 0.5 and 0.0 <= best["dropout"] <= 0.6 and 16 <= best["width"] <= 256
    assert isinstance(best["width"], int)
    assert summary["best_value"] > 0.5 and "best val_acc" in printed
