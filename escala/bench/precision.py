"""``escala bench precision``: low-precision training against float32 and a published LNS table.

Table 1 reproduces the *shape* of a published MNIST result for a small fully connected network
trained in a logarithmic number system (fp32 2.14 % error, LNS matrix multiplications 2.12 %, LNS
everywhere 3.62 %, LNS everywhere with Kahan-compensated updates 2.29 %): rounding only the
matmuls costs nothing, storing weights and updates in LNS loses the small updates, Kahan
compensation wins them back. Every row is a run of ``escala train`` (the one loop) with the same
seed, data order and initial weights; only ``--simulate/--simulate-scope/--kahan`` differ. Data: the
scikit-learn digits by default, MNIST with ``--dataset mnist --data-dir DIR`` (or ``ESCALA_MNIST_DIR=DIR``).

Table 2 compares autocast bf16 and fp16 (with dynamic loss scaling) with float32 on this machine,
accuracy and training throughput as ratios measured in the same run. On a CPU without native
16-bit arithmetic, 16-bit autocast is slower than float32; that is reported as measured.
"""

from __future__ import annotations

import os
import tempfile

from escala.bench.report import machine_line, markdown_table, update_section

PUBLISHED = {"fp32": 2.14, "lns-matmul": 2.12, "lns-all": 3.62, "lns-all-kahan": 2.29}
SPEC = {"epochs": 10, "hidden": (100,), "batch": 32, "lr": 0.05, "lns_int_bits": 6, "lns_frac_bits": 5}
QUICK = dict(SPEC, epochs=2)
ROWS = [
    ("fp32", "float32", {}),
    ("lns-matmul", "LNS matrix multiplications", {"simulate": "lns", "simulate_scope": "matmul"}),
    ("lns-all", "LNS everywhere", {"simulate": "lns", "simulate_scope": "all"}),
    ("lns-all-kahan", "LNS everywhere + Kahan", {"simulate": "lns", "simulate_scope": "all", "kahan": True}),
]


_CHOSEN: dict = {}  # set by main() from ``escala bench precision --dataset/--data-dir``


def _dataset() -> dict:
    if _CHOSEN:
        return dict(_CHOSEN)
    mnist = os.environ.get("ESCALA_MNIST_DIR")
    return {"dataset": "mnist", "data_dir": mnist} if mnist else {"dataset": "digits"}


def _train(spec: dict, **overrides) -> dict:
    import escala

    with tempfile.TemporaryDirectory() as tmp:
        return escala.train(
            **_dataset(),
            model="mlp",
            hidden=spec["hidden"],
            epochs=spec["epochs"],
            batch_size=spec["batch"],
            lr=spec["lr"],
            momentum=0.0,
            lns_int_bits=spec["lns_int_bits"],
            lns_frac_bits=spec["lns_frac_bits"],
            out=f"{tmp}/run",
            progress="none",
            tensorboard=False,
            seed=0,
            **overrides,
        )


def lns_table(spec: dict) -> tuple[str, list[list]]:
    rows = []
    base = None
    for key, label, overrides in ROWS:
        s = _train(spec, **overrides)
        err = 100.0 * (1.0 - s["val_acc"])
        base = s["samples_per_s"] if base is None else base
        rows.append(
            [
                label,
                PUBLISHED[key],
                err,
                s.get("lost_updates", "-"),
                s["samples_per_s"],
                s["samples_per_s"] / base,
            ]
        )
        print(f"  {label}: {err:.2f}% error, {s['samples_per_s']:.0f} samples/s")
    headers = [
        "run",
        "published MNIST error %",
        "escala error %",
        "lost updates",
        "samples/s",
        "speed vs fp32",
    ]
    return markdown_table(headers, rows), rows


