"""Calibrate the cost model on the machine at hand: compute rate, memory bandwidth, gloo all-reduce.

* ``matmul_flops``: ``2 n^3 / t`` of a square float32 matmul, the peak a dense layer can reach here;
* ``memory_bandwidth``: bytes read + written per second by a large tensor copy;
* ``model_step_seconds``: the model's own forward + backward + SGD step at a batch size, median of a
  few timed steps (what ``compute = "measure"`` uses instead of FLOPs / peak);
* ``gloo_allreduce``: two local processes joined through a FileStore (no port to race for) all-reduce
  float32 tensors of several sizes; a least-squares line ``t(n) = c0 + c1 n`` through the medians
  gives, for the 2-process ring ``t = 2 a + 2 (p-1)/p n b = 2a + n b``, the latency ``a = c0 / 2``
  and the bandwidth ``1 / b = 1 / c1``. The processes have a timeout and are killed past it.

Numbers are cached per process. They are only as quiet as the machine: on a shared machine they move
from run to run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.multiprocessing as mp

from escala.errors import UserError

_CACHE: dict[tuple, object] = {}
SIZES = (2**10, 2**16, 2**20, 2**22)  # float32 elements: 4 KiB .. 16 MiB


def _run_until(procs: list, timeout_s: float) -> list:
    """Start ``procs``, wait for them until ``timeout_s`` from now, kill the ones still running and
    return those (a calibration must never hang the command)."""
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
        p.join(5)
    return alive


@contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _median_time(fn, repeats: int, warmup: int = 1, min_seconds: float = 0.5) -> float:
    """Median seconds of ``fn`` over at least ``repeats`` calls and ``min_seconds`` of timing.

    Timing for a fixed minimum duration, not a fixed count, keeps a momentary load spike on a shared
    machine from deciding a fast function's calibration.
    """
    for _ in range(warmup):
        fn()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < repeats or (time.perf_counter() - start < min_seconds and len(runs) < 1000):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def matmul_flops(n_threads: int = 1, n: int = 512, repeats: int = 5) -> float:
    key = ("matmul", n_threads, n)
    if key not in _CACHE:
        a, b = torch.randn(n, n), torch.randn(n, n)
        with threads(n_threads):
            t = _median_time(lambda: torch.mm(a, b), repeats)
        _CACHE[key] = 2 * n**3 / t
    return _CACHE[key]


def memory_bandwidth(n_threads: int = 1, numel: int = 2**23, repeats: int = 5) -> float:
    key = ("copy", n_threads, numel)
    if key not in _CACHE:
        src, dst = torch.randn(numel), torch.empty(numel)
        with threads(n_threads):
            t = _median_time(lambda: dst.copy_(src), repeats)
        _CACHE[key] = 2 * 4 * numel / t
    return _CACHE[key]


def _step_loop(name, shape, classes, hidden, optimizer, batch, repeats):
    """Build the model with real weights and return a function doing one training step."""
    from escala.models import build_model

    torch.manual_seed(0)
    model = build_model(name, shape, classes, hidden=hidden)
    opt = (
        torch.optim.AdamW(model.parameters(), lr=1e-3)
        if optimizer == "adamw"
        else torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    )
    x = torch.randn(int(batch), *shape)
    y = torch.randint(0, classes, (int(batch),))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _profile_args(profile) -> tuple:
    return (
        profile.name,
        tuple(profile.input_shape),
        profile.num_classes,
        tuple(profile.hidden),
        profile.optimizer,
    )


def _busy_worker(args, batch, n_threads, repeats, barrier, out) -> None:
    torch.set_num_threads(n_threads)
    step = _step_loop(*args, batch, repeats)
    step()
    barrier.wait(60)  # time all processes over the same window
    out.put(_median_time(step, repeats, warmup=1))


def model_step_seconds(
    profile, batch: int, n_threads: int = 1, repeats: int = 5, fraction: float = 1.0, busy: int = 1
) -> float:
    """Median seconds of one training step of ``profile``'s model at ``batch`` (real tensors, CPU).

    ``busy`` > 1 times the step in that many processes at once (a device whose neighbours on the node
    are also computing: they share cores, caches and memory bandwidth) and returns the slowest median,
    since a synchronous step waits for the slowest device.
    """
    key = ("step", _profile_args(profile), int(batch), n_threads, busy)
    if key not in _CACHE:
        if busy <= 1:
            step = _step_loop(*_profile_args(profile), batch, repeats)
            with threads(n_threads):
                _CACHE[key] = _median_time(step, repeats, warmup=2)
        else:
            _CACHE[key] = _concurrent(profile, batch, n_threads, max(repeats, 10), busy)
    return _CACHE[key] * fraction


def _concurrent(
    profile, batch: int, n_threads: int, repeats: int, processes: int, timeout_s: float = 120.0
) -> float:
    ctx = mp.get_context("spawn")
    out, barrier = ctx.SimpleQueue(), ctx.Barrier(processes)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    procs = [
        ctx.Process(
            target=_busy_worker, args=(_profile_args(profile), int(batch), n_threads, repeats, barrier, out)
        )
        for _ in range(processes)
    ]
    alive = _run_until(procs, timeout_s)
    results = []
    while not out.empty():
        results.append(out.get())
    if alive or len(results) != processes:
        raise UserError(
            f"calibration: timing the model in {processes} processes did not finish within {timeout_s:.0f}s"
        )
    return max(results)


def codec_seconds(name: str, numel: int, n_threads: int = 1) -> float:
    """Seconds to encode and decode ``numel`` float32 gradient values with escala's codec ``name``."""
    from escala.parallel.data.codecs import build_codec

    key = ("codec", name, numel, n_threads)
    if key not in _CACHE:
        codec = build_codec(name)
        if codec is None:
            return 0.0
        size = min(numel, 2**20)
        g = torch.randn(size)
        with threads(n_threads):
            t = _median_time(lambda: codec.decode(codec.encode(g), size), 3)
        _CACHE[key] = t * numel / size
    return _CACHE[key]


