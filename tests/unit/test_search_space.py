"""Search spaces: parsing, sampling within bounds and types, the unit-cube encoding, the grid."""

from __future__ import annotations

import numpy as np
import pytest

from escala.errors import UserError
from escala.search.space import (
    Choice,
    Integer,
    Layers,
    LogUniform,
    Space,
    Uniform,
    integer,
    layers,
    loguniform,
    uniform,
)


def mixed_space():
    return Space(
        {
            "lr": loguniform(1e-4, 1e-1),
            "dropout": uniform(0.0, 0.5),
            "batch": integer(8, 128, log=True),
            "depth": integer(1, 4),
            "opt": ["sgd", "adamw"],
            "hidden": layers(1, 3, [16, 32, 64]),
            "epochs": 3,
            "shape": (1, 8, 8),
        }
    )


def test_kinds_of_entries():
    space = mixed_space()
    assert isinstance(space.dims["lr"], LogUniform) and isinstance(space.dims["opt"], Choice)
    assert isinstance(space.dims["batch"], Integer) and isinstance(space.dims["hidden"], Layers)
    assert space.constants == {"epochs": 3, "shape": [1, 8, 8]}  # a tuple is a constant, kept as a list
    assert space.ndim == 1 + 1 + 1 + 1 + 1 + (1 + 3)


def test_toml_tables_become_distributions():
    space = Space(
        {
            "lr": {"loguniform": [1e-3, 1.0]},
            "d": {"uniform": [0, 1]},
            "n": {"integer": [1, 9], "log": True},
            "c": {"choice": [1, 2]},
            "hidden": {"layers": [1, 2], "widths": [8, 16]},
            "fixed": [[64, 32]],
        }
    )
    assert isinstance(space.dims["lr"], LogUniform) and isinstance(space.dims["d"], Uniform)
    assert space.dims["n"].log and space.dims["c"].values == [1, 2]
    assert space.dims["hidden"].widths == [8, 16] and space.dims["fixed"].values == [[64, 32]]


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"x": []}, "at least one value"),
        ({"x": {"uniform": [1, 1]}}, "low < high"),
        ({"x": {"uniform": [2, 1]}}, "low < high"),
        ({"x": {"loguniform": [0, 1]}}, "> 0"),
        ({"x": {"integer": [1.5, 3]}}, "integers"),
        ({"x": {"normal": [0, 1]}}, "not a distribution"),
        ({"x": {"layers": [0, 2], "widths": [8]}}, "min_layers"),
    ],
)
def test_bad_spaces_are_one_line_errors(spec, words):
    with pytest.raises(UserError) as err:
        Space(spec)
    if words:
        assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_samples_have_declared_types_and_bounds():
    space = mixed_space()
    rng = np.random.default_rng(0)
    for _ in range(500):
        c = space.sample(rng)
        assert space.contains(c), c
        assert isinstance(c["batch"], int) and 8 <= c["batch"] <= 128
        assert 1e-4 <= c["lr"] <= 1e-1 and isinstance(c["lr"], float)
        assert c["opt"] in ("sgd", "adamw") and all(w in (16, 32, 64) for w in c["hidden"])


def test_loguniform_is_uniform_in_log_space():
    rng = np.random.default_rng(1)
    x = np.array([LogUniform(1e-4, 1.0).sample(rng) for _ in range(4000)])
    # a quarter of the log range per decade: each of the 4 decades gets about a quarter of the draws
    counts = np.histogram(np.log10(x), bins=[-4, -3, -2, -1, 0])[0] / len(x)
    assert np.all(np.abs(counts - 0.25) < 0.04), counts


def test_every_integer_and_choice_is_reachable():
    rng = np.random.default_rng(2)
    assert {Integer(1, 4).sample(rng) for _ in range(400)} == {1, 2, 3, 4}
    assert {tuple(Choice([[1], [2, 3], "a"]).sample(rng)) for _ in range(100)} == {(1,), (2, 3), ("a",)}


def test_decode_of_any_vector_stays_valid_and_encode_round_trips():
    space = mixed_space()
    rng = np.random.default_rng(3)
    for _ in range(300):
        v = rng.normal(0.5, 1.0, space.ndim)  # far outside the cube too
        c = space.decode(v)
        assert space.contains(c), c
        again = space.decode(space.encode(c))
        assert again["opt"] == c["opt"] and again["batch"] == c["batch"] and again["hidden"] == c["hidden"]
        assert again["lr"] == pytest.approx(c["lr"], rel=1e-9)


def test_mutations_stay_in_the_space():
    space = mixed_space()
    rng = np.random.default_rng(4)
    c = space.sample(rng)
    for _ in range(300):
        name = space.names[int(rng.integers(len(space.names)))]
        c = {**c, name: space.dims[name].mutate(c[name], rng)}
        assert space.contains(c), c


def test_grid_is_the_product_of_lists_in_loop_order():
    space = Space({"lr": [0.001, 0.005, 0.01], "dropout": [0.5, 0.6], "epochs": 2})
    grid = list(space.grid())
    assert space.grid_size() == 6 and len(grid) == 6
    assert grid[0] == {"epochs": 2, "lr": 0.001, "dropout": 0.5}
    assert grid[1] == {"epochs": 2, "lr": 0.001, "dropout": 0.6}
    assert len({(g["lr"], g["dropout"]) for g in grid}) == 6


def test_grid_refuses_sampled_dimensions():
    with pytest.raises(UserError, match="grid searcher needs lists only"):
        list(Space({"lr": loguniform(1e-3, 1e-1), "d": [1, 2]}).grid())
