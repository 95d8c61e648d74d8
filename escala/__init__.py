"""escala: train deep networks at scale on PyTorch.

``escala.train(model, dataset, config, **overrides)`` mirrors ``escala train``; see the README.
"""

from escala.config import TrainConfig
from escala.errors import UserError

# Bound after the subpackage import, so ``escala.train`` is the function, not the ``escala.train`` package.
from escala.train.launch import train

__version__ = "0.1.0"

__all__ = ["TrainConfig", "UserError", "__version__", "train"]
