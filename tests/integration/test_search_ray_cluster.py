"""``escala search --executor ray --address HOST:PORT`` against a Ray cluster started apart from the search.

A real multi-machine cluster is not available to the test suite; a head node started by ``ray start
--head --port P`` in its own session is one, as far as the driver can tell: ``escala search`` connects
to it by address (the path a cluster user takes), the cluster schedules the trials on its own worker
processes, and the search leaves the cluster running. The head is ended at the end of the test by
signalling its own process group (everything ``ray start`` started, and nothing else: ``ray stop``
would end every Ray process on the machine, including other users' instances).

Recent Ray clusters started by ``ray start`` require token authentication; the head and every
driver of the test share a fresh token through ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``, as a
cluster user's environment would (escala passes the environment on to ``ray.init``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'escala[ray]'); not installed")

SPACE = """
epochs = 4
hidden = [[16]]
lr = [0.3, 0.1, 0.003, 0.0003, 0.0001, 0.05]
"""


# One token for the head and every driver this test starts (never the user's ~/.ray/auth_token).
RAY_ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    here = Path(sys.executable).with_name("ray")  # the ray of this interpreter's environment
    return str(here) if here.exists() else shutil.which("ray") or "ray"


def _connects(address: str) -> bool:
    probe = f"import ray; ray.init(address={address!r}, log_to_driver=False); ray.shutdown()"
    try:
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, env=RAY_ENV)
        return run.returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture
def ray_head():
    """A Ray head node on a free port of 127.0.0.1 with 2 CPUs; yields its address, then ends it."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="escray", dir="/tmp")  # short: Ray's socket paths have a length limit
    cmd = [_ray_cli(), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1"]
    cmd += ["--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp]
    cmd += ["--block"]  # stays in the foreground: its process group is the cluster's
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=RAY_ENV, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _connects(address):
            if head.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (Path(temp) / "head.log").read_text()[-800:]
                pytest.skip(f"could not start a Ray head with 'ray start --head' on this machine: {tail}")
            time.sleep(1)
        yield address
    finally:
        _end_group(head)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _end_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 40), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # ray start has returned; make sure nothing it started outlives it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_search_connects_to_a_running_ray_cluster_by_address(tmp_path, ray_head):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "escala.cli.main", "search", "--space", str(space), "--searcher", "grid"]
    cmd += ["--executor", "ray", "--address", ray_head, "--parallel", "2", "--cpus-per-trial", "1"]
    cmd += ["--early-stop", "asha", "--eta", "2", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=RAY_ENV)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    # the driver joined the cluster at that address instead of starting a Ray of its own
    assert "Connecting to existing Ray cluster" in run.stderr, run.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_completed"] + summary["trials_stopped_early"] == 6
    assert summary["trials_failed"] == 0
    assert summary["trials_stopped_early"] >= 1  # ASHA's decisions travelled to the cluster's trials
    assert summary["best_value"] > 0.5
    # the search disconnected without taking the cluster down: a new driver still finds it, and the
    # cluster's job table holds the search's driver, finished
    probe = (
        f"import json, ray; ray.init(address={ray_head!r}, log_to_driver=False); "
        "import ray._private.state as s; "
        "print(json.dumps([[j.get('Entrypoint') or '', bool(j.get('IsDead'))] for j in s.jobs()]))"
    )
    jobs = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=RAY_ENV)
    assert jobs.returncode == 0, jobs.stderr[-1500:]
    table = json.loads(jobs.stdout.strip().splitlines()[-1])
    assert [dead for entry, dead in table if "escala.cli.main search" in entry] == [True], table
