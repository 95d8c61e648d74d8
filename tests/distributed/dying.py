"""A test-only model that dies the way a crashed machine does, for the dead-worker tests."""

from __future__ import annotations

import os
import signal

import torch.distributed as dist
from torch import nn


class DiesOnRankOne(nn.Module):
    """Process 1 kills itself with SIGKILL at its ``at``-th forward pass (5th by default; evaluation
    passes count too): no exception, no goodbye, the process vanishes; the job must end with a
    message naming the rank, not hang."""

    def __init__(self, at: int = 5):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.calls = 0
        self.at = at

    def forward(self, x):
        self.calls += 1
        if self.training and dist.is_initialized() and dist.get_rank() == 1 and self.calls == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.fc(x.flatten(1))
