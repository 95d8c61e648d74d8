"""Pipeline parallelism: cut a sequential model into stages, one per process, and stream micro-batches.

* :mod:`.partition`: balanced (by parameters or measured time) or explicit cuts;
* :mod:`.schedule`: GPipe and 1F1B as explicit action lists, their bubble and stash in theory;
* :mod:`.engine`: one stage on this process, run by ``torch.distributed.pipelining``, with the
  bubble measured.
"""

from escala.parallel.model.pipeline.engine import PipelineStageRunner, pipeline_bubble
from escala.parallel.model.pipeline.partition import balance, layer_param_costs, layer_time_costs, partition
from escala.parallel.model.pipeline.schedule import (
    SCHEDULES,
    gpipe,
    one_f_one_b,
    schedule,
    simulate,
    theoretical_bubble,
)

__all__ = [
    "SCHEDULES",
    "PipelineStageRunner",
    "balance",
    "gpipe",
    "layer_param_costs",
    "layer_time_costs",
    "one_f_one_b",
    "partition",
    "pipeline_bubble",
    "schedule",
    "simulate",
    "theoretical_bubble",
]
