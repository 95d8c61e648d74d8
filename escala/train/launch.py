"""Start a training run: in this process, in spawned local workers, or as one process of torchrun.

The data set is loaded and the model built in the launching process, where a bad file or setting
fails fast with one line. Spawned workers receive both (tensors travel through shared memory) so every
replica starts from the same weights; under torchrun every process builds them itself from the seed.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from escala.config import TrainConfig, build_config
from escala.data import DataSplit, as_split, load_dataset
from escala.errors import UserError
from escala.models import build_model
from escala.parallel import make_strategy, strategy_class
from escala.parallel.model.layout import layout_from_config
from escala.runtime import WorkerContext, init_worker, shutdown, spawn_workers, under_torchrun
from escala.runtime.channel import Channel
from escala.train.rundir import checkpoint_path, prepare_out_dir
from escala.train.trainer import RunStopped, Trainer

ModelSpec = nn.Module | Callable[[tuple[int, ...], int], nn.Module] | None
DataSpec = DataSplit | tuple | None


def resolve_data(dataset: DataSpec, config: TrainConfig) -> DataSplit:
    if dataset is None:
        return load_dataset(
            config.dataset,
            config.data_dir or None,
            seed=config.seed,
            synthetic_samples=config.synthetic_samples,
            synthetic_shape=tuple(config.synthetic_shape),
            synthetic_classes=config.synthetic_classes,
        )
    if isinstance(dataset, DataSplit):
        return dataset
    if isinstance(dataset, tuple) and len(dataset) == 2:
        return as_split(*dataset)
    raise UserError(
        "dataset must be a DataSplit, a (train, val) pair of torch Datasets, or None to use the config"
    )


def resolve_model(model: ModelSpec, data: DataSplit, config: TrainConfig) -> nn.Module:
    torch.manual_seed(config.seed)  # the same initial weights on every rank and on every run
    if model is None:
        return build_model(
            config.model,
            data.input_shape,
            data.num_classes,
            hidden=tuple(config.hidden),
            dropout=config.dropout,
        )
    if isinstance(model, nn.Module):
        return model
    if callable(model):
        return model(data.input_shape, data.num_classes)
    raise UserError("model must be an nn.Module, a factory (input_shape, num_classes) -> nn.Module, or None")


def _run(
    ctx: WorkerContext,
    config: TrainConfig,
    model: nn.Module,
    data: DataSplit,
    on_epoch: Callable | None = None,
) -> dict[str, Any]:
    """The body every worker runs, whichever way it was started."""
    resume = None
    if config.resume:
        from escala.checkpoint import load_checkpoint

        resume = load_checkpoint(checkpoint_path(config.out))
    # Each rank gets its own stream for dropout and the like; initial weights were drawn before this.
    torch.manual_seed(config.seed + 7919 * ctx.rank + 1)
    strategy = make_strategy(config)
    train_ctx = strategy.assign_role(ctx, model)
    if train_ctx is None:  # this process served the workers (a parameter server) until they finished
        return {}
    trainer = Trainer(config, model, data, train_ctx, strategy, resume_from=resume, on_epoch=on_epoch)
    try:
        return trainer.fit()
    finally:
        # Free the run (a DDP module with a communication hook above all) while the process group and
        # the interpreter are alive: left to interpreter shutdown, it sometimes aborts the process.
        del trainer
        gc.collect()


def _spawned_worker(
    ctx: WorkerContext, config: TrainConfig, model: nn.Module, data: DataSplit, channel: Channel | None = None
) -> None:
    # Tensors reach spawned workers in shared memory. The data may stay shared (it is only read), but
    # each replica needs weights of its own, or every worker's step would land on the same storage.
    # Hogwild is the exception: its workers are meant to update one shared copy without locks.
    own = model if strategy_class(config).shares_model else copy.deepcopy(model)
    try:
        _run(ctx, config, own, data, None if channel is None else _ask_launcher(channel, config.timeout_s))
    except RunStopped:  # the launcher's on_epoch ended the run: every rank stops at this epoch, cleanly
        pass
    ctx.barrier()  # leave together: a rank tearing down its group while a peer still talks aborts the peer


def _ask_launcher(channel: Channel, timeout_s: float) -> Callable[[dict[str, Any]], None]:
    """The epoch hook of a spawned run: rank 0 sends the record to the launcher and waits for its verdict."""

    def on_epoch(record: dict[str, Any]) -> None:
        if channel.ask(record, timeout_s):
            raise RunStopped(f"on_epoch stopped the run at epoch {record['epoch']}")

    return on_epoch


def _serve_on_epoch(on_epoch: Callable[[dict[str, Any]], None], raised: list[BaseException]):
    """The launcher's side: call ``on_epoch``; answer "stop" (True) if it raised, and keep what it raised."""

    def handle(record: dict[str, Any]) -> bool:
        try:
            on_epoch(record)
        except Exception as err:  # noqa: BLE001 - re-raised by run_training once the workers are gone
            raised.append(err)
            return True
        return False

    return handle


