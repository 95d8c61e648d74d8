"""The typed configuration of a training run.

Every field carries its meaning in ``metadata["help"]``; the command line is generated from these
fields, so ``escala train --help`` and the TOML keys can never drift apart. ``choices`` lists the
values a string field allows and ``min`` the smallest value a number may take.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def _f(default, help: str, **meta):
    """A dataclass field with its help text (and optional ``choices``/``min``) in the metadata."""
    meta["help"] = help
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """What ``escala train`` and :func:`escala.train` run."""

    # -- data -------------------------------------------------------------------------------------
    dataset: str = _f("digits", "data set to train on", choices=("digits", "mnist", "synthetic"))
    data_dir: str = _f("", "directory holding MNIST-format IDX files (for --dataset mnist)")
    synthetic_samples: int = _f(4096, "number of samples of the synthetic data set", min=2)
    synthetic_shape: tuple[int, ...] = _f((1, 8, 8), "input shape of the synthetic data set")
    synthetic_classes: int = _f(10, "number of classes of the synthetic data set", min=2)

    # -- model ------------------------------------------------------------------------------------
    model: str = _f("mlp", "model to train", choices=("mlp", "lenet300", "lenet5", "resnet20", "resnet50", "lstm"))
    hidden: tuple[int, ...] = _f((128, 64), "hidden layer widths of the mlp model (lstm: one LSTM layer per width)")
    dropout: float = _f(0.0, "dropout probability after each hidden layer of the mlp model", min=0.0)

    # -- optimisation -----------------------------------------------------------------------------
    epochs: int = _f(10, "number of passes over the training data", min=1)
    batch_size: int = _f(32, "mini-batch size per worker (the global batch is batch_size x workers)", min=1)
    optimizer: str = _f("sgd", "optimizer", choices=("sgd", "adamw"))
    lr: float = _f(0.1, "base learning rate", min=0.0)
    momentum: float = _f(0.9, "SGD momentum", min=0.0)
    weight_decay: float = _f(0.0, "weight decay (L2 for sgd, decoupled for adamw)", min=0.0)
    schedule: str = _f(
        "constant", "learning-rate schedule after warmup", choices=("constant", "cosine", "step")
    )
    step_epochs: int = _f(
        30, "the 'step' schedule divides the learning rate by 10 every this many epochs", min=1
    )
    warmup_epochs: float = _f(
        0.0,
        "gradual warmup: ramp the learning rate linearly from lr/k to its target over these epochs",
        min=0.0,
    )
    lr_scaling: str = _f(
        "none",
        "'linear' multiplies lr by global_batch / reference_batch (Goyal et al. 2017)",
        choices=("none", "linear"),
    )
    reference_batch: int = _f(0, "batch size the base lr was tuned for (0: the per-worker batch_size)", min=0)
    max_steps: int = _f(0, "stop after this many optimizer steps in total (0: no limit)", min=0)

    # -- parallelism ------------------------------------------------------------------------------
    workers: int = _f(1, "number of data-parallel worker processes on this machine", min=1)
    strategy: str = _f(
        "allreduce",
        "how workers combine their work (see docs/data-parallel.md)",
        choices=("allreduce", "backup", "paramserver", "hogwild", "localsgd"),
    )
    backend: str = _f(
        "auto", "torch.distributed backend (auto: nccl on GPU, gloo on CPU)", choices=("auto", "gloo", "nccl")
    )
    device: str = _f(
        "auto",
        "where to compute (auto: one GPU per worker when there are enough, else CPU)",
        choices=("auto", "cpu", "cuda"),
    )
    threads: int = _f(0, "torch threads per worker (0: the machine's cores divided among the workers)", min=0)
    timeout_s: float = _f(120.0, "seconds a collective or rendezvous may wait before the job fails", min=1.0)

    # -- model parallelism (docs/model-parallel.md); processes = workers x pipeline x tensor x spatial --
    pipeline: int = _f(1, "pipeline stages K: cut the model into K stages, one process each (1: none)", min=1)
    microbatches: int = _f(4, "--pipeline: micro-batches M each mini-batch is split into", min=1)
    pipeline_schedule: str = _f(
        "gpipe", "--pipeline: schedule, fill-drain (GPipe) or one-forward-one-backward", choices=("gpipe", "1f1b")
    )
    pipeline_balance: str = _f(
        "params", "--pipeline: balance the stages by parameter count or measured time", choices=("params", "time")
    )
    pipeline_cuts: tuple[int, ...] = _f((), "--pipeline: indices of the layers where stages 2..K begin")
    tensor: int = _f(1, "tensor-parallel processes T per replica: Linear pairs split column/row-wise", min=1)
    spatial: int = _f(1, "spatial processes P per replica: convolutions split by rows with halo exchange", min=1)

    # -- data-parallel strategies (docs/data-parallel.md) ----------------------------------------
    backups: int = _f(
        0, "strategy backup: apply the first workers-backups gradients of each step, drop the rest", min=0
    )
    servers: int = _f(1, "strategy paramserver: parameter-server processes (besides the workers)", min=1)
    staleness_bound: int = _f(
        -1,
        "strategy paramserver: a worker more than this many pushes ahead of the slowest waits "
        "(stale synchronous parallel); -1: no bound (fully asynchronous)",
        min=-1,
    )
    staleness_lr: bool = _f(
        True, "strategy paramserver: divide each update's learning rate by its staleness + 1 (Zhang et al. 2016)"
    )
    push_every: int = _f(
        1, "strategy paramserver: push the mean of this many gradients at a time (and pull)", min=1
    )
    average_every: int = _f(1, "strategy localsgd: average the parameters every this many local steps", min=1)
    average_optimizer: bool = _f(False, "strategy localsgd: also average the optimizer state (momentum...)")
    compress: str = _f(
        "none",
        "gradient compression for allreduce, backup and paramserver",
        choices=("none", "fp16", "bf16", "qsgd", "topk"),
    )
    qsgd_bits: int = _f(4, "--compress qsgd: bits per value, sign included (2..8)", min=2)
    qsgd_bucket: int = _f(512, "--compress qsgd: values per bucket sharing one norm", min=1)
    topk_ratio: float = _f(
        0.01, "--compress topk: fraction of values sent (the rest is carried by error feedback)", min=0.0
    )
    topk_momentum_correction: bool = _f(
        True, "--compress topk with sgd: keep the momentum on each worker and compress the velocity (DGC)"
    )
    topk_warmup_steps: int = _f(
        0, "--compress topk: steps over which the sent fraction falls from 0.25 (4x per stage) to topk_ratio", min=0
    )
    straggler_delay: float = _f(
        0.0, "simulate stragglers: extra seconds per step on the straggling ranks (mean)", min=0.0
    )
    straggler_dist: str = _f(
        "fixed",
        "distribution of the simulated delay: fixed, exponential or uniform (0..2x mean)",
        choices=("fixed", "exponential", "uniform"),
    )
    straggler_ranks: tuple[int, ...] = _f((), "worker ranks that straggle (empty: the last worker)")

    # -- precision (docs/precision.md) -----------------------------------------------------------
    precision: str = _f(
        "fp32",
        "arithmetic of the forward pass: fp32, bf16 autocast, or fp16 autocast with dynamic loss scaling",
        choices=("fp32", "bf16", "fp16"),
    )
    simulate: str = _f(
        "none",
        "simulate a number format by rounding float32 values (an accuracy study, not a speed-up)",
        choices=("none", "fixed", "bf16", "fp16", "fp8e4m3", "fp8e5m2", "lns"),
    )
    simulate_scope: str = _f(
        "matmul",
        "where the simulated format applies: matmul (linear/conv products and sums) or all "
        "(also weights, activations, gradients and weight updates)",
        choices=("matmul", "all"),
    )
    kahan: bool = _f(
        False, "Kahan-compensated weight updates in the simulated format (needs --simulate-scope all)"
    )
    stochastic_rounding: bool = _f(False, "round simulated gradients and weight updates stochastically")
    fixed_int_bits: int = _f(7, "--simulate fixed: integer bits m of Qm.n (plus a sign bit)", min=0)
    fixed_frac_bits: int = _f(8, "--simulate fixed: fraction bits n of Qm.n", min=0)
    lns_int_bits: int = _f(6, "--simulate lns: integer bits of the log2 magnitude (two's complement)", min=1)
    lns_frac_bits: int = _f(8, "--simulate lns: fraction bits of the log2 magnitude", min=0)
    lns_add: str = _f(
        "exact",
        "--simulate lns: addition's log2(1 +- 2^d) computed exactly or by table interpolation",
        choices=("exact", "table"),
    )

    # -- run --------------------------------------------------------------------------------------
    seed: int = _f(0, "random seed (model initialisation, data order, dropout)")
    out: str = _f(
        "runs/escala", "output directory: metrics.jsonl, summary.json, checkpoints, TensorBoard events"
    )
    resume: bool = _f(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = _f(False, "replace a finished or stopped run already in --out")
    checkpoint_every: int = _f(1, "write a checkpoint every this many epochs (the last epoch always)", min=1)
    checkpoint_every_steps: int = _f(
        0, "also write a checkpoint every this many steps (0: only per epoch)", min=0
    )
    tensorboard: bool = _f(True, "write TensorBoard event files when TensorBoard is installed")
    progress: str = _f(
        "auto",
        "progress display: auto (bar on a terminal), bar, plain or none",
        choices=("auto", "bar", "plain", "none"),
    )

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.workers


def field_specs():
    """The fields of :class:`TrainConfig` in declaration order."""
    return fields(TrainConfig)
