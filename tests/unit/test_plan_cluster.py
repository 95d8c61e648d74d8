"""Cluster files: units, validation errors that name the field, shipped examples, calibration fit."""

from pathlib import Path

import pytest

from escala.errors import UserError
from escala.plan.calibrate import fit_alpha_beta, gloo_allreduce
from escala.plan.cluster import load_cluster, parse_cluster
from escala.plan.units import parse_bandwidth, parse_bytes, parse_flops, parse_seconds

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"


def raw(**over):
    base = {
        "nodes": 2,
        "devices_per_node": 4,
        "device": {"memory": "16GiB", "compute": {"fp32": "10TFLOPS"}, "efficiency": 0.5},
        "intra": {"bandwidth": "100GB/s", "latency": "5us"},
        "inter": {"bandwidth": "10Gbit/s", "latency": "30us"},
    }
    base.update(over)
    return base


def test_units():
    assert parse_bandwidth("10Gbit/s", "f") == 1.25e9
    assert parse_bandwidth("25GB/s", "f") == 25e9
    assert parse_bandwidth("1GiB/s", "f") == 2**30
    assert parse_bytes("16GiB", "f") == 16 * 2**30
    assert parse_bytes("2GB", "f") == 2e9
    assert parse_seconds("5us", "f") == pytest.approx(5e-6)
    assert parse_seconds("0.2ms", "f") == pytest.approx(2e-4)
    assert parse_flops("15.7TFLOPS", "f") == pytest.approx(15.7e12)
    with pytest.raises(UserError, match="inter.bandwidth"):
        parse_bandwidth("fast", "inter.bandwidth")


def test_parse_cluster_values():
    c = parse_cluster(raw())
    assert c.max_devices == 8
    assert c.device.flops("fp32") == pytest.approx(5e12)
    assert c.inter.bandwidth == 1.25e9 and c.inter.latency == pytest.approx(3e-5)
    assert c.ps_placement == "dedicated" and c.ps_servers == 1


