"""Calibrate the cost model on the machine at hand: compute rate, memory bandwidth, gloo messages.

* ``matmul_flops``: ``2 n^3 / t`` of a square float32 matmul, the peak a dense layer can reach here;
* ``memory_bandwidth``: bytes read + written per second by a large tensor copy;
* ``model_step_seconds``: the model's own forward + backward + SGD step at a batch size, the *mean* of
  timed steps (what ``compute = "measure"`` uses instead of FLOPs / peak); with ``busy`` processes at
  once, in lockstep (a barrier after each step, its own cost subtracted): a synchronous step waits
  for the slower process of each step; the same processes then time an all-reduce of the gradient's
  bytes issued right after each step against the same all-reduce back to back
  (``post_step_allreduce_factor``: on this machine 1.1-1.5 from run to run, the all-reduce of a step
  is slower than a tight loop of them shows);
* ``gloo_allreduce``: two local processes joined through a FileStore (no port to race for) all-reduce
  float32 tensors of several sizes; a least-squares line ``t(n) = c0 + c1 n`` through the mean times
  gives, for the 2-process ring ``t = 2 a + 2 (p-1)/p n b = 2a + n b``, the latency ``a = c0 / 2``
  and the bandwidth ``1 / b = 1 / c1``; a ping-pong of the same sizes gives the one-way message line
  ``t = a' + n b'`` (``p2p_latency``, ``p2p_bandwidth``). The processes have a timeout and are killed
  past it;
* the fixed cost of a strategy's step, ``escala train`` on an empty model, is in
  :func:`escala.plan.validate.empty_step_seconds`.

Means, not medians, wherever a run pays every call: throughput is samples over *total* time, and on a
shared machine the occasional stalled call (a process descheduled while its peer waits) is part of it.
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
from escala.runtime.dist import shutdown

_CACHE: dict[tuple, object] = {}
SIZES = (1, 2**10, 2**16, 2**18, 2**20, 2**22)  # float32 elements: 4 B .. 16 MiB


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


def run_calibration(target, processes: int, args: tuple, timeout_s: float, what: str):
    """Run ``target(rank, store_path, *args, out)`` in ``processes`` spawned processes that rendezvous
    on a FileStore at ``store_path`` (in a temporary directory, removed afterwards) and return the
    first result put on ``out``; one line naming ``what`` if they fail or outlive ``timeout_s``."""
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="escala-calib-") as store_dir:
        store = os.path.join(store_dir, "store")
        procs = [ctx.Process(target=target, args=(r, store, *args, out)) for r in range(processes)]
        alive = _run_until(procs, timeout_s)
    if alive or any(p.exitcode != 0 for p in procs) or out.empty():
        raise UserError(f"calibration: {what} did not finish within {timeout_s:.0f}s")
    return out.get()


def join_group(rank: int, store_path: str, processes: int, n_threads: int = 1, timeout_s: float = 60.0):
    """In a calibration process: set its threads, join the gloo group of ``processes`` on the
    FileStore at ``store_path`` (collectives time out after ``timeout_s``) and return
    ``torch.distributed``; pair with :func:`escala.runtime.dist.shutdown` in a ``finally``."""
    import torch.distributed as dist

    torch.set_num_threads(n_threads)
    store = dist.FileStore(store_path, processes)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=processes, timeout=timedelta(seconds=timeout_s)
    )
    return dist


@contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_calls(fn, repeats: int, warmup: int = 1, min_seconds: float = 0.5, stat: str = "median") -> float:
    """Seconds per call of ``fn`` over at least ``repeats`` calls and ``min_seconds`` of timing.

    Timing for a fixed minimum duration, not a fixed count, keeps a momentary load spike on a shared
    machine from deciding a fast function's calibration. ``stat = "median"`` gives a rate the hardware
    reaches (matmul, copy); ``"mean"`` what a run of many calls pays on average, stalls included
    (throughput is samples over *total* time: a model step, a collective).
    """
    for _ in range(warmup):
        fn()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < repeats or (time.perf_counter() - start < min_seconds and len(runs) < 1000):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.mean(runs) if stat == "mean" else statistics.median(runs)


def matmul_flops(n_threads: int = 1, n: int = 512, repeats: int = 5) -> float:
    key = ("matmul", n_threads, n)
    if key not in _CACHE:
        a, b = torch.randn(n, n), torch.randn(n, n)
        with threads(n_threads):
            t = _time_calls(lambda: torch.mm(a, b), repeats)
        _CACHE[key] = 2 * n**3 / t
    return _CACHE[key]


def memory_bandwidth(n_threads: int = 1, numel: int = 2**23, repeats: int = 5) -> float:
    key = ("copy", n_threads, numel)
    if key not in _CACHE:
        src, dst = torch.randn(numel), torch.empty(numel)
        with threads(n_threads):
            t = _time_calls(lambda: dst.copy_(src), repeats)
        _CACHE[key] = 2 * 4 * numel / t
    return _CACHE[key]


def make_optimizer(params, optimizer: str) -> torch.optim.Optimizer:
    """The optimizer a training run of the profile uses (AdamW, or SGD with momentum)."""
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=1e-3)
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def _step_loop(name, shape, classes, hidden, optimizer, batch, repeats):
    """Build the model with real weights and return a function doing one training step."""
    from escala.models import build_model

    torch.manual_seed(0)
    model = build_model(name, shape, classes, hidden=hidden)
    opt = make_optimizer(model.parameters(), optimizer)
    x = torch.randn(int(batch), *shape)
    y = torch.randint(0, classes, (int(batch),))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step.numel = sum(p.numel() for p in model.parameters())
    return step


def _profile_args(profile) -> tuple:
    return (
        profile.name,
        tuple(profile.input_shape),
        profile.num_classes,
        tuple(profile.hidden),
        profile.optimizer,
    )


def _busy_worker(rank, store_path, args, batch, n_threads, seconds, processes, out) -> None:
    """Time the model's step in ``processes`` processes that move in lockstep, as synchronous training
    does: each step ends with a 4-byte all-reduce (a barrier). The barrier's own cost, timed alone right
    after, is subtracted (the cost model adds the real collective), so what remains is the step plus
    the wait for the slower process of each step."""
    dist = join_group(rank, store_path, processes, n_threads)
    try:
        step = _step_loop(*args, batch, 1)
        count = max(10, int(seconds / max(_time_calls(step, 3, warmup=2, min_seconds=0.0), 1e-6)))
        agreed = torch.tensor([count])
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        count = min(int(agreed), 2000)
        compute = lockstep_seconds(step, count, rounds=1)
        # The gradient all-reduce as a synchronous step issues it: right after the step, on a buffer of
        # the gradient's size, against the same all-reduce back to back.
        grads = torch.zeros(step.numel)

        def after_step() -> None:
            step()
            dist.all_reduce(grads)

        post = _fixed_count_mean(after_step, count) - compute
        alone = _fixed_count_mean(lambda: dist.all_reduce(grads), min(count, 200))
        if rank == 0:
            out.put((compute, max(post, 0.0) / max(alone, 1e-9)))
        dist.barrier()
    finally:
        shutdown()


def _fixed_count_mean(fn, count: int) -> float:
    """Mean seconds per call over exactly ``count`` calls (after two warm-up calls): a collective must
    be called equally often in every process."""
    fn()
    fn()
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - t0) / count


def lockstep_seconds(step, count: int, rounds: int) -> float:
    """Mean seconds of ``step`` when every process of the group runs it in lockstep: each call is
    followed by a 4-byte all-reduce (the barrier a synchronous step has), whose own cost, timed alone
    in interleaved rounds (so a slow spell of the machine falls on both alike), is subtracted. Every
    process must call it with the same ``count`` and ``rounds``."""
    import torch.distributed as dist

    flag = torch.zeros(1)

    def lockstep() -> None:
        step()
        dist.all_reduce(flag)

    sums = [0.0, 0.0]
    for _ in range(rounds):
        for i, fn in enumerate((lockstep, lambda: dist.all_reduce(flag))):
            sums[i] += _fixed_count_mean(fn, count)
    both, barrier = (t / rounds for t in sums)
    return max(both - barrier, 0.0)


def model_step_seconds(
    profile, batch: int, n_threads: int = 1, repeats: int = 5, fraction: float = 1.0, busy: int = 1
) -> float:
    """Mean seconds of one training step of ``profile``'s model at ``batch`` (real tensors, CPU).

    ``busy`` > 1 times the step in that many processes at once (a device whose neighbours on the node
    are also computing: they share cores, caches and memory bandwidth), in lockstep as a synchronous
    step runs, so the wait for the slower process of each step is in it (:func:`_busy_worker`).
    """
    key = ("step", _profile_args(profile), int(batch), n_threads, busy)
    if key not in _CACHE:
        if busy <= 1:
            step = _step_loop(*_profile_args(profile), batch, repeats)
            with threads(n_threads):
                _CACHE[key] = _time_calls(step, repeats, warmup=2, stat="mean")
        else:
            _CACHE[key], _CACHE[("post", *key[1:])] = _concurrent(profile, batch, n_threads, busy)
    return _CACHE[key] * fraction


def post_step_allreduce_factor(profile, batch: int, n_threads: int = 1, busy: int = 2) -> float:
    """How many times its back-to-back time an all-reduce of the model's gradient bytes costs when
    each of ``busy`` processes issues it right after a training step of the model, in lockstep (as a
    synchronous step does; :func:`_busy_worker`). 1 for a single process."""
    if busy <= 1:
        return 1.0
    model_step_seconds(profile, batch, n_threads, busy=busy)
    return _CACHE[("post", _profile_args(profile), int(batch), n_threads, busy)]


def _concurrent(
    profile, batch: int, n_threads: int, processes: int, seconds: float = 1.0, timeout_s: float = 120.0
) -> float:
    args = (_profile_args(profile), int(batch), n_threads, seconds, processes)
    return run_calibration(
        _busy_worker, processes, args, timeout_s, f"timing the model in {processes} processes"
    )


def codec_seconds(name: str, numel: int, n_threads: int = 1, momentum: float = 0.0) -> tuple[float, float]:
    """(encode, decode of one message) seconds for ``numel`` float32 gradient values with escala's codec
    ``name``, built as a training run builds it (top-k with SGD: momentum correction at ``momentum``)."""
    from escala.parallel.data.codecs import build_codec

    key = ("codec", name, numel, n_threads, momentum)
    if key not in _CACHE:
        codec = build_codec(name, topk_momentum=momentum if name == "topk" else 0.0)
        if codec is None:
            return 0.0, 0.0
        size = min(numel, 2**20)
        g = torch.randn(size)
        wire = codec.encode(g)
        with threads(n_threads):
            enc = _time_calls(lambda: codec.encode(g), 3, stat="mean")
            dec = _time_calls(lambda: codec.decode(wire, size), 3, stat="mean")
        _CACHE[key] = (enc * numel / size, dec * numel / size)
    return _CACHE[key]


def _allreduce_worker(
    rank: int, store_path: str, sizes: tuple[int, ...], repeats: int, timeout_s: float, out
) -> None:
    dist = join_group(rank, store_path, 2, 1, timeout_s)
    try:
        times, p2p = [], []
        for numel in sizes:
            t = torch.ones(numel)
            times.append(_agreed_mean(lambda t=t: dist.all_reduce(t), repeats))
            p2p.append(_agreed_mean(lambda t=t: _ping_pong(t, rank), repeats) / 2)
        if rank == 0:
            out.put((times, p2p))
        dist.barrier()
    finally:
        shutdown()


def _ping_pong(t: torch.Tensor, rank: int) -> None:
    """Rank 0 sends ``t`` to rank 1, which sends it back: two one-way messages."""
    import torch.distributed as dist

    if rank == 0:
        dist.send(t, 1)
        dist.recv(t, 1)
    else:
        dist.recv(t, 0)
        dist.send(t, 0)


def _agreed_mean(fn, repeats: int, min_seconds: float = 0.3) -> float:
    """Mean seconds of a collective ``fn`` over a number of calls every process agrees on.

    Each process times at least ``repeats`` calls and ``min_seconds``, but a collective must be called
    equally often everywhere, so the count is the largest any process asks for (one all-reduce).
    """
    import torch.distributed as dist

    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    count = torch.tensor([max(repeats, min(500, int(min_seconds / one) + 1))])
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    runs = []
    for _ in range(int(count)):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.mean(runs)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of ``y = c0 + c1 x`` by least squares on the relative error (weights 1/y^2)."""
    w = [1.0 / (y * y) for y in ys]
    sw = sum(w)
    sx = sum(wi * x for wi, x in zip(w, xs))
    sy = sum(wi * y for wi, y in zip(w, ys))
    sxx = sum(wi * x * x for wi, x in zip(w, xs))
    sxy = sum(wi * x * y for wi, x, y in zip(w, xs, ys))
    det = sw * sxx - sx * sx
    slope = (sw * sxy - sx * sy) / det if det else 0.0
    return max((sy - slope * sx) / sw, 0.0), max(slope, 1e-15)


