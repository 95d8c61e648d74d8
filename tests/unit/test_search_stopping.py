"""Median stopping and ASHA stop the trials they should, and only those."""

from __future__ import annotations

import pytest

from escala.errors import UserError
from escala.search.stopping import ASHA, MedianStopping, make_stopper


def feed(stopper, trial, curve, start=1):
    """Report a learning curve; return the step at which the stopper said stop (None: never)."""
    for step, value in enumerate(curve, start=start):
        if stopper.on_report(trial, step, value):
            return step
    stopper.on_complete(trial)
    return None


def test_median_stops_a_trial_below_the_median_and_keeps_a_good_one():
    m = MedianStopping("max", grace_steps=2, min_trials=3)
    for t, level in enumerate([0.5, 0.6, 0.7]):
        assert feed(m, t, [level] * 5) is None  # too few others to compare with: nobody is stopped
    assert feed(m, 3, [0.1, 0.2, 0.3, 0.4, 0.5]) == 2  # worse than the median from the grace step on
    assert feed(m, 4, [0.4, 0.65, 0.8, 0.9, 0.9]) is None  # above the median of running averages


def test_median_respects_direction_and_grace():
    m = MedianStopping("min", grace_steps=3, min_trials=2)
    feed(m, 0, [1.0, 0.8, 0.6, 0.5])
    feed(m, 1, [1.0, 0.7, 0.6, 0.5])
    assert feed(m, 2, [5.0, 5.0, 5.0, 5.0]) == 3  # a loss far above the others, stopped after the grace
    assert feed(m, 3, [0.9, 0.5, 0.4, 0.3]) is None  # a lower loss is better when minimizing


def asha_run(order, eta=3):
    a = ASHA("max", min_steps=1, eta=eta, max_steps=27)
    return {t: feed(a, t, [t / 26 * s / 27 for s in range(1, 28)]) for t in order}, a


def test_asha_keeps_only_the_best_when_the_best_comes_first():
    stopped_at, a = asha_run(range(26, -1, -1))
    assert a.rungs == [1, 3, 9]
    assert [t for t, s in stopped_at.items() if s is None] == [26]
    assert all(s == 1 for t, s in stopped_at.items() if t != 26)  # each is worse than all recorded at rung 1


def test_asha_promotes_everything_that_improves_on_what_came_before():
    stopped_at, _ = asha_run(range(27))  # each trial better than all earlier ones: none is stopped
    assert all(s is None for s in stopped_at.values())


def test_asha_in_random_order_stops_the_weak_and_keeps_the_best():
    import random

    order = list(range(27))
    random.Random(0).shuffle(order)
    stopped_at, a = asha_run(order)
    survivors = [t for t, s in stopped_at.items() if s is None]
    stopped = [t for t, s in stopped_at.items() if s is not None]
    assert 26 in survivors and len(survivors) < 27 / 2
    assert sum(survivors) / len(survivors) > sum(stopped) / len(stopped) + 5
    # at rung 1, nobody is stopped while in the top third of what was recorded before it
    rung1 = []
    for t in order:
        if rung1:
            rank = sum(v > t / 26 / 27 for v in rung1) / len(rung1)
            if rank < 1 / 3 - 1e-9:
                assert stopped_at[t] != 1, t
        rung1.append(t / 26 / 27)


def test_asha_first_trial_at_a_rung_always_continues_and_a_worse_one_stops():
    a = ASHA("min", min_steps=2, eta=2)
    assert feed(a, 0, [0.9, 0.5, 0.4, 0.3]) is None
    assert feed(a, 1, [0.9, 0.8, 0.7]) == 2  # its loss at rung 2 is worse than trial 0's
    assert feed(a, 2, [0.9, 0.3, 0.2, 0.1]) is None


def test_asha_rungs_are_crossed_even_when_steps_skip_them():
    a = ASHA("max", min_steps=1, eta=2, max_steps=8)
    a.on_report(0, 1, 1.0)
    a.on_report(0, 5, 1.0)  # crosses rungs 2 and 4 at once
    assert a.passed[0] == 3
    assert a.on_report(1, 5, 0.0)


def test_make_stopper_names():
    assert make_stopper(None).name == "none" and make_stopper("asha", "min").sign == -1.0
    with pytest.raises(UserError, match="early stopping must be one of"):
        make_stopper("hyperband")
    with pytest.raises(UserError, match="eta > 1"):
        ASHA(eta=1)