def _allreduce_worker(
    rank: int, store_path: str, sizes: tuple[int, ...], repeats: int, timeout_s: float, out
) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.FileStore(store_path, 2)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=2, timeout=timedelta(seconds=timeout_s)
    )
    try:
        times = []
        for numel in sizes:
            t = torch.ones(numel)
            times.append(_median_time(lambda t=t: dist.all_reduce(t), repeats, warmup=2))
        if rank == 0:
            out.put(times)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def fit_alpha_beta(sizes_bytes: list[float], times: list[float], p: int = 2) -> tuple[float, float]:
    """(latency a, bandwidth 1/b) of the ring all-reduce ``t = 2(p-1) a + 2(p-1)/p n b``.

    The line ``t = c0 + c1 n`` is fitted by least squares on the *relative* error (weights 1/t^2), so
    the small messages, which fix the latency, count as much as the large ones, which fix the bandwidth.
    """
    w = [1.0 / (t * t) for t in times]
    sw = sum(w)
    sx = sum(wi * x for wi, x in zip(w, sizes_bytes))
    sy = sum(wi * y for wi, y in zip(w, times))
    sxx = sum(wi * x * x for wi, x in zip(w, sizes_bytes))
    sxy = sum(wi * x * y for wi, x, y in zip(w, sizes_bytes, times))
    det = sw * sxx - sx * sx
    slope = (sw * sxy - sx * sy) / det if det else 0.0
    intercept = (sy - slope * sx) / sw
    slope = max(slope, 1e-15)
    beta = slope / (2 * (p - 1) / p)
    return max(intercept, 0.0) / (2 * (p - 1)), 1.0 / beta


def gloo_allreduce(sizes: tuple[int, ...] = SIZES, repeats: int = 7, timeout_s: float = 60.0) -> dict:
    """Latency and bandwidth of gloo all-reduce between two local processes (see module docstring)."""
    key = ("gloo", sizes, repeats)
    if key in _CACHE:
        return _CACHE[key]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    store_dir = tempfile.mkdtemp(prefix="escala-calib-")
    store = os.path.join(store_dir, "store")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    procs = [
        ctx.Process(target=_allreduce_worker, args=(r, store, sizes, repeats, timeout_s, out))
        for r in range(2)
    ]
    alive = _run_until(procs, timeout_s)
    if alive or any(p.exitcode != 0 for p in procs) or out.empty():
        raise UserError(f"calibration: the 2-process gloo all-reduce did not finish within {timeout_s:.0f}s")
    times = out.get()
    latency, bandwidth = fit_alpha_beta([4.0 * s for s in sizes], times)
    _CACHE[key] = {
        "allreduce_latency": latency,
        "allreduce_bandwidth": bandwidth,
        "allreduce_points": [[4 * s, t] for s, t in zip(sizes, times)],
    }
    return _CACHE[key]


def measure_machine(n_threads: int = 1) -> dict:
    """Everything a ``"measure"`` in a cluster file can ask for, on this machine."""
    out = {
        "threads": n_threads,
        "matmul_flops": matmul_flops(n_threads),
        "memory_bandwidth": memory_bandwidth(n_threads),
    }
    out.update(gloo_allreduce())
    return out
