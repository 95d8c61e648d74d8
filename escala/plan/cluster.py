"""A cluster description (TOML): nodes, devices, their compute and memory, and the links between them.

The cost model (:mod:`escala.plan.costs`) needs, for each device, how fast it computes and how much it
holds, and for each link the two numbers of the alpha-beta (Hockney) model: a latency ``alpha``
(seconds per message) and a bandwidth ``1/beta`` (bytes per second), so that sending ``n`` bytes costs
``alpha + n * beta``. A file looks like::

    name = "8x V100 per node, NVLink inside, 10 GbE between nodes"
    nodes = 4
    devices_per_node = 8

    [device]
    name = "V100-SXM2-16GB"
    memory = "16GiB"
    compute = { fp32 = "15.7TFLOPS", fp16 = "125TFLOPS" }   # or compute = "measure"
    efficiency = 0.4                # fraction of peak a training step reaches (model FLOP utilisation)
    memory_bandwidth = "900GB/s"    # prices the encode/decode passes of gradient compression
    step_overhead = "0us"           # fixed cost of a step (framework, launches), or "measure" (with
                                    # compute = "measure": an empty model's step, per strategy)

    [intra]                         # between two devices of one node
    bandwidth = "130GB/s"           # or "measure" (gloo all-reduce between local processes)
    latency = "5us"
    p2p_bandwidth = "measure"       # a lone message (default: as above); "measure": gloo ping-pong
    p2p_latency = "measure"

    [inter]                         # the network card of each node
    bandwidth = "10Gbit/s"
    latency = "30us"

    [paramserver]
    placement = "dedicated"         # servers on nodes of their own, or "colocated" with the workers
    servers = 4                     # shards S of the parameters
    bandwidth = "10Gbit/s"          # each server's network card (default: [inter] bandwidth)

    [collectives]
    allreduce = "auto"              # ring, tree or auto (the cheaper per message)
    bucket = "25MiB"                # gradient bucket (PyTorch DDP's default bucket_cap_mb = 25)
    overlap = true                  # all-reduce buckets while backward still runs

    [stragglers]
    mean_delay = 0.0                # mean extra compute time of a worker per step, as a fraction
                                    # (exponentially distributed; what backup workers cut)

``compute = "measure"`` and ``bandwidth = "measure"`` / ``latency = "measure"`` take the value from
:mod:`escala.plan.calibrate` on the machine at hand. Every error names the field and what it allows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from escala.errors import UserError
from escala.plan.units import parse_bandwidth, parse_bytes, parse_flops, parse_seconds

PRECISIONS = ("fp32", "bf16", "fp16")
PLACEMENTS = ("dedicated", "colocated")
ALLREDUCE = ("ring", "tree", "auto")
_TOP = {
    "name",
    "nodes",
    "devices_per_node",
    "device",
    "intra",
    "inter",
    "paramserver",
    "collectives",
    "stragglers",
}
_SECTIONS = {
    "device": {"name", "memory", "compute", "efficiency", "memory_bandwidth", "threads", "step_overhead"},
    "intra": {"bandwidth", "latency", "p2p_bandwidth", "p2p_latency"},
    "inter": {"bandwidth", "latency", "p2p_bandwidth", "p2p_latency"},
    "paramserver": {"placement", "servers", "bandwidth", "latency"},
    "collectives": {"allreduce", "bucket", "overlap"},
    "stragglers": {"mean_delay"},
}


@dataclass(frozen=True)
class Link:
    """Alpha-beta link: ``time(n) = latency + n / bandwidth`` seconds for an n-byte message.

    ``bandwidth``/``latency`` are those a collective sees per step of its algorithm (fitted on an
    all-reduce when measured); a lone point-to-point message (a parameter-server push, a pipeline send)
    may see others, ``p2p_bandwidth``/``p2p_latency`` (default: the same).
    """

    bandwidth: float  # bytes / s
    latency: float  # s
    p2p_bandwidth: float | None = None
    p2p_latency: float | None = None
    # measured 2-process all-reduces, ((bytes, seconds), ...) by size: between the smallest and the
    # largest, a 2-process all-reduce is interpolated on them (gloo's time is not one line in the size)
    allreduce_points: tuple[tuple[float, float], ...] | None = None

    def time(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth

    def message(self, nbytes: float) -> float:
        """Seconds of one point-to-point message of ``nbytes``."""
        bw = self.p2p_bandwidth or self.bandwidth
        lat = self.latency if self.p2p_latency is None else self.p2p_latency
        return lat + nbytes / bw

    def scaled(self, factor: float) -> Link:
        """The same link with ``factor`` times the bandwidth (measured points no longer apply)."""
        return replace(
            self,
            bandwidth=self.bandwidth * factor,
            p2p_bandwidth=self.p2p_bandwidth and self.p2p_bandwidth * factor,
            allreduce_points=None,
        )

    def measured_allreduce(self, nbytes: float) -> float | None:
        """A 2-process all-reduce of ``nbytes`` interpolated (linearly in the size) between the measured
        points around it; None outside them or without points."""
        pts = self.allreduce_points
        if not pts or not pts[0][0] <= nbytes <= pts[-1][0]:
            return None
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if x0 <= nbytes <= x1:
                return y0 + (y1 - y0) * (nbytes - x0) / (x1 - x0) if x1 > x0 else y0
        return None


@dataclass(frozen=True)
class Device:
    name: str
    memory: float  # bytes
    peak_flops: dict[str, float]  # precision -> FLOP/s
    efficiency: float = 0.4
    memory_bandwidth: float = 500e9
    measured: bool = False  # compute = "measure": time the model itself on this machine
    threads: int = 1  # torch threads per device when measured (default: cores / devices_per_node)
    step_overhead: float = 0.0  # s per step of the training loop besides compute (fetch, hooks, metrics)
    overhead_measured: bool = False  # step_overhead = "measure": an empty step of each strategy, timed here

    def flops(self, precision: str) -> float:
        """Sustained FLOP/s of a training step at ``precision`` (peak x efficiency)."""
        if precision not in self.peak_flops:
            have = ", ".join(self.peak_flops) or "none"
            raise UserError(
                f"device.compute gives no {precision} rate (it gives {have}); add {precision} = ..."
            )
        return self.peak_flops[precision] * self.efficiency


@dataclass(frozen=True)
class Cluster:
    name: str
    nodes: int
    devices_per_node: int
    device: Device
    intra: Link
    inter: Link  # per node (its network card)
    ps_placement: str = "dedicated"
    ps_servers: int = 1
    ps_link: Link | None = None  # each server's card; None: same as inter
    allreduce: str = "auto"
    bucket_bytes: float = 25 * 2**20
    overlap: bool = True
    straggler_delay: float = 0.0
    source: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def max_devices(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def server_link(self) -> Link:
        return self.ps_link or self.inter

    def with_bandwidth(self, factor: float) -> Cluster:
        """The same cluster with every link ``factor`` times faster (for what-if tables and tests)."""
        scale = lambda link: link and link.scaled(factor)  # noqa: E731
        return replace(self, intra=scale(self.intra), inter=scale(self.inter), ps_link=scale(self.ps_link))


def _section(raw: dict, name: str) -> dict:
    sec = raw.get(name, {})
    if not isinstance(sec, dict):
        raise UserError(f"[{name}] must be a table, got {sec!r}")
    unknown = set(sec) - _SECTIONS[name]
    if unknown:
        raise UserError(
            f"{name}.{sorted(unknown)[0]} is not a cluster field; [{name}] takes {', '.join(sorted(_SECTIONS[name]))}"
        )
    return sec


def _int(raw: dict, key: str, field_name: str, default: int | None = None, low: int = 1) -> int:
    value = raw.get(key, default)
    if value is None:
        raise UserError(f"{field_name} is missing; give a whole number >= {low}")
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{field_name} = {value!r}: give a whole number >= {low}")
    return value


def _link(sec: dict, name: str, measure: Callable[[], dict] | None) -> Link:
    """``[intra]``/``[inter]``: a collective's bandwidth and latency, and optionally a lone message's.

    ``"measure"`` takes ``bandwidth``/``latency`` from the gloo all-reduce calibration and
    ``p2p_bandwidth``/``p2p_latency`` from the gloo ping-pong one.
    """
    out: dict[str, float | None] = {}
    for key, parse in (
        ("bandwidth", parse_bandwidth),
        ("latency", parse_seconds),
        ("p2p_bandwidth", parse_bandwidth),
        ("p2p_latency", parse_seconds),
    ):
        if key not in sec:
            if key.startswith("p2p"):
                out[key] = None
                continue
            raise UserError(f'{name}.{key} is missing; e.g. bandwidth = "10Gbit/s", latency = "30us"')
        if sec[key] == "measure":
            if measure is None:
                raise UserError(f'{name}.{key} = "measure" needs a calibration run (none available here)')
            calibrated = measure()
            source = key if key.startswith("p2p") else f"allreduce_{key}"
            if source not in calibrated:
                raise UserError(f'{name}.{key} = "measure": the calibration gave no {source}')
            out[key] = calibrated[source]
        else:
            out[key] = parse(sec[key], f"{name}.{key}")
    points = None
    if sec.get("bandwidth") == "measure" and sec.get("latency") == "measure" and measure is not None:
        points = tuple(tuple(pt) for pt in measure().get("allreduce_points", ())) or None
    return Link(out["bandwidth"], out["latency"], out["p2p_bandwidth"], out["p2p_latency"], points)


def parse_cluster(raw: dict, source: str = "", measure: Callable[[int], dict] | None = None) -> Cluster:
    """Build and check a :class:`Cluster` from parsed TOML. ``measure(threads)`` calibrates this machine."""
    unknown = set(raw) - _TOP
    if unknown:
        raise UserError(
            f"{sorted(unknown)[0]} is not a cluster field; a cluster file takes {', '.join(sorted(_TOP))}"
        )
    nodes = _int(raw, "nodes", "nodes")
    per_node = _int(raw, "devices_per_node", "devices_per_node")
    dev = _section(raw, "device")
    threads = _int(dev, "threads", "device.threads", default=0, low=0)
    if threads == 0:  # a measured "device" is a share of this machine's cores
        threads = max(1, (os.cpu_count() or 1) // per_node)
    calibration: dict[str, Any] = {}

    def run_measure() -> dict:
        if measure is None:
            raise UserError('"measure" in the cluster file needs a calibration run (none available here)')
        if not calibration:
            calibration.update(measure(threads))
        return calibration

    if "memory" not in dev:
        raise UserError('device.memory is missing; give bytes, e.g. "16GiB"')
    memory = parse_bytes(dev["memory"], "device.memory")
    if memory <= 0:
        raise UserError(f"device.memory = {dev['memory']!r}: must be positive")
    compute = dev.get("compute")
    measured = compute == "measure"
    if measured:
        peak = {"fp32": run_measure()["matmul_flops"]}
    elif isinstance(compute, dict) and compute:
        bad = set(compute) - set(PRECISIONS)
        if bad:
            raise UserError(
                f"device.compute.{sorted(bad)[0]}: precision must be one of {', '.join(PRECISIONS)}"
            )
        peak = {k: parse_flops(v, f"device.compute.{k}") for k, v in compute.items()}
    else:
        raise UserError(
            f"device.compute = {compute!r}: give peak FLOP/s per precision, e.g. "
            '{ fp32 = "15.7TFLOPS", fp16 = "125TFLOPS" }, or "measure"'
        )
    efficiency = dev.get("efficiency", 1.0 if measured else 0.4)
    if isinstance(efficiency, bool) or not isinstance(efficiency, (int, float)) or not 0 < efficiency <= 1:
        raise UserError(f"device.efficiency = {efficiency!r}: give a fraction of peak in (0, 1]")
    mem_bw = parse_bandwidth(dev.get("memory_bandwidth", 500e9), "device.memory_bandwidth")
    if measured and "memory_bandwidth" not in dev:
        mem_bw = run_measure().get("memory_bandwidth", mem_bw)
    overhead = dev.get("step_overhead", 0.0)
    overhead_measured = overhead == "measure"
    if overhead_measured and not measured:
        raise UserError('device.step_overhead = "measure" needs device.compute = "measure" (this machine)')
    overhead = 0.0 if overhead_measured else parse_seconds(overhead, "device.step_overhead")
    if overhead < 0:
        raise UserError(f"device.step_overhead = {dev['step_overhead']!r}: must be >= 0")
    device = Device(
        str(dev.get("name", "device")),
        memory,
        peak,
        float(efficiency),
        mem_bw,
        measured,
        threads,
        overhead,
        overhead_measured,
    )
    intra = _link(_section(raw, "intra"), "intra", run_measure if measure else None)
    if nodes > 1 or "inter" in raw:
        inter = _link(_section(raw, "inter"), "inter", run_measure if measure else None)
    else:
        inter = intra  # one node: no network card is ever used
    ps = _section(raw, "paramserver")
    placement = ps.get("placement", "dedicated")
    if placement not in PLACEMENTS:
        raise UserError(f"paramserver.placement = {placement!r}: choose {' or '.join(PLACEMENTS)}")
    servers = _int(ps, "servers", "paramserver.servers", default=1)
    if placement == "colocated" and servers > nodes * per_node:
        raise UserError(
            f"paramserver.servers = {servers}: colocated servers need a device each, the cluster has {nodes * per_node}"
        )
    ps_link = None
    if "bandwidth" in ps or "latency" in ps:
        ps_link = Link(
            parse_bandwidth(ps.get("bandwidth", inter.bandwidth), "paramserver.bandwidth"),
            parse_seconds(ps.get("latency", inter.latency), "paramserver.latency"),
        )
    coll = _section(raw, "collectives")
    algo = coll.get("allreduce", "auto")
    if algo not in ALLREDUCE:
        raise UserError(f"collectives.allreduce = {algo!r}: choose {', '.join(ALLREDUCE)}")
    bucket = parse_bytes(coll.get("bucket", 25 * 2**20), "collectives.bucket")
    if bucket <= 0:
        raise UserError(f"collectives.bucket = {coll.get('bucket')!r}: must be positive")
    overlap = coll.get("overlap", True)
    if not isinstance(overlap, bool):
        raise UserError(f"collectives.overlap = {overlap!r}: give true or false")
    delay = _section(raw, "stragglers").get("mean_delay", 0.0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
        raise UserError(f"stragglers.mean_delay = {delay!r}: give a fraction >= 0 of the compute time")
    return Cluster(
        name=str(raw.get("name", Path(source).stem if source else "cluster")),
        nodes=nodes,
        devices_per_node=per_node,
        device=device,
        intra=intra,
        inter=inter,
        ps_placement=placement,
        ps_servers=servers,
        ps_link=ps_link,
        allreduce=algo,
        bucket_bytes=bucket,
        overlap=overlap,
        straggler_delay=float(delay),
        source=source,
        calibration=dict(calibration),
    )


def load_cluster(path: str | Path, measure: Callable[[int], dict] | None = None) -> Cluster:
    """Read a cluster TOML file; ``measure`` defaults to :func:`escala.plan.calibrate.measure_machine`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--cluster {path}: no such file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"--cluster {path}: not valid TOML ({err})") from None
    if measure is None:
        from escala.plan.calibrate import measure_machine

        measure = measure_machine
    return parse_cluster(raw, str(path), measure)
