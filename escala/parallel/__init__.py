"""Ways to parallelise the one training loop. ``make_strategy`` picks one by its config name."""

from __future__ import annotations

from escala.config.schema import TrainConfig
from escala.errors import UserError
from escala.parallel.data.allreduce import AllReduce
from escala.parallel.strategy import Strategy

STRATEGIES: dict[str, type[Strategy]] = {"allreduce": AllReduce}


def make_strategy(config: TrainConfig) -> Strategy:
    try:
        cls = STRATEGIES[config.strategy]
    except KeyError:
        raise UserError(
            f"strategy '{config.strategy}' is unknown; choose one of {', '.join(STRATEGIES)}"
        ) from None
    return cls()


__all__ = ["STRATEGIES", "Strategy", "make_strategy"]
