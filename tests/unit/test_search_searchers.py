"""Searchers on functions whose optimum is known; bounds and types hold; replay is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from escala.errors import UserError
from escala.search.searchers import make_searcher
from escala.search.space import Space, config_key, integer, layers, uniform


def optimize(searcher, f, n, batch=1):
    """Ask up to ``batch`` configs at a time (as parallel workers would), then tell their values."""
    seen, tid = [], 0
    while tid < n:
        asked = []
        while len(asked) < batch and tid < n:
            c = searcher.ask(tid)
            if c is None:
                break
            asked.append((tid, c))
            tid += 1
        if not asked:
            break
        for t, c in asked:
            seen.append(c)
            searcher.tell(t, f(c))
    return seen


def mixed(c):
    """Maximum 1.0 at x = 1.5, n = 7, c = 'b'."""
    return -((c["x"] - 1.5) ** 2) - (c["n"] - 7) ** 2 / 10 + (1.0 if c["c"] == "b" else 0.0)


MIXED = {"x": uniform(-5, 5), "n": integer(0, 20), "c": ["a", "b", "c"], "fixed": 3}


def check_types(space, configs):
    for c in configs:
        assert space.contains(c), c
        assert isinstance(c["n"], int) and isinstance(c["x"], float) and c["fixed"] == 3


def test_grid_visits_every_point_once_and_finds_the_best():
    s = make_searcher("grid", {"a": [1, 2, 3], "b": [10, 20]}, "min")
    seen = optimize(s, lambda c: abs(c["a"] - 2) + abs(c["b"] - 20), 100)
    assert len(seen) == 6 and len({config_key(c) for c in seen}) == 6 and s.finished
    assert s.best() == ({"a": 2, "b": 20}, 0)


def test_random_finds_a_one_dimensional_optimum():
    s = make_searcher("random", {"x": uniform(-1, 1)}, "min", seed=0)
    optimize(s, lambda c: (c["x"] - 0.3) ** 2, 200)
    assert abs(s.best()[0]["x"] - 0.3) < 0.02


def test_ga_respects_types_and_finds_the_mixed_optimum():
    space = Space(MIXED)
    s = make_searcher("ga", space, "max", seed=1, popsize=12, mutation=0.3)
    seen = optimize(s, mixed, 240, batch=4)
    check_types(space, seen)
    best, value = s.best()
    assert best["c"] == "b" and abs(best["n"] - 7) <= 1 and abs(best["x"] - 1.5) < 0.4, best
    assert value > 0.8
    assert s.generation >= 10
    # selection works: the last generation is far better on average than the random first one
    first, last = [mixed(c) for c in seen[:12]], [mixed(c) for c in seen[-11:]]
    assert np.mean(last) > np.mean(first) + 1.0


def test_ga_waits_for_its_generation():
    s = make_searcher("ga", {"x": uniform(0, 1)}, popsize=3)
    assert all(s.ask(i) is not None for i in range(3))
    assert s.ask(3) is None  # the next generation needs the first one's results
    for i in range(3):
        s.tell(i, float(i))
    assert s.ask(3) is not None


def test_de_minimizes_a_sphere_within_bounds():
    space = Space({f"x{i}": uniform(-5, 5) for i in range(4)})
    s = make_searcher("de", space, "min", seed=0, popsize=12, mutation=0.6, crossover=0.9)
    seen = optimize(s, lambda c: sum(v**2 for v in c.values()), 12 * 40, batch=5)
    check = [all(-5 <= v <= 5 for v in c.values()) for c in seen]
    assert all(check)
    assert s.best()[1] < 0.05, s.best()


def test_de_respects_types_on_a_mixed_space():
    space = Space(MIXED)
    s = make_searcher("de", space, "max", seed=2, popsize=10)
    seen = optimize(s, mixed, 200, batch=3)
    check_types(space, seen)
    assert s.best()[0]["c"] == "b" and abs(s.best()[0]["n"] - 7) <= 1


def test_de_keeps_a_member_until_a_trial_beats_it():
    s = make_searcher("de", {"x": uniform(0, 1)}, "max", popsize=4)
    for i in range(4):
        s.ask(i)
        s.tell(i, 1.0)
    before = s.pop.copy()
    for i in range(4, 8):
        s.ask(i)
        s.tell(i, 0.0)  # every trial vector is worse: the population must not change
    assert np.array_equal(s.pop, before)


def test_regularized_evolution_finds_an_architecture():
    target = [64, 16, 32]

    def fit(c):  # best: exactly the target widths, depth 3
        h = c["hidden"]
        return -abs(len(h) - 3) * 50 - sum(abs(a - b) for a, b in zip(h, target)) - c["d"]

    space = Space({"hidden": layers(1, 4, [8, 16, 32, 64, 128]), "d": integer(0, 10)})
    evo, rnd, exact = [], [], 0
    for seed in range(6):  # a statistical property: over seeds, evolution beats random at equal budget
        s = make_searcher("evolution", space, "max", seed=seed, population=10, sample=3)
        seen = optimize(s, fit, 300, batch=2)
        assert all(space.contains(c) for c in seen)
        exact += s.best()[0] == {"hidden": target, "d": 0}
        evo.append(s.best()[1])
        r = make_searcher("random", space, "max", seed=seed)
        optimize(r, fit, 300, batch=2)
        rnd.append(r.best()[1])
    assert exact >= 4, evo
    assert np.mean(evo) > np.mean(rnd) + 3, (evo, rnd)
    assert len(s.members) == 10  # aging keeps the population at its size


def test_evolution_children_differ_from_their_parent_in_one_parameter():
    space = Space({"a": integer(0, 100), "b": integer(0, 100), "c": integer(0, 100)})
    s = make_searcher("evolution", space, seed=3, population=2, sample=2)
    p0, p1 = s.ask(0), s.ask(1)
    s.tell(0, 1.0)
    s.tell(1, 0.0)
    child = s.ask(2)
    assert sum(child[k] != p0[k] for k in "abc") == 1 or sum(child[k] != p1[k] for k in "abc") == 1


@pytest.mark.parametrize("name", ["random", "ga", "de", "evolution"])
def test_same_seed_and_history_give_the_same_proposals(name):
    def run():
        s = make_searcher(name, Space(MIXED), seed=7, **({"popsize": 4} if name in ("ga", "de") else {}))
        return [config_key(c) for c in optimize(s, mixed, 30, batch=2)]

    assert run() == run()


def test_unknown_searcher_and_bad_options_are_user_errors():
    with pytest.raises(UserError, match="searcher must be one of"):
        make_searcher("tpe", {"x": [1]})
    with pytest.raises(UserError, match="popsize must be >= 4"):
        make_searcher("de", {"x": uniform(0, 1)}, popsize=3)
    with pytest.raises(UserError, match="unexpected keyword"):
        make_searcher("random", {"x": [1]}, popsize=3)
