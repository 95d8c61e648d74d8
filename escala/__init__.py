"""escala: train deep networks at scale on PyTorch.

``escala.train(model, dataset, config)`` mirrors ``escala train``; see the README for the catalogue.
"""

from escala.config import TrainConfig
from escala.errors import UserError

__version__ = "0.1.0"


def train(*args, **kwargs):
    """Train a model; see :func:`escala.train.launch.train` (imported lazily to keep ``import escala`` light)."""
    from escala.train.launch import train as _train

    return _train(*args, **kwargs)


__all__ = ["TrainConfig", "UserError", "__version__", "train"]