def fit_alpha_beta(sizes_bytes: list[float], times: list[float], p: int = 2) -> tuple[float, float]:
    """(latency a, bandwidth 1/b) of the ring all-reduce ``t = 2(p-1) a + 2(p-1)/p n b``.

    The line ``t = c0 + c1 n`` is fitted by least squares on the *relative* error (weights 1/t^2), so
    the small messages, which fix the latency, count as much as the large ones, which fix the bandwidth.
    """
    intercept, slope = fit_line(sizes_bytes, times)
    beta = slope / (2 * (p - 1) / p)
    return intercept / (2 * (p - 1)), 1.0 / beta


def gloo_allreduce(sizes: tuple[int, ...] = SIZES, repeats: int = 7, timeout_s: float = 60.0) -> dict:
    """Latency and bandwidth of gloo all-reduce between two local processes (see module docstring)."""
    key = ("gloo", sizes, repeats)
    if key in _CACHE:
        return _CACHE[key]
    times, one_way = run_calibration(
        _allreduce_worker, 2, (sizes, repeats, timeout_s), timeout_s, "the 2-process gloo all-reduce"
    )
    nbytes = [4.0 * s for s in sizes]
    latency, bandwidth = fit_alpha_beta(nbytes, times)
    p2p_latency, p2p_slope = fit_line(nbytes, one_way)
    _CACHE[key] = {
        "allreduce_latency": latency,
        "allreduce_bandwidth": bandwidth,
        "allreduce_points": [[b, t] for b, t in zip(nbytes, times)],
        "p2p_latency": p2p_latency,
        "p2p_bandwidth": 1.0 / p2p_slope,
        "p2p_points": [[b, t] for b, t in zip(nbytes, one_way)],
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
