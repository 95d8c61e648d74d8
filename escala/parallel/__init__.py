"""Ways to parallelise the one training loop. ``make_strategy`` picks one by its config name."""

from __future__ import annotations

from escala.config.schema import TrainConfig
from escala.errors import UserError
from escala.parallel.data.allreduce import AllReduce
from escala.parallel.data.backup import Backup
from escala.parallel.data.hogwild import Hogwild
from escala.parallel.data.localsgd import LocalSGD
from escala.parallel.data.paramserver import ParamServer
from escala.parallel.model.layout import layout_from_config
from escala.parallel.model.strategies import MODEL_PARALLEL, RECURRENT_PIPELINE
from escala.parallel.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    "allreduce": AllReduce,
    "backup": Backup,
    "hogwild": Hogwild,
    "localsgd": LocalSGD,
    "paramserver": ParamServer,
}


def strategy_class(config: TrainConfig) -> type[Strategy]:
    """The strategy ``config`` names; a split model (``--pipeline``/``--tensor``/``--spatial``) brings
    its own, whose replicas average gradients like ``allreduce``."""
    layout = layout_from_config(config)
    if layout.kind == "pipeline" and config.model in RECURRENT_PIPELINE:  # pipelined over time steps
        return RECURRENT_PIPELINE[config.model]
    if layout.kind is not None:
        return MODEL_PARALLEL[layout.kind]
    try:
        return STRATEGIES[config.strategy]
    except KeyError:
        raise UserError(
            f"strategy '{config.strategy}' is unknown; choose one of {', '.join(STRATEGIES)}"
        ) from None


def make_strategy(config: TrainConfig) -> Strategy:
    cls = strategy_class(config)
    cls.check(config)
    return cls(config)


__all__ = ["STRATEGIES", "Strategy", "make_strategy", "strategy_class"]
