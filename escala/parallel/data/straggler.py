"""A straggler simulator: chosen ranks sleep before handing in each step's gradient.

On one machine every worker runs at the same speed, so the benefit of backup workers (or the cost of
waiting for the slowest worker in an all-reduce) cannot be seen. ``--straggler-delay D`` makes the
ranks in ``--straggler-ranks`` (default: the last worker) sleep before every step's communication, for
``D`` seconds (``fixed``), an exponential time of mean ``D`` (the classic model of a slow machine:
Dean & Barroso 2013, "The Tail at Scale"), or a uniform time in ``[0, 2D]``. The draws depend only on
``(seed, rank, step)``, so a resumed run sleeps exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import random
import time

from escala.errors import UserError


def check_straggler(config) -> None:
    bad = [r for r in config.straggler_ranks if not 0 <= r < config.workers]
    if bad:
        raise UserError(
            f"field 'straggler_ranks' holds {bad}, but worker ranks run from 0 to {config.workers - 1}"
        )


class Straggler:
    def __init__(self, delay: float, dist: str, ranks: tuple[int, ...], rank: int, world: int, seed: int):
        self.mean = delay
        self.dist = dist
        self.seed = seed
        self.rank = rank
        self.active = delay > 0 and rank in (tuple(ranks) or (world - 1,))
        self.slept = 0.0

    @classmethod
    def from_config(cls, config, rank: int, world: int) -> Straggler:
        return cls(
            config.straggler_delay, config.straggler_dist, config.straggler_ranks, rank, world, config.seed
        )

    def delay(self, step: int) -> float:
        if not self.active:
            return 0.0
        if self.dist == "fixed":
            return self.mean
        rng = random.Random(f"{self.seed}:{self.rank}:{step}")
        if self.dist == "exponential":
            return rng.expovariate(1.0 / self.mean)
        return rng.uniform(0.0, 2.0 * self.mean)

    def wait(self, step: int) -> None:
        """Sleep this rank's delay for ``step`` (nothing on a rank that does not straggle)."""
        d = self.delay(step)
        if d > 0:
            time.sleep(d)
            self.slept += d
