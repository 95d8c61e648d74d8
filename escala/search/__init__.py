"""Inter-model parallelism: hyperparameter and architecture search, ensembles, evolution strategies.

``launch(train, space)`` / ``evolutionary_search(train, space, ...)`` run a study; spaces are dicts
whose lists are choices and whose :func:`uniform` / :func:`loguniform` / :func:`integer` /
:func:`layers` entries are sampled.
"""

from escala.search.executors.base import Reporter, TrialStopped
from escala.search.space import Space, choice, integer, layers, loguniform, uniform
from escala.search.study import evolutionary_search, launch, run_study

__all__ = [
    "Reporter",
    "Space",
    "TrialStopped",
    "choice",
    "evolutionary_search",
    "integer",
    "launch",
    "layers",
    "loguniform",
    "run_study",
    "uniform",
]
