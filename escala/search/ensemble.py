"""Ensembles: M trained members whose predictions are combined (Dietterich 2000; Lakshminarayanan et al. 2017).

Members are ``escala train`` runs (M seeds of one config, or the top-k configs of a study), trained
in parallel as the trials of a study. Their class probabilities combine by the mean
``p(y|x) = 1/M sum_m softmax(f_m(x))`` or by a majority vote of their argmaxes (ties broken by
the mean probability). Two ways to run inference, which must agree:

* intra-graph: members of one architecture become one batched computation, their parameters
  stacked along a new leading dimension (``torch.func.stack_module_state``) and the forward pass
  mapped over it (``torch.func.vmap`` of ``functional_call``), one kernel launch per layer for all M;
* inter-graph: one process per member (the foundation's :func:`~escala.runtime.spawn_workers`), each
  running its own model, the outputs gathered over the gloo process group.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from escala.checkpoint import load_checkpoint
from escala.errors import UserError


def load_member(run_dir: str | Path, input_shape, num_classes) -> nn.Module:
    """The model of a finished ``escala train`` run, rebuilt from its checkpoint's config and weights."""
    from escala.models import build_model

    ckpt = load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")
    cfg = ckpt["config"]
    model = build_model(
        cfg["model"], tuple(input_shape), num_classes, hidden=tuple(cfg["hidden"]), dropout=cfg["dropout"]
    )
    model.load_state_dict(ckpt["model"])
    return model.eval()


@torch.no_grad()
def member_probs(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Reference: each member on its own, probabilities stacked to ``[M, N, C]``."""
    return torch.stack([torch.softmax(m.eval()(x), dim=-1) for m in models])


@torch.no_grad()
def intra_graph_probs(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """All members in one vmapped forward pass: ``[M, N, C]`` probabilities."""
    from torch.func import functional_call, stack_module_state, vmap

    shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}
    if len(shapes) != 1:
        raise UserError("intra-graph ensembles need members of one architecture; use inter-graph inference")
    for m in models:
        m.eval()
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")  # a stateless skeleton; the weights come from params

    def forward(p, b, inputs):
        return torch.softmax(functional_call(base, (p, b), (inputs,)), dim=-1)

    return vmap(forward, in_dims=(0, 0, None))(params, buffers, x)


def _inter_worker(ctx, run_dirs, input_shape, num_classes, x, out_file) -> None:
    model = load_member(run_dirs[ctx.rank], input_shape, num_classes)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=-1)
    gathered = ctx.all_gather_object(probs)  # every member's output, over the process group
    if ctx.is_main:
        torch.save(torch.stack(gathered), out_file)


def inter_graph_probs(
    run_dirs: list[str | Path], x: torch.Tensor, input_shape, num_classes, timeout_s: float = 120
):
    """One process per member, outputs gathered to rank 0: ``[M, N, C]`` probabilities."""
    from escala.runtime import spawn_workers

    with tempfile.TemporaryDirectory() as tmp:
        out_file = str(Path(tmp) / "probs.pt")
        dirs = [str(d) for d in run_dirs]
        spawn_workers(
            _inter_worker,
            len(dirs),
            (dirs, tuple(input_shape), num_classes, x, out_file),
            options={"device": "cpu", "backend": "gloo", "timeout_s": timeout_s, "threads": 1},
        )
        return torch.load(out_file, weights_only=True)


def combine(probs: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Predicted classes from ``[M, N, C]`` member probabilities: mean of probabilities, or vote."""
    mean = probs.mean(dim=0)
    if how == "mean":
        return mean.argmax(dim=-1)
    if how == "vote":
        votes = torch.nn.functional.one_hot(probs.argmax(dim=-1), probs.shape[-1]).sum(dim=0).float()
        return (votes + 1e-3 * mean).argmax(
            dim=-1
        )  # a tie goes to the class with the higher mean probability
    raise UserError(f"ensemble combination must be 'mean' or 'vote', got {how!r}")


def evaluate(probs: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Accuracy of each member, of the mean and of the vote, and the gain over the best member."""
    members = [float((p.argmax(-1) == y).float().mean()) for p in probs]
    mean_acc = float((combine(probs, "mean") == y).float().mean())
    vote_acc = float((combine(probs, "vote") == y).float().mean())
    return {
        "members": len(members),
        "member_acc": members,
        "best_member_acc": max(members),
        "ensemble_acc": mean_acc,
        "vote_acc": vote_acc,
        "gain_over_best": mean_acc - max(members),
    }


def train_members(
    config: dict[str, Any],
    out: str | Path,
    seeds: list[int] | None = None,
    configs: list[dict] | None = None,
    parallel: int = 2,
) -> list[Path]:
    """Train members in parallel as the trials of a study: M seeds of ``config``, or the given ``configs``."""
    from escala.search.study import launch

    if configs is None:
        seeds = seeds if seeds is not None else [0, 1, 2]
        configs = [{"seed": s} for s in seeds]
    members = [{**config, **c} for c in configs]
    # one split for all, the one the ensemble is evaluated on: a member's seed changes its weights,
    # not which samples it trains on
    space = {"member": members, "data_seed": data_seed(config)}
    summary = launch(_member_trial, space, metric="val_acc", out=out, parallel=parallel)
    if summary["trials_failed"]:
        raise UserError(
            f"{summary['trials_failed']} ensemble member(s) failed to train; see escala search show {out}"
        )
    return sorted((Path(out) / "trials").iterdir())


def _member_trial(config, reporter):
    from escala.search.trainable import train_trial

    return train_trial(config["member"], reporter, data_seed=config["data_seed"])


def data_seed(config: dict[str, Any]) -> int:
    """The seed of the data split every member trains on (and the ensemble is evaluated on)."""
    return int(config.get("seed", 0))


def top_configs(study_dir: str | Path, k: int) -> list[dict[str, Any]]:
    """The configs of the ``k`` best completed trials of a study (to train them as an ensemble)."""
    from escala.search.store import read_study

    settings, trials = read_study(study_dir)
    done = [t for t in trials.values() if t.status == "completed"]
    done.sort(key=lambda t: t.value, reverse=settings.get("direction", "max") == "max")
    return [t.config for t in done[:k]]