@pytest.mark.parametrize(
    "over, field",
    [
        ({"nodes": 0}, "nodes"),
        ({"devices_per_node": "eight"}, "devices_per_node"),
        ({"device": {"memory": "16GiB"}}, "device.compute"),
        ({"device": {"compute": {"fp32": 1e12}}}, "device.memory"),
        ({"device": {"memory": "1GiB", "compute": {"fp64": 1e12}}}, "device.compute.fp64"),
        ({"device": {"memory": "1GiB", "compute": {"fp32": 1e12}, "efficiency": 1.5}}, "device.efficiency"),
        ({"intra": {"bandwidth": "1GB/s"}}, "intra.latency"),
        ({"inter": {"bandwidth": "-", "latency": 0}}, "inter.bandwidth"),
        ({"paramserver": {"placement": "cloud"}}, "paramserver.placement"),
        ({"collectives": {"allreduce": "butterfly"}}, "collectives.allreduce"),
        ({"stragglers": {"mean_delay": -1}}, "stragglers.mean_delay"),
        ({"gpus": 3}, "gpus"),
    ],
)
def test_errors_name_the_field(over, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        parse_cluster(raw(**over))


def test_missing_precision_is_named():
    c = parse_cluster(raw())
    with pytest.raises(UserError, match="fp16"):
        c.device.flops("fp16")


def test_examples_load():
    for name in ("v100-10gbe.toml", "goyal2017-bigbasin.toml"):
        c = load_cluster(EXAMPLES / name, measure=lambda t: pytest.fail("no calibration expected"))
        assert c.max_devices >= 32
    fake = {
        "matmul_flops": 1e10,
        "memory_bandwidth": 1e10,
        "allreduce_latency": 1e-4,
        "allreduce_bandwidth": 1e9,
        "p2p_latency": 5e-5,
        "p2p_bandwidth": 4e9,
    }
    c = load_cluster(EXAMPLES / "this-machine.toml", measure=lambda t: fake)
    assert c.device.measured and c.intra.bandwidth == 1e9 and c.intra.latency == 1e-4
    assert c.intra.message(4e9) == pytest.approx(5e-5 + 1.0) and c.device.overhead_measured


def test_bad_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_cluster(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("nodes = [")
    with pytest.raises(UserError, match="not valid TOML"):
        load_cluster(bad)


def test_fit_alpha_beta_recovers_the_line():
    a, bw = 50e-6, 2e9
    sizes = [4e3, 4e5, 4e6, 1.6e7]
    times = [2 * a + n / bw for n in sizes]  # 2-process ring: 2a + n b
    got_a, got_bw = fit_alpha_beta(sizes, times)
    assert got_a == pytest.approx(a, rel=1e-6) and got_bw == pytest.approx(bw, rel=1e-6)


def test_gloo_calibration_two_processes():
    out = gloo_allreduce(sizes=(2**8, 2**16), repeats=3, timeout_s=60)
    assert out["allreduce_bandwidth"] > 0 and out["allreduce_latency"] >= 0
    assert len(out["allreduce_points"]) == 2
    assert out["p2p_bandwidth"] > 0 and out["p2p_latency"] >= 0 and len(out["p2p_points"]) == 2


def test_lockstep_compute_and_empty_step_run():
    """Two processes time the model in lockstep (a barrier each step), and an empty model trains
    through escala train: both finish and give a positive time (no timing is asserted)."""
    from escala.plan.calibrate import _CACHE, model_step_seconds, post_step_allreduce_factor
    from escala.plan.profile import profile_model
    from escala.plan.validate import empty_step_seconds

    tiny = profile_model("mlp", input_shape=(1, 4, 4), num_classes=3, hidden=(8,))
    _CACHE.clear()
    assert 0 < model_step_seconds(tiny, 4, busy=2) < 1
    assert post_step_allreduce_factor(tiny, 4, busy=2) >= 0  # measured in the same lockstep run
    assert post_step_allreduce_factor(tiny, 4, busy=1) == 1.0
    assert 0 < empty_step_seconds("allreduce", 1, 8, steps=20) < 1
    assert 0 < empty_step_seconds("allreduce", 1, 8, steps=20, hidden=(2, 2)) < 1
    # a recurrent pipeline's empty model: an lstm of 2-unit layers over 4 time steps, in 2 processes
    assert 0 < empty_step_seconds("pipeline", 2, 8, steps=5, hidden=(2, 2), time_steps=4) < 5


def test_shard_model_has_the_shard_shapes():
    """The model a tensor-parallel shard computes: column layers keep out/T outputs, row layers in/T
    inputs, unpaired layers whole; sharding it over a 1-process mesh keeps those local shapes."""
    from escala.plan.calibrate_tensor import shard_model

    model = shard_model("mlp", (12,), 4, (16, 8, 8), shards=2)
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_children() if hasattr(m, "weight")}
    # 12 -> 16 -> 8 -> 8 -> 4: pairs (fc1, fc2), (fc3, fc4); nothing unpaired.
    assert list(shapes.values()) == [(8, 12), (8, 8), (4, 8), (4, 4)]
    odd = shard_model("mlp", (12,), 4, (16, 8), shards=4)  # (fc1, fc2) paired, fc3 whole
    assert [tuple(m.weight.shape) for m in odd if hasattr(m, "weight")] == [(4, 12), (8, 4), (4, 8)]


def test_transport_and_busy_codec_calibrations_run():
    """escala's transport round trips between two processes, a codec timed in two processes at once,
    the tensor-parallel all-reduce after a matmul and the parameter-server exchange after a step finish
    and give times (no timing is asserted); a link's message is half the round trip."""
    from escala.plan.calibrate import _CACHE
    from escala.plan.calibrate_comm import (
        TRANSPORT_SIZES,
        codec_seconds_busy,
        copy_seconds,
        exchange_after_step_factor,
        transport_link,
        transport_round_trip,
    )
    from escala.plan.calibrate_tensor import tensor_allreduce_factor, tensor_shard_step_seconds
    from escala.plan.cluster import Link
    from escala.plan.profile import profile_model

    assert tensor_allreduce_factor(4 * 64, 16, shards=2, count=10) >= 0  # matmul then all-reduce
    assert tensor_allreduce_factor(4 * 64, 16, shards=1) == 1.0
    tiny = profile_model("mlp", input_shape=(1, 4, 4), num_classes=3, hidden=(8,))
    # A shard's DTensor step on a one-process mesh, 2 processes in lockstep (barrier subtracted: may hit 0).
    assert 0 <= tensor_shard_step_seconds(tiny, 4, shards=2, seconds=0.1) < 1
    assert exchange_after_step_factor(tiny, 4, count=3, rounds=1) >= 0  # step, then push/update/reply
    assert exchange_after_step_factor(tiny, 4, count=3, rounds=1, chief_busy=True) >= 0  # chief steps too
    rt = transport_round_trip(sizes=(2**8, 2**16), repeats=3, timeout_s=60)
    assert rt["seconds_per_byte"] > 0 and rt["latency"] >= 0 and len(rt["points"]) == 2
    enc, dec = codec_seconds_busy("qsgd", 2**14, busy=2)  # the barrier's cost is subtracted: may hit 0
    assert enc >= 0 and dec >= 0 and enc + dec < 10
    assert copy_seconds(2**16) > 0
    _CACHE[("transport", TRANSPORT_SIZES, 20)] = {"latency": 2e-4, "seconds_per_byte": 1e-9}
    try:
        link = transport_link(Link(1e9, 1e-5))
        assert link.message(1e6) == pytest.approx(1e-4 + 0.5e-3)  # half a round trip
    finally:
        _CACHE.clear()