def _runtime_options(config: TrainConfig) -> dict[str, Any]:
    return {
        "device": config.device,
        "backend": config.backend,
        "timeout_s": config.timeout_s,
        "threads": config.threads,
    }


def run_training(
    config: TrainConfig,
    model: ModelSpec = None,
    dataset: DataSpec = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train as ``config`` says and return the summary (also written to ``config.out/summary.json``).

    ``on_epoch(record)`` is called after each epoch with its metrics record, in this process, also
    when the run trains in spawned workers (rank 0 sends each record here and waits for the answer);
    whatever it raises ends the run at that epoch on every process and is raised here (the run
    writes no final checkpoint or summary then). Not under torchrun, where no process launched the others.
    """
    if on_epoch is not None and under_torchrun():
        raise ValueError("on_epoch needs a run launched from this process (not under torchrun)")
    if under_torchrun():
        return _run_under_torchrun(config, model, dataset)
    strategy = strategy_class(config)
    strategy.check(config)  # a setting the strategy cannot run fails before anything starts
    data = resolve_data(dataset, config)
    built = resolve_model(model, data, config)
    strategy.check_model(config, built, data.input_shape)
    prepare_out_dir(config)
    processes = strategy.processes(config)
    if processes == 1:
        ctx = init_worker(0, 1, 0, 1, **_runtime_options(config))
        return _run(ctx, config, built, data, on_epoch)
    raised: list[BaseException] = []
    channel = None if on_epoch is None else Channel(_serve_on_epoch(on_epoch, raised))
    try:
        spawn_workers(
            _spawned_worker,
            processes,
            (config, built, data, channel),
            options=_runtime_options(config),
            channel=channel,
        )
    finally:
        if channel is not None:
            channel.close()
    if raised:
        raise raised[0]
    return json.loads((Path(config.out) / "summary.json").read_text())


def _run_under_torchrun(config: TrainConfig, model: ModelSpec, dataset: DataSpec) -> dict[str, Any]:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    extra = strategy_class(config).servers(config)  # processes that serve instead of train
    parts = layout_from_config(config).parts  # processes per replica of a split model
    if config.workers not in (1, (world - extra) // parts) or (world - extra) % parts:
        raise UserError(
            f"workers is {config.workers} but torchrun started {world} processes"
            f"{f' ({extra} of them servers)' if extra else ''}"
            f"{f' for replicas of {parts} processes' if parts > 1 else ''}; drop --workers"
        )
    config = dataclasses.replace(config, workers=(world - extra) // parts)
    strategy_class(config).check(config)
    data = resolve_data(dataset, config)
    built = resolve_model(model, data, config)
    strategy_class(config).check_model(config, built, data.input_shape)
    if rank == 0:
        prepare_out_dir(config)
    ctx = init_worker(rank, world, local_rank, local_world, **_runtime_options(config))
    try:
        ctx.barrier()  # nobody writes into --out before rank 0 has checked it
        return _run(ctx, config, built, data)
    finally:
        shutdown()


def train(
    model: ModelSpec = None,
    dataset: DataSpec = None,
    config: TrainConfig | str | dict | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Python API of ``escala train``.

    ``model``: an ``nn.Module``, a factory ``(input_shape, num_classes) -> nn.Module``, a zoo name
    (``"lenet5"``), or None for ``config.model``. ``dataset``: a :class:`DataSplit`, a ``(train, val)``
    pair of torch Datasets (items ``(input, label)``), a built-in name (``"digits"``), or None for
    ``config.dataset``. ``config``: a :class:`TrainConfig`, a
    TOML path, a dict, or None; keyword arguments override single fields (``epochs=3``). Without an
    ``out`` the run goes to a fresh temporary directory. Returns the summary dict.
    """
    base = config if isinstance(config, TrainConfig) else None
    file = config if isinstance(config, (str, Path)) else None
    values = dict(config) if isinstance(config, dict) else {}
    values.update(overrides)
    if isinstance(model, str):  # a zoo name is just the config field
        values["model"], model = model, None
    if isinstance(dataset, str):
        values["dataset"], dataset = dataset, None
    if "out" not in values and (base is None or base.out == TrainConfig().out):
        values["out"] = tempfile.mkdtemp(prefix="escala-")
    return run_training(build_config(file, values, base=base), model, dataset)
