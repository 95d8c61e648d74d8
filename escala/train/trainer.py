"""The one training loop.

Every strategy plugs into this loop through the hooks of :class:`~escala.parallel.strategy.Strategy`;
none owns a loop of its own. Per step: fetch this rank's share of the global batch, forward, weighted
loss (see :mod:`escala.data.shard` for why the weights make N workers equal one), backward, the
strategy's optimizer step, the per-step learning-rate schedule. Per epoch: evaluation on the
validation set (sharded over ranks, sums all-reduced), one metrics record, a checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from escala.checkpoint import capture_rng, restore_rng, save_checkpoint
from escala.config.schema import TrainConfig
from escala.data.shard import ShardedBatches, eval_shard
from escala.errors import UserError
from escala.metrics import JsonlWriter, Progress, TensorBoardWriter, write_json
from escala.parallel.strategy import Strategy
from escala.precision.mixed import Precision
from escala.runtime.context import WorkerContext
from escala.train.optim import build_optimizer, build_scheduler

EVAL_BATCH = 1024


def fetch(dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather a batch: straight tensor indexing for in-memory data, the dataset's items otherwise."""
    x, y = getattr(dataset, "x", None), getattr(dataset, "y", None)
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        return x[indices], y[indices]
    return default_collate([dataset[i] for i in indices.tolist()])


