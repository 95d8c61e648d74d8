"""The model-parallel forms as strategies of the one training loop (``--pipeline``, ``--tensor``,
``--spatial``), each composable with data-parallel replicas (``--workers``)."""

from escala.parallel.model.strategies.base import ModelParallel, average_gradients
from escala.parallel.model.strategies.pipeline import PipelineParallel
from escala.parallel.model.strategies.spatial import SpatialSplit
from escala.parallel.model.strategies.tensor import TensorParallel

MODEL_PARALLEL = {"pipeline": PipelineParallel, "tensor": TensorParallel, "spatial": SpatialSplit}

__all__ = ["MODEL_PARALLEL", "ModelParallel", "PipelineParallel", "SpatialSplit", "TensorParallel", "average_gradients"]
