"""Each cost term against a hand computation on small cases, and monotonicity of the predictions."""

import math
from dataclasses import replace

import pytest

from escala.errors import UserError
from escala.plan.cluster import Link, parse_cluster
from escala.plan.collectives import group_allreduce, ring_allgather, ring_allreduce, tree_allreduce
from escala.plan.dataparallel import allreduce_cost, localsgd_cost
from escala.plan.modelparallel import pipeline_cost, tensor_cost
from escala.plan.overlap import buckets, exposed_comm
from escala.plan.paramserver import paramserver_cost, server_traffic
from escala.plan.planner import STRATEGIES, make_plan, predict
from escala.plan.profile import ChildProfile, profile_model
from escala.plan.step import Setting, harmonic

LINK = Link(1e9, 1e-5)


def cluster(**over):
    raw = {
        "nodes": 2,
        "devices_per_node": 4,
        "device": {"memory": "16GiB", "compute": {"fp32": 1e12}, "efficiency": 1.0, "memory_bandwidth": 1e11},
        "intra": {"bandwidth": 1e10, "latency": 1e-6},
        "inter": {"bandwidth": 1e9, "latency": 1e-5},
        "collectives": {"allreduce": "ring", "overlap": False, "bucket": 1e12},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return parse_cluster(raw)


@pytest.fixture(scope="module")
def mlp():
    return profile_model("mlp", hidden=(256, 128))


def test_ring_and_tree_allreduce_by_hand():
    assert ring_allreduce(1e6, 4, LINK) == pytest.approx(2 * 3 * 1e-5 + 2 * 3 / 4 * 1e6 / 1e9)
    assert tree_allreduce(1e6, 4, LINK) == pytest.approx(2 * 2 * (1e-5 + 1e6 / 1e9))
    assert ring_allreduce(1e6, 1, LINK) == 0.0
    assert ring_allgather(1e6, 4, LINK) == pytest.approx(3 * 1e-5 + 3 / 4 * 1e6 / 1e9)


def test_hierarchical_allreduce_by_hand():
    c = cluster()
    n = 4e6
    inside = 2 * (3 * 1e-6 + 3 / 4 * n / 1e10)  # reduce-scatter + all-gather over 4 local devices
    across = 2 * 1 * 1e-5 + 2 * 1 / 2 * (n / 4) / (1e9 / 4)  # 2 nodes, card shared by 4 flows
    assert group_allreduce(n, 8, c) == pytest.approx(inside + across)
    assert group_allreduce(n, 4, c) == pytest.approx(ring_allreduce(n, 4, c.intra))


def test_buckets_and_overlap_by_hand():
    layers = [(100, 1.0), (100, 1.0), (200, 2.0)]  # (params, flops), forward order
    assert buckets(layers, 800) == [(800.0, 0.5), (800.0, 1.0)]
    cost = lambda nbytes: nbytes / 1000  # noqa: E731
    # backward 2 s: bucket 1 ready at 1 s, runs to 1.8; bucket 2 ready at 2 s, runs to 2.8 -> 0.8 exposed
    assert exposed_comm(buckets(layers, 800), 2.0, cost) == pytest.approx((0.8, 1.6))
    assert exposed_comm(buckets(layers, 800), 2.0, cost, overlap=False) == pytest.approx((1.6, 1.6))


def test_allreduce_step_by_hand(mlp):
    c = cluster()
    s = Setting(c, mlp, 64)
    row = allreduce_cost(s, 8)
    compute = mlp.flops_per_sample * 64 / 1e12
    assert row.compute == pytest.approx(compute)
    assert row.comm == pytest.approx(group_allreduce(4.0 * mlp.params, 8, c))
    assert row.samples == 64 * 8
    assert row.memory == mlp.memory(64).peak_bytes


def test_compression_and_localsgd(mlp):
    c = cluster()
    s = Setting(c, mlp, 64, localsgd_h=4)
    plain, half = allreduce_cost(s, 8), allreduce_cost(s, 8, codec="fp16")
    encode = 2 * 6 * mlp.params / 1e11  # encode + decode passes over the float32 gradient
    assert half.comm == pytest.approx(group_allreduce(2.0 * mlp.params, 8, c) + encode, rel=1e-3)
    assert half.comm < plain.comm
    local = localsgd_cost(s, 8)
    assert local.comm == pytest.approx(group_allreduce(4.0 * mlp.params, 8, c) / 4)


def test_paramserver_by_hand(mlp):
    c = cluster(paramserver={"servers": 2})
    s = Setting(c, mlp, 64)
    p = 4.0 * mlp.params
    comm, _ = server_traffic(s, 8)
    server = 1e-5 + 8 * p / 2 / 1e9
    worker = 1e-5 + 4 * p / 1e9  # four devices share a node's card
    # 8 pushes applied by each server (SGD + momentum: 5 passes over its half); the worker's 5 copies
    # of the model (flatten, mean, flatten parameters, clone, write the shard back): 10 passes
    assert mlp.slots == 1
    memory = 8 * 5 * (p / 2) / 1e11 + 10 * p / 1e11
    assert comm == pytest.approx(2 * max(server, worker) + memory)
    half, _ = server_traffic(s, 8, codec="fp16")
    assert half == pytest.approx(2 * max(1e-5 + 8 * p / 4 / 1e9, 1e-5 + 2 * p / 1e9) + memory)
    row = paramserver_cost(s, 8)
    assert row.staleness == 7  # asynchronous: the other 7 workers' pushes land first on average
    est = mlp.memory(64)
    assert row.memory == est.peak_bytes - est.optimizer_bytes


def test_paramserver_knee_moves_out():
    """Strong scaling: adding workers eventually slows training; shards, grouping and fp16 move the knee."""
    prof = profile_model("resnet50")
    c = cluster(nodes=32, devices_per_node=8, device={"efficiency": 0.3})
    s = Setting(c, prof, 4096, "strong")

    def knee(**kw):
        ns = [2**i for i in range(9)]
        return max(ns, key=lambda n: 4096 / paramserver_cost(s, n, **kw).step)

    base = knee(servers=1)
    assert base < 256
    assert knee(servers=8) > base
    assert knee(servers=1, aggregate="node") > base
    assert knee(servers=1, codec="fp16") >= base


def _equal_stages(mlp, k):
    prof = replace(
        mlp, flops_per_sample=k * 1e6, children=[ChildProfile(f"l{i}", 100, 1e6, 0.0) for i in range(k)]
    )
    prof.child_activation_bytes = lambda batch: [0.0] * k
    return prof


def test_pipeline_bubble_is_the_gpipe_fraction(mlp):
    k, m = 4, 12
    s = Setting(cluster(), _equal_stages(mlp, k), 48, microbatches=m)
    row = pipeline_cost(s, k)
    assert row.comm == 0.0
    assert row.bubble / row.step == pytest.approx((k - 1) / (m + k - 1))
    assert row.compute == pytest.approx(k * 1e6 * 48 / 1e12 / k)


def test_pipeline_imbalance_adds_to_the_bubble(mlp):
    prof = replace(
        mlp,
        flops_per_sample=4e6,
        children=[ChildProfile(f"l{i}", 1, f, 0.0) for i, f in enumerate([3e6, 1e6])],
    )
    prof.child_activation_bytes = lambda batch: [0.0, 0.0]
    s = Setting(cluster(), prof, 8, microbatches=4)
    row = pipeline_cost(s, 2)
    t = [3e6 * 2 / 1e12, 1e6 * 2 / 1e12]  # per micro-batch of 2 samples (FLOPs x samples / rate)
    assert row.bubble == pytest.approx(1 * max(t) + 4 * (max(t) - sum(t) / 2))
    assert row.step == pytest.approx((4 + 1) * max(t))


def test_tensor_by_hand(mlp):
    c = cluster()
    s = Setting(c, mlp, 32)
    row = tensor_cost(s, 4)
    # 784 -> 256 -> 128 -> 10: one pair (784->256 column, 256->128 row), the last layer unpaired.
    # Forward all-reduces the pair's 128 outputs; the first layer's input needs no gradient.
    assert mlp.tp_messages == [128 * 4.0]
    assert row.comm == pytest.approx(ring_allreduce(128 * 4.0 * 32, 4, c.intra))
    share = mlp.tp_split_share
    by_child = {ch.name: ch.flops for ch in mlp.children}
    paired = [ch.name for ch in mlp.children if ch.params][:2]
    assert share == pytest.approx(sum(by_child[n] for n in paired) / mlp.flops_per_sample)
    full = mlp.flops_per_sample * 32 / 1e12
    assert row.compute == pytest.approx(full * (share / 4 + 1 - share))


def test_tensor_on_a_measured_device_uses_the_shard_step(mlp, monkeypatch):
    """On a measured device a shard's compute is its own calibrated step (DTensor at the shard's
    shapes), not 1/T of the model's: the row's compute is exactly what the calibration returns."""
    import escala.plan.calibrate as calibrate
    import escala.plan.calibrate_tensor as calibrate_tensor

    base = cluster()
    measured = replace(base, device=replace(base.device, measured=True))
    calls = []

    def shard_step(profile, batch, shards, threads, busy=0):
        calls.append((batch, shards, busy))
        return 0.007

    monkeypatch.setattr(calibrate, "model_step_seconds", lambda *a, **k: 0.01)
    monkeypatch.setattr(calibrate_tensor, "tensor_shard_step_seconds", shard_step)
    monkeypatch.setattr(calibrate_tensor, "tensor_allreduce_factor", lambda *a, **k: 1.0)
    row = tensor_cost(Setting(measured, mlp, 32), 4)
    assert row.compute == pytest.approx(0.007) and calls == [(32, 4, 4)]
    two = tensor_cost(Setting(measured, mlp, 32), 2, replicas=2)  # tensor x data: 4 processes busy
    assert two.compute == pytest.approx(0.007) and calls[-1] == (32, 2, 4)


def test_tensor_backward_allreduce_after_the_first_pair():
    deep = profile_model("mlp", input_shape=(16,), num_classes=10, hidden=(32, 32, 32, 32))
    # pairs (16->32, 32->32), (32->32, 32->32): forward 32 + 32 outputs, backward the second pair's input
    assert deep.tp_messages == [128.0, 128.0, 128.0]


def test_tensor_after_matmul_factor_by_hand(mlp, monkeypatch):
    """On a measured device each activation all-reduce costs its calibrated after-matmul factor times
    the back-to-back all-reduce; the step grows with the factor; elsewhere the factor is 1."""
    import escala.plan.calibrate as calibrate
    import escala.plan.calibrate_tensor as calibrate_tensor

    base = cluster()
    measured = replace(base, device=replace(base.device, measured=True))
    monkeypatch.setattr(calibrate, "model_step_seconds", lambda *a, **k: 0.01 * k.get("fraction", 1.0))
    monkeypatch.setattr(calibrate_tensor, "tensor_shard_step_seconds", lambda *a, **k: 0.004)
    plain = tensor_cost(Setting(base, mlp, 32), 4).comm
    steps = []
    for f in (1.0, 1.5, 3.0):
        calls = []

        def factor(nbytes, batch, shards, threads, f=f, calls=calls):
            calls.append((nbytes, batch, shards))
            return f

        monkeypatch.setattr(calibrate_tensor, "tensor_allreduce_factor", factor)
        row = tensor_cost(Setting(measured, mlp, 32), 4)
        assert calls == [(128 * 4.0, 32, 4)]  # the message per sample, the replica batch, the shards
        assert row.comm == pytest.approx(f * plain)
        steps.append(row.step)
    assert steps == sorted(steps) and steps[0] < steps[-1]
    assert Setting(measured, mlp, 32).tensor_allreduce_factor(512.0, 32, 1) == 1.0  # one shard: none
    assert Setting(base, mlp, 32).tensor_allreduce_factor(512.0, 32, 4) == 1.0  # not measured


def test_paramserver_after_step_factor_by_hand(mlp, monkeypatch):
    """On a measured one-node machine push, server update and reply cost the calibrated after-step
    factor times their back-to-back time; the engine's copies do not; more factor, longer step."""
    import escala.plan.calibrate as calibrate
    import escala.plan.calibrate_comm as calibrate_comm

    base = cluster(nodes=1, devices_per_node=2)
    measured = replace(base, device=replace(base.device, measured=True))
    monkeypatch.setattr(calibrate, "model_step_seconds", lambda *a, **k: 0.01)
    monkeypatch.setattr(calibrate_comm, "transport_link", lambda link: link)
    monkeypatch.setattr(calibrate_comm, "copy_seconds", lambda nbytes, threads=1: 1e-4)
    comm = {}
    for f in (1.0, 2.0, 3.0):
        monkeypatch.setattr(calibrate_comm, "exchange_after_step_factor", lambda *a, f=f, **k: f)
        comm[f], _ = server_traffic(Setting(measured, mlp, 32), 1)
    pack = 5 * 1e-4  # PS_COPIES clones, not scaled
    exchange = comm[1.0] - pack
    assert exchange > 0
    assert comm[2.0] == pytest.approx(pack + 2 * exchange)
    assert comm[3.0] == pytest.approx(pack + 3 * exchange)
    rows = [paramserver_cost(Setting(measured, mlp, 32), 1)]
    assert rows[0].comm == pytest.approx(comm[3.0])  # the last factor patched in
    assert Setting(base, mlp, 32).exchange_factor(32) == 1.0  # not measured


def test_backup_chief_exchange_is_calibrated_with_the_chief_computing(mlp, monkeypatch):
    """The backup chief computes its own step while the other workers' pushes arrive: its exchange
    uses the factor calibrated with a busy chief, a parameter server's the one with an idle server."""
    import escala.plan.calibrate as calibrate
    import escala.plan.calibrate_comm as calibrate_comm
    from escala.plan.dataparallel import backup_cost

    base = cluster(nodes=1, devices_per_node=2)
    measured = replace(base, device=replace(base.device, measured=True))
    monkeypatch.setattr(calibrate, "model_step_seconds", lambda *a, **k: 0.01)
    monkeypatch.setattr(calibrate, "post_step_allreduce_factor", lambda *a, **k: 1.0)
    monkeypatch.setattr(calibrate_comm, "transport_link", lambda link: link)
    monkeypatch.setattr(calibrate_comm, "copy_seconds", lambda nbytes, threads=1: 1e-4)
    asked = []

    def factor(profile, batch, threads, chief_busy=False):
        asked.append(chief_busy)
        return 3.0 if chief_busy else 1.0

    monkeypatch.setattr(calibrate_comm, "exchange_after_step_factor", factor)
    s = Setting(measured, mlp, 32, backups=0)
    busy = backup_cost(s, 2).comm
    idle = paramserver_cost(s, 1).comm
    assert asked == [True, False]
    # Same one worker's exchange through rank 0; only the factor (and the copies each engine makes) differ.
    exchange = (idle - 5 * 1e-4) / 1.0
    assert busy == pytest.approx(3.0 * exchange + 6 * 1e-4)


def test_straggler_wait_and_backups():
    assert harmonic(3) == pytest.approx(1 + 1 / 2 + 1 / 3)
    c = cluster(stragglers={"mean_delay": 0.1})
    s = Setting(c, profile_model("mlp"), 8)
    assert s.straggler_wait(1.0, 4) == pytest.approx(0.1 * harmonic(4))
    assert s.straggler_wait(1.0, 4, keep=3) == pytest.approx(0.1 * (harmonic(4) - harmonic(1)))


def test_more_bandwidth_never_slower(mlp):
    base = cluster(collectives={"overlap": True, "bucket": 4096})
    for factor in (2.0, 10.0):
        fast = base.with_bandwidth(factor)
        for strategy in STRATEGIES:
            for n in (1, 2, 4, 8):
                slow_row, _ = predict(Setting(base, mlp, 32), strategy, n)
                fast_row, _ = predict(Setting(fast, mlp, 32), strategy, n)
                if slow_row is not None:
                    assert fast_row.step <= slow_row.step * (1 + 1e-12), (strategy, n, factor)


def test_more_devices_never_more_memory_when_sharded(mlp):
    prof = profile_model("lenet5")
    s = Setting(cluster(), prof, 64, "strong")
    for rows in (
        [tensor_cost(s, t) for t in (1, 2, 4, 8)],
        [allreduce_cost(s, n) for n in (1, 2, 4, 8)],
    ):
        mems = [r.memory for r in rows]
        assert all(b <= a for a, b in zip(mems, mems[1:])), mems
    # Pipeline over 12 equal layers, M fixed: 1F1B's first stage keeps K micro-batches of 1/K of the
    # activations (constant) while its share of the model state shrinks.
    n = 12
    equal = replace(
        mlp, flops_per_sample=n * 1e6, children=[ChildProfile(f"l{i}", 1000, 1e6, 0.0) for i in range(n)]
    )
    equal.child_activation_bytes = lambda batch: [100.0 * batch] * n
    s = Setting(cluster(), equal, 48, microbatches=12)
    mems = [pipeline_cost(s, k).memory for k in (1, 2, 3, 4, 6, 12)]
    assert all(b <= a for a, b in zip(mems, mems[1:])), mems


def test_plan_recommends_the_fastest_that_fits(mlp):
    s = Setting(cluster(), mlp, 32)
    plan = make_plan(s, 8)
    rec = plan.recommended
    assert rec.fits and rec.throughput == max(r.throughput for r in plan.rows if r.fits)
    base = plan.baseline
    assert base.efficiency == pytest.approx(1.0) or math.isnan(base.efficiency) or base.devices == 1


def test_one_node_paramserver_uses_point_to_point_messages(mlp):
    """One node: header + payload each way over the link's p2p figures, updates and packing by hand."""
    c = cluster(nodes=1, intra={"p2p_bandwidth": 4e9, "p2p_latency": 2e-5}, inter={})
    assert Link(1e9, 1e-5).message(1e9) == pytest.approx(1e-5 + 1.0)  # default: the collective's figures
    s = Setting(c, mlp, 64)
    p = 4.0 * mlp.params
    comm, _ = server_traffic(s, 1)
    one_way = (2e-5 + 64 / 4e9) + (2e-5 + p / 4e9)
    assert comm == pytest.approx(2 * one_way + 5 * p / 1e11 + 10 * p / 1e11)
    chief, _ = server_traffic(s, 1, copies=6)  # backup workers: 6 copies through the chief
    assert chief == pytest.approx(comm + 2 * p / 1e11)


def test_fixed_step_overhead_is_added(mlp):
    base, _ = predict(Setting(cluster(), mlp, 32), "allreduce", 4)
    slow, _ = predict(Setting(cluster(device={"step_overhead": "2ms"}), mlp, 32), "allreduce", 4)
    assert slow.overhead == pytest.approx(2e-3) and slow.step == pytest.approx(base.step + 2e-3)
    with pytest.raises(UserError, match="step_overhead"):
        cluster(device={"step_overhead": "measure"})  # only a measured device can time an empty step


def test_measured_allreduce_points_interpolate_for_two_processes():
    pts = ((4.0, 1e-4), (1e6, 2.5e-3), (4e6, 4e-3))
    link = Link(1e9, 1e-3, allreduce_points=pts)
    assert ring_allreduce(4.0, 2, link) == pytest.approx(1e-4)
    assert ring_allreduce(2.5e6, 2, link) == pytest.approx(2.5e-3 + 1.5e-3 * 1.5e6 / 3e6)
    sizes = [4.0, 1e3, 1e5, 1e6, 2e6, 4e6]
    times = [ring_allreduce(n, 2, link) for n in sizes]
    assert times == sorted(times)  # more bytes never predict faster
    assert ring_allreduce(8e6, 2, link) == pytest.approx(2 * 1e-3 + 8e6 / 1e9)  # past the points: the line
    assert ring_allreduce(1e6, 4, link) == pytest.approx(ring_allreduce(1e6, 4, Link(1e9, 1e-3)))
    assert link.scaled(2.0).allreduce_points is None
