"""Model parallelism: split one model over processes.

* :mod:`.pipeline`: layer pipeline with micro-batches (GPipe, 1F1B) on ``torch.distributed.pipelining``;
* :mod:`.tensor`: Megatron column/row-parallel Linear pairs on DTensor;
* :mod:`.spatial`: convolutions split by rows with halo exchange (c10d send/recv);
* :mod:`.recurrent`: a stacked LSTM, layers over processes, pipelined over time steps;
* :mod:`.layout`: which process holds which part of which replica;
* :mod:`.strategies`: the pipeline (layers over micro-batches, or LSTM layers over time steps), tensor
  and spatial forms as strategies of the one training loop.
"""