class RunStopped(Exception):
    """The epoch hook ended the run at this epoch (raised where it runs, and on every other process)."""


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        data,
        ctx: WorkerContext,
        strategy: Strategy,
        resume_from: dict[str, Any] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.config = config
        # called on the main process with each epoch's record once it is written (a search's trial
        # reports it to the driver from here); an exception it raises ends the run on every process.
        # Give it to every process of a multi-process run: all of them take part in that decision.
        self.on_epoch = on_epoch
        self.data = data
        self.ctx = ctx
        self.strategy = strategy
        self.out = Path(config.out)
        model = model.to(ctx.device)
        self.total_params = sum(p.numel() for p in model.parameters())
        if resume_from is not None:  # whole-model weights, before a model-parallel strategy splits them
            model.load_state_dict(resume_from["model"])
        # Which replica this process serves: all processes of a split model read the same batches.
        self.dp_rank, self.dp_world = strategy.data_rank_world(ctx)
        sample = fetch(data.train, torch.arange(min(config.batch_size, len(data.train))))[0].to(ctx.device)
        self.model = strategy.split_model(model, ctx, sample)
        self.optimizer = build_optimizer(self.model.parameters(), config)
        # Autocast / loss scaling / simulated formats; the identity for the default fp32 run.
        self.precision = Precision(config, ctx.device)
        self.precision.prepare(self.model, self.optimizer)
        self.batches = ShardedBatches(
            len(data.train), config.batch_size, self.dp_rank, self.dp_world, config.seed
        )
        self.scheduler = build_scheduler(self.optimizer, config, self.batches.steps_per_epoch)
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken in total
        self.step_in_epoch = 0
        self.wall_before = 0.0  # wall time of earlier segments of a resumed run
        self.train_time = 0.0  # seconds spent in training steps (not evaluation), whole run
        self.samples_seen = 0
        self.partial = {"loss_sum": 0.0, "count": 0.0, "time": 0.0}
        if resume_from is not None:
            self._restore(resume_from)
        self.train_model = strategy.setup(self.model, self.optimizer, ctx)
        main = ctx.is_main
        self.metrics = JsonlWriter(self.out / "metrics.jsonl") if main else None
        self.tb = TensorBoardWriter(self.out / "tb", enabled=main and config.tensorboard)
        self.progress = Progress(config.progress, enabled=main)
        self.last_eval: dict[str, float] = {}

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        started = time.perf_counter()
        cfg = self.config
        try:
            while self.epoch < cfg.epochs and not self._budget_spent():
                self._train_epoch(started)
            self.last_eval = self.last_eval or self.evaluate()
            self._checkpoint(started)
            return self._finish(started)
        finally:
            self.tb.close()
            self.strategy.close()

    def _budget_spent(self) -> bool:
        return self.config.max_steps > 0 and self.step >= self.config.max_steps

    def _train_epoch(self, started: float) -> None:
        cfg, ctx = self.config, self.ctx
        steps = self.batches.steps_per_epoch
        self.progress.start_epoch(self.epoch, cfg.epochs, steps, self.step_in_epoch)
        self.train_model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        count = 0.0
        t0 = time.perf_counter()
        skip = 0
        for batch in self.batches.epoch(self.epoch, self.step_in_epoch):
            if skip:  # the other workers moved on without this one (backup workers): catch up, no compute
                skip -= 1
                self.scheduler.step()
                self.step += 1
                self.step_in_epoch += 1
                self.progress.advance()
            else:
                x, y = fetch(self.data.train, batch.indices)
                x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
                self.optimizer.zero_grad(set_to_none=True)
                total = self._forward_backward(x, y, batch)
                self.precision.step(self.optimizer, self.strategy)
                self.scheduler.step()
                self.step += 1
                self.step_in_epoch += 1
                self.strategy.after_step(self.step, self.train_model, self.optimizer)
                if total is not None and self.strategy.reports_metrics:
                    loss_sum += total.detach()
                    count += batch.real
                self.samples_seen += batch.global_count
                self.progress.advance()
                skip = self.strategy.steps_to_skip()
            if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                self._stash_partial(loss_sum, count, time.perf_counter() - t0)
                self._checkpoint(started)
            if self._budget_spent():
                break
        elapsed = time.perf_counter() - t0
        self.train_time += elapsed
        self._stash_partial(loss_sum, count, elapsed)
        if self.step_in_epoch < steps:  # stopped by max_steps: the epoch goes on after a resume
            self.progress.end_epoch({"stopped at step": self.step})
            return
        self._end_epoch(started)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, batch) -> torch.Tensor | None:
        """Forward, loss, backward of this process's batch; the sum of its per-sample losses.

        The loss is ``(replicas / n_global) * sum_i w_i l_i`` (see :mod:`escala.data.shard`): averaging
        the replicas' gradients gives the gradient of the mean loss over the global batch.
        """
        scale = self.dp_world / batch.global_count
        if self.strategy.owns_step:  # e.g. a pipeline: the loss exists on its last stage only
            return self.strategy.forward_backward(self.train_model, x, y, batch, scale)
        with self.precision.autocast():
            out = self.train_model(x)
            if batch.has_filler:  # only in a short last batch: the filler sample must not count
                total = (F.cross_entropy(out, y, reduction="none") * batch.weights.to(self.ctx.device)).sum()
            else:
                total = F.cross_entropy(out, y, reduction="sum")
        self.precision.backward(total * scale)
        return total

    def _stash_partial(self, loss_sum: torch.Tensor, count: float, elapsed: float) -> None:
        """Keep the running epoch's sums so a checkpoint taken mid-epoch can continue them."""
        base = getattr(self, "_partial_base", None) or dict(self.partial)
        self._partial_base = base
        self.partial = {
            "loss_sum": base["loss_sum"] + float(loss_sum),
            "count": base["count"] + count,
            "time": base["time"] + elapsed,
        }

    def _end_epoch(self, started: float) -> None:
        cfg = self.config
        self.strategy.synchronize(self.train_model)
        loss_sum, count = self.ctx.all_reduce_sum([self.partial["loss_sum"], self.partial["count"]])
        epoch_time = self.partial["time"]
        self.last_eval = self.evaluate()
        self.epoch += 1
        self.step_in_epoch = 0
        self.partial = {"loss_sum": 0.0, "count": 0.0, "time": 0.0}
        self._partial_base = None
        record = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(count, 1.0),
            **self.last_eval,
            "samples_per_s": count / epoch_time if epoch_time > 0 else 0.0,
            "epoch_s": epoch_time,
            "wall_s": self.wall_before + time.perf_counter() - started,
        }
        if self.metrics is not None:
            self.metrics.write(record)
            self.tb.scalars(self.epoch, {k: v for k, v in record.items() if k != "epoch"})
        self.progress.end_epoch({**record, "epochs": cfg.epochs})
        if self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs:
            self._checkpoint(started)
        if self.on_epoch is not None:
            self._epoch_hook(record)

    def _epoch_hook(self, record: dict[str, Any]) -> None:
        """Call ``on_epoch`` on the main process; whatever it raises ends the run there on every process.

        One all-reduce of a flag tells the other processes, so every rank stops after the same step
        (and none is left waiting in a collective of the next epoch); they raise :class:`RunStopped`.
        """
        failure = None
        if self.ctx.is_main:
            try:
                self.on_epoch(record)
            except Exception as err:  # noqa: BLE001 - re-raised below, once the others know
                failure = err
        if self.ctx.world_size > 1:
            (stop,) = self.ctx.all_reduce_sum([0.0 if failure is None else 1.0])
            if stop and failure is None:
                raise RunStopped(f"the main process's epoch hook ended the run at epoch {self.epoch}")
        if failure is not None:
            raise failure

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss and accuracy, each sample counted exactly once over all ranks."""
        self.strategy.synchronize(self.train_model)
        model = self.strategy.unwrap(self.train_model)
        was_training = model.training
        model.eval()
        idx = eval_shard(len(self.data.val), *self.strategy.eval_rank_world(self.ctx))
        loss = correct = 0.0
        chunk = self.strategy.eval_batch_size or EVAL_BATCH
        for start in range(0, len(idx), chunk):
            x, y = fetch(self.data.val, idx[start : start + chunk])
            x, y = x.to(self.ctx.device), y.to(self.ctx.device)
            out = self.strategy.eval_forward(model, x)
            if out is None:  # another process of this replica reports these samples
                continue
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += float((out.argmax(dim=1) == y).sum())
        model.train(was_training)
        loss, correct = self.ctx.all_reduce_sum([loss, correct])
        n = max(len(self.data.val), 1)
        return {"val_loss": loss / n, "val_acc": correct / n}

    # -- checkpoints -------------------------------------------------------------------------------
    def _checkpoint(self, started: float) -> None:
        """Every rank contributes its RNG and strategy state; rank 0 writes the file atomically."""
        self.strategy.synchronize(self.train_model)
        rng = self.ctx.all_gather_object(capture_rng())
        strategy_states = self.ctx.all_gather_object(self.strategy.state_dict())
        model_state = self.strategy.full_state_dict(self.train_model)
        optimizer_state = self.strategy.optimizer_state(self.optimizer)
        if self.strategy.per_rank_optimizer:  # each process optimizes its own part of the model
            optimizer_state = self.ctx.all_gather_object(optimizer_state)
        if not self.ctx.is_main:
            return
        state = {
            "config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()
            },
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "partial": dict(self.partial),
            "wall_s": self.wall_before + time.perf_counter() - started,
            "train_time": self.train_time,
            "samples_seen": self.samples_seen,
            "world_size": self.ctx.world_size,
            "model": model_state,
            "optimizer": None if self.strategy.per_rank_optimizer else optimizer_state,
            "optimizers": optimizer_state if self.strategy.per_rank_optimizer else None,
            "precision": self.precision.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "strategy": strategy_states,
            "rng": rng,
        }
        save_checkpoint(state, self.out / "checkpoints" / "last.pt")

    def _restore(self, ckpt: dict[str, Any]) -> None:
        # The weights were loaded in __init__, before a model-parallel split.
        per_rank = ckpt.get("optimizers")
        if per_rank is not None:
            if len(per_rank) != self.ctx.world_size:
                raise UserError(
                    f"the checkpoint in {self.out} was written by {len(per_rank)} processes of a split "
                    f"model; resume it with the same layout ({self.ctx.world_size} processes now)"
                )
            self.strategy.load_optimizer_state(self.optimizer, per_rank[self.ctx.rank])
        else:
            self.strategy.load_optimizer_state(self.optimizer, ckpt["optimizer"])
        self.precision.load_state_dict(ckpt.get("precision"))
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.step_in_epoch = int(ckpt.get("step_in_epoch", 0))
        self.partial = dict(ckpt.get("partial", self.partial))
        self.wall_before = float(ckpt.get("wall_s", 0.0))
        self.train_time = float(ckpt.get("train_time", 0.0))
        self.samples_seen = int(ckpt.get("samples_seen", 0))
        if int(ckpt.get("world_size", 1)) == self.ctx.world_size:
            restore_rng(ckpt["rng"][self.ctx.rank])
            self._pending_strategy_state = ckpt.get("strategy", [{}] * self.ctx.world_size)[self.ctx.rank]
        else:
            torch.manual_seed(self.config.seed + 7919 * self.ctx.rank + self.step)
            self._pending_strategy_state = None
        if self._pending_strategy_state:
            self.strategy.load_state_dict(self._pending_strategy_state)

    # -- the end -----------------------------------------------------------------------------------
    def _finish(self, started: float) -> dict[str, Any]:
        steps = self.batches.steps_per_epoch
        summary = {
            **self.last_eval,
            "epochs": self.epoch + self.step_in_epoch / steps,
            "steps": self.step,
            "workers": self.dp_world,
            "processes": self.ctx.world_size,
            "strategy": self.strategy.name,
            "model": self.config.model,
            "dataset": self.data.name,
            "params": self.total_params,
            "global_batch": self.config.batch_size * self.dp_world,
            "wall_s": self.wall_before + time.perf_counter() - started,
            "samples_per_s": self.samples_seen / self.train_time if self.train_time > 0 else 0.0,
            "device": str(self.ctx.device),
            **self.precision.summary(),
            **self.strategy.summary(),
        }
        if self.ctx.is_main:
            write_json(self.out / "summary.json", summary)
            self.progress.message(
                f"done: val_acc {summary['val_acc']:.4f}  val_loss {summary['val_loss']:.4f}  "
                f"{summary['samples_per_s']:.0f} samples/s  {summary['wall_s']:.1f}s  -> {self.out}"
            )
        return summary
