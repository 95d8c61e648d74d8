"""``escala bench plan``: the planner's predictions against measurements here and published results.

1. **This machine.** The cluster ``examples/clusters/this-machine.toml`` is calibrated (the model's
   step timed alone and with both cores busy, gloo all-reduce and ping-pong between two processes,
   communication as training issues it (:mod:`escala.plan.calibrate_comm`), a tensor-parallel shard's
   step and all-reduces as escala's DTensor engine runs them (:mod:`escala.plan.calibrate_tensor`),
   memory bandwidth, codec speed, and an empty model's step under each strategy), the planner predicts,
   then ``escala train`` runs the same setting: allreduce on 1 and 2 workers, with fp16, QSGD and top-k
   compression, localsgd, backup workers, a parameter server, a 2-stage 1F1B pipeline and 2-way tensor
   parallelism, one thread per process. The measured step time (from samples/s) is divided by the
   predicted one. Calibration, prediction and measurement alternate and the median ratio of the
   repeats is reported. Aim: within 20%.
2. **Goyal et al. 2017** (ResNet-50, 32 images per GPU, Big Basin servers of 8 P100 over NVLink, 50 Gbit
   Ethernet): predicted scaling efficiency from 8 to 256 GPUs against the published ~90%, with the
   all-reduce overlapped with backward (bucketed, as DDP does) and not overlapped (the two bounds).
3. **Parameter servers, strong scaling** (ResNet-50, a fixed global batch, 8 V100 per node, 10 GbE, up
   to 256 workers): the worker count of highest throughput (the knee) for one server, sharded servers,
   workers grouped per node, and 16-bit transfers.

Prediction-only parts take seconds; quick mode trains fewer samples.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from escala.bench.report import machine_line, markdown_table, update_section
from escala.plan.cluster import load_cluster
from escala.plan.paramserver import paramserver_cost
from escala.plan.planner import predict
from escala.plan.profile import profile_model
from escala.plan.step import Setting

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"
SPEC = {
    "samples": 8192,
    "shape": (1, 28, 28),
    "hidden": (512, 256),
    "batch": 64,
    "pipe_steps": 32,
    "repeats": 3,
    "h": 4,
}
QUICK = {**SPEC, "samples": 4096, "pipe_steps": 16, "repeats": 1}
PUBLISHED_GOYAL = 0.90


CASES = (  # (planner strategy, devices, which workload)
    ("allreduce", 1, "mlp"),
    ("allreduce", 2, "mlp"),
    ("allreduce+fp16", 2, "mlp"),
    ("allreduce+qsgd", 2, "mlp"),
    ("allreduce+topk", 2, "mlp"),
    ("localsgd", 2, "mlp"),
    ("backup", 2, "mlp"),
    ("paramserver", 1, "mlp"),
    ("pipeline", 2, "pipe"),
    ("tensor", 2, "pipe"),
    ("allreduce", 1, "lstm"),
    ("pipeline", 2, "lstm"),
)
PIPE = {"shape": (256,), "hidden": (1024,) * 4, "batch": 256, "micro": 4}
# A stacked LSTM reading 28 x 28 images row by row; its pipeline runs over the 28 time steps.
LSTM = {"model": "lstm", "shape": (1, 28, 28), "hidden": (256, 256), "batch": 56}


def _workload(kind: str, spec: dict) -> dict:
    if kind == "pipe":
        return {**PIPE, "samples": PIPE["batch"] * spec["pipe_steps"]}
    if kind == "lstm":
        return {**LSTM, "samples": LSTM["batch"] * spec["pipe_steps"]}
    return {
        "shape": spec["shape"],
        "hidden": spec["hidden"],
        "batch": spec["batch"],
        "samples": spec["samples"],
    }


def validate_here(spec: dict) -> tuple[list[list], str]:
    """Predicted and measured step times, alternating; calibration is redone before every repeat.

    The prediction of a row uses the calibration only: the model's own step timed alone and with both
    cores busy, gloo all-reduce and ping-pong, memory bandwidth, codec speed and the step of an *empty*
    model under the row's strategy (:func:`escala.plan.planner.measured_overhead`); never a training
    run of the model it predicts.
    """
    from escala.plan import calibrate
    from escala.plan.validate import measured_step, train_fields

    workloads = {kind: _workload(kind, spec) for kind in ("mlp", "pipe", "lstm")}
    profiles = {
        kind: profile_model(w.get("model", "mlp"), input_shape=w["shape"], num_classes=10, hidden=w["hidden"])
        for kind, w in workloads.items()
    }
    runs: dict[int, list[tuple]] = {i: [] for i in range(len(CASES))}
    cluster = None
    for _ in range(spec["repeats"]):
        calibrate._CACHE.clear()
        cluster = load_cluster(EXAMPLES / "this-machine.toml")
        for i, (strategy, devices, kind) in enumerate(CASES):
            w = _workload(kind, spec)
            setting = Setting(
                cluster,
                profiles[kind],
                w["batch"],
                localsgd_h=spec["h"],
                microbatches=PIPE["micro"],
                backups=0,
            )
            row, why = predict(setting, strategy, devices)
            if row is None:
                raise RuntimeError(f"bench plan: {strategy} on {devices}: {why}")
            recurrent = w.get("model") == "lstm"  # pipelined over time steps
            fields = train_fields(
                strategy, devices, h=spec["h"], microbatches=PIPE["micro"], recurrent=recurrent
            )
            measured = measured_step(
                fields,
                shape=w["shape"],
                hidden=w["hidden"],
                batch=w["batch"],
                samples=w["samples"] * fields["workers"],
                model=w.get("model", "mlp"),
            )
            runs[i].append((row, measured))
    rows = []
    for i, (_, devices, _) in enumerate(CASES):
        ratios = [m / r.step for r, m in runs[i]]
        mid = sorted(range(len(ratios)), key=lambda j: ratios[j])[len(ratios) // 2]
        row, measured = runs[i][mid]
        processes = devices + 1 if row.strategy == "paramserver" else devices
        rows.append(
            [
                row.strategy + (" (lstm)" if CASES[i][2] == "lstm" else ""),
                processes,
                row.compute * 1e3,
                (row.comm + row.wait) * 1e3,
                row.bubble * 1e3,
                row.overhead * 1e3,
                row.step * 1e3,
                measured * 1e3,
                ratios[mid],
                "yes" if 0.8 <= ratios[mid] <= 1.2 else "no",
            ]
        )
    cal = cluster.calibration
    note = (
        f"last calibration: matmul {cal['matmul_flops'] / 1e9:.1f} GFLOP/s per thread, gloo all-reduce latency "
        f"{cal['allreduce_latency'] * 1e6:.0f} us, bandwidth {cal['allreduce_bandwidth'] / 1e9:.2f} GB/s, "
        f"ping-pong latency {cal['p2p_latency'] * 1e6:.0f} us, bandwidth {cal['p2p_bandwidth'] / 1e9:.2f} GB/s"
    )
    return rows, note


def goyal() -> tuple[list[list], dict]:
    cluster = load_cluster(EXAMPLES / "goyal2017-bigbasin.toml", measure=None)
    profile = profile_model("resnet50")
    curves = {}
    rows = []
    for overlap in (True, False):
        s = Setting(replace(cluster, overlap=overlap), profile, 32)
        steps = {n: predict(s, "allreduce", n)[0] for n in (8, 16, 32, 64, 128, 256)}
        base = steps[8].throughput / 8
        curves[overlap] = {n: r.throughput / (n * base) for n, r in steps.items()}
        rows.append(
            [
                "overlapped" if overlap else "not overlapped",
                steps[8].step * 1e3,
                steps[256].step * 1e3,
                steps[256].comm_total * 1e3,
                curves[overlap][256],
                PUBLISHED_GOYAL,
            ]
        )
    return rows, curves


PS_VARIANTS = (
    ("1 server, every GPU pushes", {"servers": 1}),
    ("4 sharded servers", {"servers": 4}),
    ("16 sharded servers", {"servers": 16}),
    ("1 server, GPUs grouped per node", {"servers": 1, "aggregate": "node"}),
    ("1 server, 16-bit transfers", {"servers": 1, "codec": "fp16"}),
    ("4 servers, grouped, 16-bit", {"servers": 4, "aggregate": "node", "codec": "fp16"}),
)


def paramserver_knees(global_batch: int = 4096) -> tuple[list[list], dict]:
    cluster = replace(load_cluster(EXAMPLES / "v100-10gbe.toml", measure=None), nodes=32)
    profile = profile_model("resnet50")
    s = Setting(cluster, profile, global_batch, "strong")
    ns = [2**i for i in range(9)]
    rows, curves = [], {}
    for label, kw in PS_VARIANTS:
        thr = {n: paramserver_cost(s, n, **kw).throughput for n in ns}
        curves[label] = thr
        knee = max(ns, key=lambda n: thr[n])
        rows.append([label, knee, thr[knee], thr[256], thr[256] / thr[knee]])
    return rows, curves


def plot(goyal_curves: dict, ps_curves: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for overlap, curve in goyal_curves.items():
        a.plot(
            list(curve),
            list(curve.values()),
            marker="o",
            label="predicted, " + ("overlapped" if overlap else "not overlapped"),
        )
    a.scatter([256], [PUBLISHED_GOYAL], color="k", marker="*", s=120, zorder=5, label="Goyal et al. 2017")
    a.set_xscale("log", base=2)
    a.set_ylim(0.6, 1.05)
    a.set_xlabel("GPUs")
    a.set_ylabel("scaling efficiency vs 8 GPUs")
    a.set_title("ResNet-50, 32/GPU, P100 + 50 Gbit Ethernet", fontsize=9)
    a.legend(fontsize=7)
    a.grid(alpha=0.3)
    for label, curve in ps_curves.items():
        b.plot(list(curve), list(curve.values()), marker="o", ms=3, label=label)
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("workers (GPUs)")
    b.set_ylabel("predicted images / s")
    b.set_title("Parameter servers, ResNet-50, global batch 4096, 10 GbE", fontsize=9)
    b.legend(fontsize=7)
    b.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(quick: bool = False, docs: str | None = None) -> None:
    spec = QUICK if quick else SPEC
    here, note = validate_here(spec)
    g_rows, g_curves = goyal()
    ps_rows, ps_curves = paramserver_knees()
    picture = ""
    if docs and plot(g_curves, ps_curves, Path(docs).parent / "plan.png"):
        picture = "\n\n![planner reproductions](plan.png)"
    body = (
        "## plan: predicted against measured and published\n\n"
        f"`escala bench plan{' --quick' if quick else ''}`. {machine_line()} Timings here are noisy: other jobs "
        "share this 2-core machine.\n\n"
        f"**This machine** (data parallel: MLP {spec['hidden']} on 1x28x28, batch {spec['batch']} per worker; "
        f"pipeline and tensor: MLP {PIPE['shape'][0]} -> {len(PIPE['hidden'])}x{PIPE['hidden'][0]} -> 10, batch "
        f"{PIPE['batch']}, pipeline M={PIPE['micro']} 1F1B; (lstm): {len(LSTM['hidden'])}x{LSTM['hidden'][0]} LSTM over "
        f"28x28 rows, batch {LSTM['batch']}, its pipeline over the 28 time steps; localsgd H={spec['h']}; backup with 0 backups (2 "
        "workers through the chief); paramserver 1 worker + 1 server process; every row is `escala train`, one "
        f"thread per process; the median ratio of {spec['repeats']} alternating calibrate/predict/measure "
        f"round(s); {note}). The prediction uses only the calibration: the model's step timed alone and with "
        "both cores busy in lockstep (a barrier each step), gloo all-reduce (interpolated on the measured "
        "sizes) and ping-pong, an all-reduce of the gradient's bytes issued right after each step, codecs "
        "timed with both processes coding at once, round trips through escala's transport, the same "
        "exchange (push, a server's SGD update of a model-sized vector, reply) right after the model's step "
        "(for backup, with the chief computing its own step meanwhile), a tensor-parallel shard's own step "
        "(DTensor at the shard's shapes on a one-process mesh, in lockstep), a DTensor Linear pair split "
        "over 2 processes against its one-shard twin (the activation all-reduce as the engine issues it), cloning a "
        "model-sized tensor, memory bandwidth, and the step of an *empty* model (2 units per hidden layer, "
        "as many layers as the model, 1x1x1 inputs) under the same strategy (the `overhead` column: "
        "measured empty step minus its prediction):\n\n"
        + markdown_table(
            [
                "strategy",
                "processes",
                "predicted compute ms",
                "predicted comm+wait ms",
                "predicted bubble ms",
                "overhead ms",
                "predicted step ms",
                "measured step ms",
                "measured / predicted",
                "within 20%",
            ],
            here,
        )
        + "\n\nAim: measured / predicted within 0.8-1.2.\n\n"
        "**Goyal et al. 2017** (ResNet-50, 32 images per GPU; `examples/clusters/goyal2017-bigbasin.toml`):\n\n"
        + markdown_table(
            [
                "all-reduce",
                "step ms, 8 GPUs",
                "step ms, 256 GPUs",
                "all-reduce ms at 256 (before overlap)",
                "efficiency 8 -> 256",
                "published",
            ],
            g_rows,
        )
        + "\n\nThe published ~90% lies between the two bounds: perfect bucket overlap with backward predicts "
        "more, none predicts less. The device efficiency (0.32 of peak) was set from the paper's 8-GPU "
        "time, so the 8-GPU step is an input, not a prediction; the scaling is the prediction.\n\n"
        "**Parameter servers, strong scaling** (ResNet-50, global batch 4096, 8 V100 per node, 10 GbE, "
        "dedicated servers with one 10 GbE card each):\n\n"
        + markdown_table(
            ["servers", "knee (workers)", "images/s at knee", "images/s at 256", "256 / knee"], ps_rows
        )
        + "\n\nPast the knee adding GPUs slows training; sharding the servers, grouping GPUs per node (fewer, "
        "bigger senders) and 16-bit transfers each move the knee out, as the parameter-server claim says."
        + picture
    )
    print(body)
    update_section(docs, "plan", body)
