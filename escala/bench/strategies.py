"""``escala bench strategies``: every data-parallel strategy and gradient codec in one run.

All runs train the same MLP on scikit-learn's digits with the same per-worker batch, learning rate and
number of epochs, on 2 worker processes (3 for the straggler table), and report:

* samples/s over training steps (evaluation excluded), from the run's summary;
* bytes each worker sends per step, and the ratio of fp32 all-reduce bytes to the strategy's bytes;
* staleness (parameter-server updates) or dropped gradients (backup workers);
* validation accuracy after the fixed epochs, and the wall time at which it first reached the target.

The peer for Hogwild is a plain loop in the style of PyTorch's own MNIST Hogwild example
(``model.share_memory()``, one ``mp.Process`` per worker, its own SGD optimizer each), given the same
data shard per process and epochs, in the same run. The straggler table adds ``--straggler-delay`` to
one of 3 workers and compares ``allreduce`` (which waits for it) with ``backup`` (b=1, which drops it).
A PNG of accuracy against wall time per strategy is written next to the docs when matplotlib is there.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from escala.bench.report import machine_line, markdown_table, update_section
from escala.data import load_digits
from escala.metrics import read_jsonl
from escala.models import build_model
from escala.runtime.dist import set_threads

SPEC = {"epochs": 8, "target": 0.9, "delay": 0.02}
QUICK = {"epochs": 3, "target": 0.85, "delay": 0.02}
BASE = {
    "dataset": "digits",
    "model": "mlp",
    "hidden": (64,),
    "batch_size": 16,
    "lr": 0.05,
    "momentum": 0.9,
    "progress": "none",
    "tensorboard": False,
    "seed": 0,
}

RUNS = [
    ("allreduce", {"strategy": "allreduce"}),
    ("allreduce + fp16", {"strategy": "allreduce", "compress": "fp16"}),
    ("allreduce + bf16", {"strategy": "allreduce", "compress": "bf16"}),
    ("allreduce + qsgd 4 bit", {"strategy": "allreduce", "compress": "qsgd", "qsgd_bits": 4}),
    ("allreduce + topk 1%", {"strategy": "allreduce", "compress": "topk", "topk_ratio": 0.01}),
    (
        "allreduce + topk 1%, no momentum correction",
        {"strategy": "allreduce", "compress": "topk", "topk_ratio": 0.01, "topk_momentum_correction": False},
    ),
    ("localsgd H=4", {"strategy": "localsgd", "average_every": 4}),
    ("backup b=0", {"strategy": "backup"}),
    ("paramserver S=1", {"strategy": "paramserver", "servers": 1}),
    ("paramserver S=2 + qsgd", {"strategy": "paramserver", "servers": 2, "compress": "qsgd"}),
    ("paramserver S=1 SSP s=1", {"strategy": "paramserver", "servers": 1, "staleness_bound": 1}),
    ("hogwild", {"strategy": "hogwild"}),
]


def _escala(label: str, overrides: dict, epochs: int, target: float) -> dict:
    from escala import train

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        summary = train(**{**BASE, "epochs": epochs, "workers": 2, **overrides, "out": out})
        total = time.perf_counter() - started
        curve = [(r["wall_s"], r["val_acc"]) for r in read_jsonl(Path(out) / "metrics.jsonl")]
    reached = next((t for t, acc in curve if acc >= target), float("nan"))
    return {"label": label, "summary": summary, "curve": curve, "to_target": reached, "total_s": total}


# -- the peer: PyTorch's MNIST Hogwild example, on the same data ---------------------------------
def _peer_worker(rank: int, world: int, model, epochs: int, results) -> None:
    set_threads(0, world)
    data = load_digits(seed=0)
    x, y = data.train.x, data.train.y
    torch.manual_seed(1 + rank)
    opt = torch.optim.SGD(model.parameters(), lr=BASE["lr"], momentum=BASE["momentum"])
    seen, busy = 0, 0.0
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))[rank::world]
        t0 = time.perf_counter()
        for start in range(0, len(perm), BASE["batch_size"]):
            idx = perm[start : start + BASE["batch_size"]]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            seen += len(idx)
        busy += time.perf_counter() - t0
    results.put((seen, busy))


def _peer_hogwild(epochs: int) -> dict:
    data = load_digits(seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=BASE["hidden"])
    model.share_memory()
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    started = time.perf_counter()
    procs = [ctx.Process(target=_peer_worker, args=(r, 2, model, epochs, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    total = time.perf_counter() - started
    parts = [results.get() for _ in procs]
    with torch.no_grad():
        acc = float((model(data.val.x).argmax(1) == data.val.y).float().mean())
    samples_per_s = sum(s for s, _ in parts) / max(b for _, b in parts)
    return {"samples_per_s": samples_per_s, "val_acc": acc, "total_s": total}


# -- tables ----------------------------------------------------------------------------------------
def _strategy_rows(results: list[dict], fp32_bytes: float) -> list[list]:
    rows = []
    for r in results:
        s = r["summary"]
        sent = s.get("push_bytes_per_worker_step", s.get("bytes_sent_per_worker_step", 0.0))
        stale = f"{s['staleness_mean']:.2f} / {s['staleness_max']}" if "staleness_mean" in s else "-"
        rows.append(
            [
                r["label"],
                s["samples_per_s"],
                sent,
                fp32_bytes / sent if sent else float("nan"),
                stale,
                s["val_acc"],
                r["to_target"],
            ]
        )
    return rows


def _plot(results: list[dict], docs: str | None) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    if not docs:
        return ""
    path = Path(docs).parent / "strategies.png"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if r["curve"]:
            t, acc = zip(*r["curve"])
            ax.plot(t, acc, marker=".", label=r["label"])
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("digits, 2 workers")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"\n\n![accuracy against wall time per strategy]({path.name})"


def main(quick: bool = False, docs: str | None = None) -> None:
    spec = QUICK if quick else SPEC
    epochs, target = spec["epochs"], spec["target"]
    results = [_escala(label, o, epochs, target) for label, o in RUNS]
    peer = _peer_hogwild(epochs)
    fp32_bytes = results[0]["summary"]["bytes_sent_per_worker_step"]
    rows = _strategy_rows(results, fp32_bytes)
    hog = next(r for r in results if r["label"] == "hogwild")["summary"]
    rows.append(
        [
            "PyTorch Hogwild example (peer)",
            peer["samples_per_s"],
            0.0,
            float("nan"),
            "-",
            peer["val_acc"],
            float("nan"),
        ]
    )
    table = markdown_table(
        [
            "strategy",
            "samples/s",
            "bytes sent / worker / step",
            "fp32 bytes / these",
            "staleness mean / max",
            f"val acc after {epochs} ep",
            f"s to {target:.0%}",
        ],
        rows,
    )
    hog_ratio = markdown_table(
        ["", "escala hogwild", "PyTorch Hogwild example", "escala / peer"],
        [
            [
                "samples/s",
                hog["samples_per_s"],
                peer["samples_per_s"],
                hog["samples_per_s"] / peer["samples_per_s"],
            ],
            ["val acc", hog["val_acc"], peer["val_acc"], hog["val_acc"] - peer["val_acc"]],
        ],
    )

    # Stragglers: 3 workers, the last one sleeps `delay` s per step.
    strag = []
    for label, o in [
        ("allreduce", {"strategy": "allreduce"}),
        ("backup b=1", {"strategy": "backup", "backups": 1}),
    ]:
        free = _escala(label, {**o, "workers": 3}, epochs, target)["summary"]
        slow = _escala(label, {**o, "workers": 3, "straggler_delay": spec["delay"]}, epochs, target)[
            "summary"
        ]
        strag.append(
            [
                label,
                free["samples_per_s"],
                slow["samples_per_s"],
                slow["samples_per_s"] / free["samples_per_s"],
                slow.get("dropped_per_step", 0.0),
                slow["val_acc"],
            ]
        )
    strag_table = markdown_table(
        [
            "3 workers",
            "samples/s, no straggler",
            f"samples/s, rank 2 +{spec['delay'] * 1000:.0f} ms/step",
            "kept",
            "dropped / step",
            "val acc (straggler)",
        ],
        strag,
    )
    body = (
        "## strategies: data parallelism beyond all-reduce\n\n"
        f"`escala bench strategies{' --quick' if quick else ''}`: MLP (64,) on digits, batch 16 per worker, "
        f"SGD lr 0.05 momentum 0.9, {epochs} epochs, 2 worker processes (parameter servers are extra "
        f"processes). {machine_line()}\n\n"
        "Bytes are per worker per step (gradient pushes for backup and paramserver; parameters sent back are "
        "not included); 'fp32 bytes / these' divides the plain fp32 all-reduce's bytes by them. Samples/s of "
        "backup counts the whole global batch, dropped gradients included.\n\n"
        f"{table}\n\n### hogwild against the PyTorch Hogwild example\n\n{hog_ratio}\n\n"
        f"### a straggler: backup workers against all-reduce\n\n{strag_table}\n\n"
        "topk runs with DGC's momentum correction and masking (the default) unless the row says otherwise; "
        "paramserver with the default staleness-aware learning rate (lr / (staleness + 1)).\n\n"
        "Aims: qsgd 4 bit >= 7x and topk 1% >= 30x fewer bytes than fp32, each within 1 point of its accuracy; "
        "backup keeps >= 80% of its straggler-free throughput while allreduce falls to the straggler's pace."
        f"{_plot(results, docs)}"
    )
    print(body)
    update_section(docs, "strategies", body)
