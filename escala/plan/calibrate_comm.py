"""Calibrations of communication *as training does it* on the machine at hand (two local processes).

:mod:`escala.plan.calibrate` times gloo's primitives back to back. Training does not call them that
way, and these microbenchmarks reproduce the access pattern of the real engines, on synthetic data
(never the model being predicted):

* ``transport_round_trip``: the parameter server's and the backup chief's exchange through escala's
  own transport (:class:`escala.parallel.data.transport.C10dTransport`): process 0 sends a header and
  an ``n``-byte payload, process 1 receives it from any source and answers with a header and ``n``
  bytes, process 0 receives the answer. A least-squares line ``t(n) = c0 + c1 n`` through the mean
  round trips gives a one-way message ``c0 / 2 + n c1 / 2`` (what :func:`transport_link` returns);
  next to gloo's raw ping-pong it adds the header message, the matching by tag, the non-blocking
  sends and the payload allocations the protocol makes.

* ``codec_seconds_busy``: escala's gradient codec timed in ``busy`` processes at once, in lockstep (a
  4-byte all-reduce after each call, its own cost subtracted), as every worker of a synchronous step
  encodes its gradient at the same moment: the codecs are memory-bound, and two processes share the
  machine's memory bandwidth and caches (compute is timed the same way:
  :func:`escala.plan.calibrate.model_step_seconds`).

* ``copy_seconds``: cloning a float32 tensor of ``n`` bytes into a fresh buffer, as the engines'
  ``torch.cat``, ``clone`` and ``parameters_to_vector`` do (allocation and first-touch page faults of
  a new buffer included, which a copy into a preallocated one does not see).

Means over an agreed number of calls (a collective must be called equally often in every process);
processes have a timeout and are killed past it.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from escala.plan.calibrate import _CACHE, _agreed_mean, fit_line, join_group, run_calibration
from escala.runtime.dist import shutdown

TRANSPORT_SIZES = (2**8, 2**16, 2**19, 2**21, 2**22)  # payload bytes


def _transport_worker(rank: int, store_path: str, sizes: tuple[int, ...], repeats: int, out) -> None:
    from escala.parallel.data.transport import C10dTransport

    dist = join_group(rank, store_path, 2)
    try:
        transport = C10dTransport()
        times = []
        for nbytes in sizes:
            payload = torch.ones(max(1, nbytes // 4))

            def round_trip(payload=payload) -> None:
                if rank == 0:
                    transport.send(1, [1, 0, 0, 0], payload)
                    transport.recv_from(1)
                else:
                    transport.recv_any()
                    transport.send(0, [2, 0], payload)

            times.append(_agreed_mean(round_trip, repeats))
        transport.flush()
        if rank == 0:
            out.put(times)
        dist.barrier()
    finally:
        shutdown()


def transport_round_trip(
    sizes: tuple[int, ...] = TRANSPORT_SIZES, repeats: int = 20, timeout_s: float = 60.0
) -> dict:
    """Round trips of ``sizes`` payload bytes through escala's transport between two processes:
    ``{"latency": c0, "seconds_per_byte": c1, "points": [[bytes, seconds], ...]}``."""
    key = ("transport", sizes, repeats)
    if key in _CACHE:
        return _CACHE[key]
    times = run_calibration(_transport_worker, 2, (sizes, repeats), timeout_s, "the transport round trip")
    c0, c1 = fit_line([float(s) for s in sizes], times)
    _CACHE[key] = {"latency": c0, "seconds_per_byte": c1, "points": [[s, t] for s, t in zip(sizes, times)]}
    return _CACHE[key]


def _codec_worker(rank, store_path, processes, name, numel, momentum, n_threads, out) -> None:
    from escala.parallel.data.codecs import build_codec
    from escala.plan.calibrate import _fixed_count_mean

    dist = join_group(rank, store_path, processes, n_threads)
    try:
        codec = build_codec(name, topk_momentum=momentum if name == "topk" else 0.0, seed=rank)
        g = torch.randn(numel, generator=torch.Generator().manual_seed(rank))
        wire = codec.encode(g)
        flag = torch.zeros(1)

        def encode() -> None:
            codec.encode(g)
            dist.all_reduce(flag)

        def decode() -> None:
            codec.decode(wire, numel)
            dist.all_reduce(flag)

        barrier = _fixed_count_mean(lambda: dist.all_reduce(flag), 50)
        enc = _fixed_count_mean(encode, 10)
        dec = _fixed_count_mean(decode, 10)
        if rank == 0:
            out.put((max(enc - barrier, 0.0), max(dec - barrier, 0.0)))
        dist.barrier()
    finally:
        shutdown()


def codec_seconds_busy(
    name: str, numel: int, momentum: float = 0.0, busy: int = 2, n_threads: int = 1, timeout_s: float = 120.0
) -> tuple[float, float]:
    """(encode, decode) seconds of codec ``name`` on ``numel`` values with ``busy`` processes coding at
    once (see above); ``numel`` is capped at 2**20 and the times scaled linearly past it."""
    key = ("codec-busy", name, numel, momentum, busy, n_threads)
    if key in _CACHE:
        return _CACHE[key]
    size = min(numel, 2**20)
    args = (busy, name, size, momentum, n_threads)
    enc, dec = run_calibration(
        _codec_worker, busy, args, timeout_s, f"timing codec {name} in {busy} processes"
    )
    _CACHE[key] = (enc * numel / size, dec * numel / size)
    return _CACHE[key]


def copy_seconds(nbytes: float, n_threads: int = 1) -> float:
    """Mean seconds of ``x.clone()`` for a float32 ``x`` of ``nbytes`` (see above)."""
    from escala.plan.calibrate import _time_calls, threads

    numel = max(1, int(nbytes // 4))
    key = ("clone", numel, n_threads)
    if key not in _CACHE:
        x = torch.randn(numel)
        with threads(n_threads):
            _CACHE[key] = _time_calls(x.clone, 20, warmup=3, min_seconds=0.3, stat="mean")
    return _CACHE[key]


def transport_link(link):
    """``link`` whose point-to-point message is half a measured transport round trip (see above)."""
    rt = transport_round_trip()
    return replace(link, p2p_latency=rt["latency"] / 2, p2p_bandwidth=2.0 / rt["seconds_per_byte"])


def _exchange_worker(rank, store_path, args, batch, n_threads, count, rounds, chief_busy, out) -> None:
    from escala.parallel.data.transport import C10dTransport
    from escala.plan.calibrate import _fixed_count_mean, _step_loop

    dist = join_group(rank, store_path, 2, n_threads)
    try:
        transport = C10dTransport()
        step = _step_loop(*args, batch, 1)
        calls = count + 2  # _fixed_count_mean makes two warm-up calls
        if rank == 1:  # the server: apply each push with SGD + momentum, reply with the parameters
            param = torch.nn.Parameter(torch.zeros(step.numel))
            opt = torch.optim.SGD([param], lr=1e-3, momentum=0.9)

            def serve() -> None:
                msg = transport.recv_any()
                param.grad = msg.payload.view(torch.float32).view_as(param)
                opt.step()
                transport.send(msg.src, [2, 0], param.detach())

            # Mirror the worker's three phases; a backup chief computes its own step in the first two.
            for _ in range(rounds):
                for _ in range(calls if chief_busy else 0):
                    step()
                for _ in range(calls):
                    if chief_busy:
                        step()
                    serve()
                for _ in range(calls):
                    serve()
        else:
            grad = torch.randn(step.numel)

            def exchange() -> None:
                transport.send(1, [1, 0, 0, 0], grad)
                transport.recv_from(1)

            def after_step() -> None:
                step()
                exchange()

            sums = [0.0, 0.0, 0.0]
            for _ in range(rounds):  # interleaved, so a slow spell falls on all three alike
                for i, fn in enumerate((step, after_step, exchange)):
                    sums[i] += _fixed_count_mean(fn, count)
            alone, after, exch = (t / rounds for t in sums)
            out.put(max(after - alone, 0.0) / max(exch, 1e-9))
        transport.flush()
        dist.barrier()
    finally:
        shutdown()


def exchange_after_step_factor(
    profile,
    batch: int,
    n_threads: int = 1,
    count: int = 20,
    rounds: int = 3,
    timeout_s: float = 120.0,
    chief_busy: bool = False,
) -> float:
    """How many times its back-to-back time a parameter-server exchange costs when the worker issues it
    right after a training step of the model, as escala's parameter-server worker does: process 0
    steps the model, then pushes a gradient-sized payload through escala's transport and waits for the
    reply; process 1, the server, applies it with SGD + momentum to a parameter vector of the model's
    size and sends the parameters back. Factor = ``(t(step + exchange) - t(step)) / t(exchange)``.

    ``chief_busy``: process 1 is a backup-workers chief, which computes its own step of the model
    before it serves the push (both processes compute at once, as in training; ``t(step)`` then is
    the worker's step with the chief computing too), so the push arrives at a busy process and the
    reply waits for the chief's step."""
    from escala.plan.calibrate import _profile_args

    args = _profile_args(profile)
    key = ("exchange-post", args, int(batch), n_threads, count, rounds, chief_busy)
    if key in _CACHE:
        return _CACHE[key]
    rest = (args, int(batch), n_threads, count, rounds, chief_busy)
    what = "the backup chief's exchange" if chief_busy else "the parameter-server exchange"
    _CACHE[key] = run_calibration(_exchange_worker, 2, rest, timeout_s, what)
    return _CACHE[key]
