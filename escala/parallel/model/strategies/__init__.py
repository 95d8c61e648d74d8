"""The model-parallel forms as strategies of the one training loop (``--pipeline``, ``--tensor``,
``--spatial``), each composable with data-parallel replicas (``--workers``)."""

from escala.parallel.model.strategies.base import ModelParallel, average_gradients
from escala.parallel.model.strategies.pipeline import PipelineParallel
from escala.parallel.model.strategies.recurrent import RecurrentPipeline
from escala.parallel.model.strategies.spatial import SpatialSplit
from escala.parallel.model.strategies.tensor import TensorParallel

MODEL_PARALLEL = {"pipeline": PipelineParallel, "tensor": TensorParallel, "spatial": SpatialSplit}
# Recurrent zoo models pipeline over time steps instead of micro-batches.
RECURRENT_PIPELINE = {"lstm": RecurrentPipeline}

__all__ = [
    "MODEL_PARALLEL",
    "RECURRENT_PIPELINE",
    "ModelParallel",
    "PipelineParallel",
    "RecurrentPipeline",
    "SpatialSplit",
    "TensorParallel",
    "average_gradients",
]
