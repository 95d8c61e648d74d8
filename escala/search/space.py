"""Search spaces: a dict where a list is a choice (a grid axis) and distribution objects are sampled.

``{"lr": loguniform(1e-4, 1e-1), "dropout": [0.5, 0.6], "epochs": 3}`` holds one sampled dimension,
one choice and one constant (anything that is neither a list nor a distribution; a tuple is a
constant too, so ``"hidden": (128, 64)`` stays fixed while ``"hidden": [[64], [128, 64]]`` chooses).

Every dimension also maps its values to and from the unit cube ``[0, 1]^d`` so that searchers that
work on vectors (differential evolution, the mutation of the genetic algorithm) handle mixed
continuous/integer/categorical spaces uniformly: continuous values map linearly (or in log space),
integers map like continuous ones and are rounded on the way back, and a choice among ``k`` values
owns the ``k`` equal buckets of ``[0, 1)``. Decoding always returns a value of the declared type
inside the declared bounds, whatever vector a searcher produced.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from escala.errors import UserError


def normalize(value: Any) -> Any:
    """JSON-shaped value: tuples become lists, numpy scalars become Python numbers."""
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def config_key(config: Mapping[str, Any]) -> str:
    """A canonical string for a config, equal for equal configs (used to spot duplicates)."""
    return json.dumps(normalize(dict(config)), sort_keys=True)


class Dimension:
    """One searched parameter: sample it, map it to/from ``dims`` unit coordinates, perturb it."""

    dims = 1

    def sample(self, rng: np.random.Generator) -> Any:
        return self.decode(rng.random(self.dims))

    def encode(self, value: Any) -> list[float]:
        raise NotImplementedError

    def decode(self, u) -> Any:
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        raise NotImplementedError

    def mutate(self, value: Any, rng: np.random.Generator, scale: float = 0.2) -> Any:
        """A nearby value: a Gaussian step of ``scale`` in unit coordinates, clipped to the bounds."""
        u = np.clip(np.asarray(self.encode(value)) + rng.normal(0.0, scale, self.dims), 0.0, 1.0)
        return self.decode(u)


class Uniform(Dimension):
    """A float drawn uniformly from ``[low, high]``."""

    def __init__(self, low: float, high: float):
        low, high = _bounds(self, low, high)
        self.low, self.high = float(low), float(high)

    def _fwd(self, x: float) -> float:
        return x

    def _inv(self, x: float) -> float:
        return x

    def encode(self, value):
        lo, hi = self._fwd(self.low), self._fwd(self.high)
        return [float((self._fwd(float(value)) - lo) / (hi - lo))]

    def decode(self, u):
        lo, hi = self._fwd(self.low), self._fwd(self.high)
        x = self._inv(lo + float(np.clip(u[0], 0.0, 1.0)) * (hi - lo))
        return min(max(x, self.low), self.high)  # exp(log(x)) may land a hair outside

    def contains(self, value):
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high
        )

    def __repr__(self):
        return f"{type(self).__name__.lower()}({self.low:g}, {self.high:g})"


class LogUniform(Uniform):
    """A float whose logarithm is uniform on ``[log low, log high]`` (learning rates, decays)."""

    def __init__(self, low: float, high: float):
        super().__init__(low, high)
        if self.low <= 0:
            raise UserError(f"loguniform({low}, {high}): the low bound must be > 0")

    def _fwd(self, x):
        return math.log(x)

    def _inv(self, x):
        return math.exp(x)


class Integer(Dimension):
    """An integer in ``[low, high]`` (both included), uniform or log-uniform."""

    def __init__(self, low: int, high: int, log: bool = False):
        if any(isinstance(v, bool) or not float(v).is_integer() for v in (low, high)):
            raise UserError(f"integer({low}, {high}): the bounds must be integers")
        low, high = _bounds(self, int(low), int(high))
        if log and low <= 0:
            raise UserError(f"integer({low}, {high}, log=true): the low bound must be > 0")
        self.low, self.high, self.log = int(low), int(high), bool(log)

    def _span(self):
        # Each integer owns an equal slice of the line: [low - 0.5, high + 0.5] (or its logarithm).
        lo, hi = self.low - 0.5, self.high + 0.5
        if self.log:
            lo, hi = math.log(max(self.low - 0.5, 0.5 * self.low)), math.log(self.high + 0.5)
        return lo, hi

    def encode(self, value):
        lo, hi = self._span()
        x = math.log(value) if self.log else float(value)
        return [float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))]

    def decode(self, u):
        lo, hi = self._span()
        x = lo + float(np.clip(u[0], 0.0, 1.0)) * (hi - lo)
        x = math.exp(x) if self.log else x
        return int(min(max(round(x), self.low), self.high))

    def contains(self, value):
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def __repr__(self):
        return f"integer({self.low}, {self.high}{', log=True' if self.log else ''})"


class Choice(Dimension):
    """One of a list of values; a grid axis for the grid searcher."""

    def __init__(self, values):
        values = [normalize(v) for v in values]
        if not values:
            raise UserError("a choice (list) in the space must hold at least one value")
        self.values = values

    def encode(self, value):
        i = self.index(value)
        return [(i + 0.5) / len(self.values)]

    def decode(self, u):
        k = len(self.values)
        return self.values[min(int(float(np.clip(u[0], 0.0, 1.0)) * k), k - 1)]

    def index(self, value) -> int:
        return self.values.index(normalize(value))

    def contains(self, value):
        return normalize(value) in self.values

    def mutate(self, value, rng, scale=0.2):
        """Categories have no neighbours: another value, drawn uniformly."""
        if len(self.values) == 1:
            return self.values[0]
        others = [v for v in self.values if v != normalize(value)]
        return others[int(rng.integers(len(others)))]

    def __repr__(self):
        return f"choice({self.values})"


class Layers(Dimension):
    """An architecture: between ``min_layers`` and ``max_layers`` hidden layers, each width from ``widths``.

    The value is a list of widths (what ``escala train``'s ``hidden`` field takes). Mutation is the
    one of regularized evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
    Architecture Search"): add a layer, remove a layer, or change one layer's width.
    """

    def __init__(self, min_layers: int, max_layers: int, widths):
        if int(min_layers) < 1 or int(max_layers) < int(min_layers):
            raise UserError(f"layers({min_layers}, {max_layers}): need 1 <= min_layers <= max_layers")
        widths = sorted({int(w) for w in widths})
        if not widths or widths[0] < 1:
            raise UserError(f"layers: widths must be a non-empty list of integers >= 1, got {widths}")
        self.min_layers, self.max_layers, self.widths = int(min_layers), int(max_layers), widths
        self.count = Integer(self.min_layers, self.max_layers) if max_layers > min_layers else None
        self.width = Choice(widths)
        self.dims = 1 + self.max_layers  # the depth, then one width slot per possible layer

    def encode(self, value):
        n = len(value)
        depth = self.count.encode(n) if self.count else [0.5]
        slots = [self.width.encode(w)[0] for w in value] + [0.5] * (self.max_layers - n)
        return depth + slots

    def decode(self, u):
        n = self.count.decode(u[:1]) if self.count else self.min_layers
        return [self.width.decode(u[1 + i : 2 + i]) for i in range(n)]

    def contains(self, value):
        return (
            isinstance(value, (list, tuple))
            and self.min_layers <= len(value) <= self.max_layers
            and all(w in self.widths for w in value)
        )

    def mutate(self, value, rng, scale=0.2):
        value = list(value)
        moves = ["width"]
        if len(value) < self.max_layers:
            moves.append("add")
        if len(value) > self.min_layers:
            moves.append("remove")
        move = moves[int(rng.integers(len(moves)))]
        if move == "add":
            value.insert(int(rng.integers(len(value) + 1)), self.width.sample(rng))
        elif move == "remove":
            del value[int(rng.integers(len(value)))]
        else:
            i = int(rng.integers(len(value)))
            value[i] = self.width.mutate(value[i], rng)
        return value

    def __repr__(self):
        return f"layers({self.min_layers}, {self.max_layers}, widths={self.widths})"


def _bounds(dim, low, high):
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{type(dim).__name__.lower()}({low}, {high}): bounds must be finite numbers")
    if not low < high:
        raise UserError(f"{type(dim).__name__.lower()}({low}, {high}): need low < high")
    return low, high


def uniform(low: float, high: float) -> Uniform:
    return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
    return LogUniform(low, high)


def integer(low: int, high: int, log: bool = False) -> Integer:
    return Integer(low, high, log)


def choice(values) -> Choice:
    return Choice(values)


def layers(min_layers: int, max_layers: int, widths) -> Layers:
    return Layers(min_layers, max_layers, widths)


_TABLE_KINDS = {"uniform": Uniform, "loguniform": LogUniform, "integer": Integer, "choice": Choice}


def _from_table(name: str, table: Mapping[str, Any]) -> Dimension:
    """A distribution written as a TOML inline table: ``{loguniform = [1e-4, 0.1]}``, ``{layers = [1, 3], widths = [32, 64]}``."""
    keys = set(table)
    try:
        if "layers" in keys and keys <= {"layers", "widths"}:
            lo, hi = table["layers"]
            return Layers(lo, hi, table.get("widths", ()))
        if "integer" in keys and keys <= {"integer", "log"}:
            lo, hi = table["integer"]
            return Integer(lo, hi, bool(table.get("log", False)))
        if len(keys) == 1 and (kind := next(iter(keys))) in _TABLE_KINDS:
            if kind == "choice":
                return Choice(table[kind])
            lo, hi = table[kind]
            return _TABLE_KINDS[kind](lo, hi)
    except (TypeError, ValueError):
        pass
    except UserError as err:
        raise UserError(f"space parameter '{name}': {err}") from None
    raise UserError(
        f"space parameter '{name}': {dict(table)!r} is not a distribution; write "
        "{uniform = [LOW, HIGH]}, {loguniform = [LOW, HIGH]}, {integer = [LOW, HIGH]} (optionally log = true), "
        "{choice = [...]} or {layers = [MIN, MAX], widths = [...]}"
    )


class Space:
    """Named dimensions plus constants; configs are plain dicts holding both."""

    def __init__(self, spec: Mapping[str, Any]):
        if isinstance(spec, Space):
            spec = {**spec.dims, **spec.constants}
        if not isinstance(spec, Mapping):
            raise UserError(
                f"a search space must be a dict of parameter -> values, got {type(spec).__name__}"
            )
        self.dims: dict[str, Dimension] = {}
        self.constants: dict[str, Any] = {}
        for name, value in spec.items():
            if not isinstance(name, str) or not name:
                raise UserError(f"search space keys must be non-empty strings, got {name!r}")
            if isinstance(value, Dimension):
                self.dims[name] = value
            elif isinstance(value, list):
                try:
                    self.dims[name] = Choice(value)
                except UserError as err:
                    raise UserError(f"space parameter '{name}': {err}") from None
            elif isinstance(value, Mapping):
                self.dims[name] = _from_table(name, value)
            else:
                self.constants[name] = normalize(value)
        self.names = list(self.dims)
        self.offsets = np.cumsum([0] + [d.dims for d in self.dims.values()]).tolist()

    @property
    def ndim(self) -> int:
        """Length of the unit-cube vector of a config."""
        return self.offsets[-1]

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {**self.constants, **{n: d.sample(rng) for n, d in self.dims.items()}}

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        return np.array([u for n, d in self.dims.items() for u in d.encode(config[n])], dtype=float)

    def decode(self, vector) -> dict[str, Any]:
        vector = np.asarray(vector, dtype=float)
        out = dict(self.constants)
        for i, (name, dim) in enumerate(self.dims.items()):
            out[name] = dim.decode(vector[self.offsets[i] : self.offsets[i + 1]])
        return out

    def contains(self, config: Mapping[str, Any]) -> bool:
        return all(d.contains(config.get(n)) for n, d in self.dims.items()) and all(
            normalize(config.get(k)) == v for k, v in self.constants.items()
        )

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every combination of the choices, the last key varying fastest (as nested for-loops would)."""
        sampled = [n for n, d in self.dims.items() if not isinstance(d, Choice)]
        if sampled:
            raise UserError(
                f"the grid searcher needs lists only; {', '.join(f'{n!r} is {self.dims[n]!r}' for n in sampled)} "
                "(use --searcher random, or give a list of values)"
            )
        axes = [self.dims[n].values for n in self.names]
        for combo in itertools.product(*axes):
            yield {**self.constants, **dict(zip(self.names, combo))}

    def grid_size(self) -> int:
        return math.prod(len(d.values) for d in self.dims.values() if isinstance(d, Choice))

    def __repr__(self):
        return f"Space({ {**self.dims, **self.constants} })"