def _step_rates(modes, hidden, batch, rounds) -> dict[str, float]:
    """Training steps per second of each autocast mode, interleaved round by round (median).

    Interleaving makes a busy machine slow every mode alike instead of whichever ran last.
    """
    import statistics
    import time

    import torch
    import torch.nn.functional as F

    from escala.config import TrainConfig
    from escala.models import build_model
    from escala.parallel.strategy import Strategy
    from escala.precision.mixed import Precision

    torch.manual_seed(0)
    x, y = torch.randn(batch, 64), torch.randint(0, 10, (batch,))
    setups = {}
    for mode in modes:
        model = build_model("mlp", (64,), 10, hidden=hidden)
        setups[mode] = (
            model,
            torch.optim.SGD(model.parameters(), lr=0.01),
            Precision(TrainConfig(precision=mode), "cpu"),
        )
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):
        for mode, (model, opt, prec) in setups.items():
            t0 = time.perf_counter()
            for _ in range(5):
                opt.zero_grad(set_to_none=True)
                with prec.autocast():
                    loss = F.cross_entropy(model(x), y)
                prec.backward(loss)
                prec.step(opt, Strategy())
            rates[mode].append(5 * batch / (time.perf_counter() - t0))
    return {m: statistics.median(v[1:]) for m, v in rates.items()}


def autocast_table(spec: dict, quick: bool = False) -> str:
    modes = ("fp32", "bf16", "fp16")
    hidden = (512, 256)
    rates = _step_rates(modes, hidden, 256, 4 if quick else 8)
    rows = []
    for mode in modes:
        s = _train(dict(spec, hidden=hidden), precision=mode)
        rows.append(
            [
                mode,
                100.0 * (1.0 - s["val_acc"]),
                s["val_loss"],
                rates[mode],
                rates[mode] / rates["fp32"],
                s.get("skipped_steps", "-"),
            ]
        )
        print(f"  {mode}: {rows[-1][1]:.2f}% error, {rates[mode]:.0f} samples/s in the step benchmark")
    return markdown_table(
        ["precision", "error %", "val loss", "samples/s (batch 256)", "speed vs fp32", "skipped steps"], rows
    )


def main(
    quick: bool = False, docs: str | None = None, dataset: str | None = None, data_dir: str | None = None
) -> None:
    from escala.bench import bench_data
    from escala.data import load_dataset

    _CHOSEN.clear()
    if dataset or data_dir:
        name, folder = bench_data(dataset, data_dir)
        load_dataset(name, folder)  # a bad --data-dir fails here, in one line, before any training
        _CHOSEN.update({"dataset": name, "data_dir": folder} if folder else {"dataset": name})
    spec = QUICK if quick else SPEC
    data = _dataset()["dataset"]
    fmt = f"LNS with {spec['lns_int_bits']} integer and {spec['lns_frac_bits']} fraction bits of log2 (1+{spec['lns_int_bits']}+{spec['lns_frac_bits']} bits)"
    print(f"LNS table on {data}: {fmt}")
    lns, _ = lns_table(spec)
    print(lns)
    print("autocast on this machine")
    auto = autocast_table(spec, quick)
    print(auto)
    body = (
        "## Precision (`escala bench precision`)\n\n"
        f"{machine_line()}\n\n"
        f"Simulated LNS training on {data}, MLP {spec['hidden']}, SGD lr {spec['lr']} without momentum, batch "
        f"{spec['batch']}, {spec['epochs']} epochs, seed 0; {fmt}, exact log-addition. The published column is "
        "the MNIST table this reproduces in shape (a different data set and network size, so compare the "
        "pattern, not the digits). *Lost updates* counts weight elements whose rounded update was zero "
        "while the float32 update was not. Simulated formats round float32 values, so their speed is a "
        "simulation cost, not a hardware speed.\n\n"
        f"{lns}\n\n"
        "Autocast on this CPU, MLP (512, 256): error after training with the same data and schedule (fp16 "
        "with dynamic loss scaling), and training-step throughput at batch 256 measured with the three modes "
        "interleaved (median of rounds):\n\n"
        f"{auto}\n"
    )
    update_section(docs, "precision", body)
