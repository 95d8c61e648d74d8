"""What ``escala compress`` does: a recipe from flags and/or a TOML file, checked before any work.

Every field below is a flag (``--share-bits 5``) and a TOML key (``share_bits = 5``, at top level or
in a ``[compress]`` table). Per-layer settings are tables in TOML (``prune_per_layer = {fc1 = 0.92}``)
and ``name=value`` lists on the command line (``--prune-per-layer fc1=0.92,fc3=0.75``). The steps run
in the order distill -> structured pruning -> pruning (rounds) -> weight sharing -> file (Huffman) ->
int8. Layer names are checked against the model by :func:`check_against_model`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from escala.compress.share import check_bits
from escala.compress.targets import check_layer_keys, select_layers
from escala.config.load import merge_layers, read_toml
from escala.errors import UserError

INT8 = ("none", "dynamic", "static", "qat")


def _f(default, help: str, **meta):
    meta["help"] = help
    if isinstance(default, (dict, tuple)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Recipe:
    """The steps of one compression run and their settings."""

    # -- pruning (Han et al. 2015) -------------------------------------------------------------------
    prune: float = _f(
        0.0, "target sparsity: fraction of each layer's weights removed (0: no pruning)", min=0.0
    )
    prune_quality: float = _f(
        0.0, "prune |w| <= quality x std(W) per layer instead of a target sparsity", min=0.0
    )
    prune_per_layer: dict = _f({}, "per-layer sparsity overriding --prune, e.g. fc1=0.92,fc3=0.75")
    prune_layers: tuple = _f((), "layers to prune and share (default: every Linear/Conv layer)")
    prune_rounds: int = _f(1, "iterative prune-retrain rounds reaching the target sparsity", min=1)
    structured: float = _f(
        0.0, "fraction of neurons/channels removed from each hidden layer (thinning)", min=0.0
    )
    retrain_epochs: int = _f(4, "epochs of retraining after each pruning round", min=0)
    retrain_lr: float = _f(0.0, "learning rate of retraining (0: the checkpoint's lr / 10)", min=0.0)
    retrain_distill: bool = _f(
        False,
        "retrain pruned/shared models on the original model's soft targets (--temperature, --alpha)",
    )

    # -- weight sharing (Deep Compression) -----------------------------------------------------------
    share_bits: int = _f(0, "k-means weight sharing to 2^bits values per layer, 1-16 (0: off)", min=0)
    share_bits_per_layer: dict = _f({}, "per-layer bits overriding --share-bits, e.g. conv1=8")
    share_epochs: int = _f(2, "epochs of centroid fine-tuning after clustering", min=0)
    share_lr: float = _f(0.0, "learning rate of centroid fine-tuning (0: the checkpoint's lr / 10)", min=0.0)

    # -- storage -------------------------------------------------------------------------------------
    huffman: bool = _f(False, "Huffman-code the weight indices and sparse-index gaps in the file")
    index_bits: int = _f(
        5, "bits of the relative sparse index (gap to the previous weight); 0: best width per layer", min=0
    )
    index_bits_per_layer: dict = _f({}, "per-layer index bits overriding --index-bits, e.g. fc1=6,fc2=5")

    # -- int8 (torch.ao) -----------------------------------------------------------------------------
    int8: str = _f("none", "int8 inference model via torch.ao", choices=INT8)
    qat_epochs: int = _f(2, "epochs of quantization-aware training (--int8 qat)", min=0)
    calibration_batches: int = _f(8, "batches of training data to calibrate static int8", min=1)

    # -- distillation (Hinton et al. 2015; Bucilua et al. 2006) -------------------------------------
    distill_from: tuple = _f(
        (), "teacher checkpoint(s); several form an ensemble; the --checkpoint is the student"
    )
    temperature: float = _f(4.0, "softmax temperature of the soft targets", min=1.0)
    alpha: float = _f(0.9, "weight of the soft targets against the true label on real samples", min=0.0)
    distill_epochs: int = _f(20, "epochs of student training", min=1)
    distill_lr: float = _f(0.0, "learning rate of student training (0: the checkpoint's lr)", min=0.0)
    distill_fraction: float = _f(1.0, "fraction of the training set used as transfer data", min=0.0)
    munge_samples: int = _f(0, "synthetic MUNGE samples labelled by the teacher (0: none)", min=0)
    munge_p: float = _f(0.5, "MUNGE: probability of resampling each attribute", min=0.0)
    munge_s: float = _f(1.0, "MUNGE: local spread divisor s (sd = |e - e'| / s)", min=0.0)
    distill_reinit: bool = _f(False, "start the student from fresh weights instead of the checkpoint's")

    # -- run -----------------------------------------------------------------------------------------
    workers: int = _f(1, "worker processes for every retraining step", min=1)
    speed: bool = _f(True, "measure CPU latency of the dense, sparse (CSR), thinned and int8 models")
    seed: int = _f(0, "random seed (k-means, MUNGE, subsets)")
    overwrite: bool = _f(False, "replace the results already in --out")
    progress: str = _f(
        "none", "progress display of retraining steps", choices=("auto", "bar", "plain", "none")
    )

    def steps(self) -> list[str]:
        out = []
        if self.distill_from:
            out.append("distill")
        if self.structured > 0:
            out.append("structured")
        if self.prune > 0 or self.prune_quality > 0 or self.prune_per_layer:
            out.append("prune")
        if self.share_bits > 0 or self.share_bits_per_layer:
            out.append("share")
        if self.huffman:
            out.append("huffman")
        if self.int8 != "none":
            out.append("int8")
        return out


FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


def _per_layer(name: str, value: Any, kind: type, source: str | None) -> dict[str, Any]:
    where = f"{source}: " if source else ""
    if isinstance(value, str):
        pairs = {}
        for item in filter(None, (p.strip() for p in value.split(","))):
            layer, sep, number = item.partition("=")
            if not sep or not layer.strip():
                raise UserError(f"{where}field '{name}' wants layer=value pairs, e.g. fc1=0.9; got {item!r}")
            pairs[layer.strip()] = number.strip()
        value = pairs
    if not isinstance(value, dict):
        raise UserError(f"{where}field '{name}' must be a table of layer = value, got {value!r}")
    out = {}
    for layer, v in value.items():
        try:
            if isinstance(v, bool) or (kind is int and isinstance(v, float)):
                raise ValueError
            out[str(layer)] = kind(v)
        except (TypeError, ValueError):
            raise UserError(
                f"{where}field '{name}' value for {layer!r} must be a {kind.__name__}, got {v!r}"
            ) from None
    return out


def coerce(name: str, value: Any, source: str | None = None) -> Any:
    spec = FIELDS[name]
    kind = typing.get_type_hints(Recipe)[name]
    where = f"{source}: " if source else ""
    try:
        if kind is dict:
            result = _per_layer(name, value, float if name == "prune_per_layer" else int, source)
        elif kind is tuple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise ValueError
            result = tuple(str(v).strip() for v in items if str(v).strip())
        elif kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError
            result = value
        elif kind is int:
            if isinstance(value, (bool, float)):
                raise ValueError
            result = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError
            result = value
    except (TypeError, ValueError):
        wanted = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
            kind, "a comma-separated list"
        )
        raise UserError(f"{where}field '{name}' must be {wanted}, got {value!r}") from None
    if spec.metadata.get("choices") and result not in spec.metadata["choices"]:
        raise UserError(
            f"{where}field '{name}' must be one of {', '.join(spec.metadata['choices'])}; got {result!r}"
        )
    low = spec.metadata.get("min")
    if low is not None and not isinstance(result, (dict, tuple)) and result < low:
        raise UserError(f"{where}field '{name}' must be >= {low}, got {value!r}")
    return result


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    return read_toml(path, table="compress", kind="recipe")


def _unknown_recipe_key(key: str, source: str | None) -> UserError:
    close = difflib.get_close_matches(key.replace("-", "_"), list(FIELDS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserError(f"{source + ': ' if source else ''}unknown recipe key '{key}'{hint}")


def build_recipe(file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Defaults < TOML ``file`` < ``overrides`` (flags), every value checked; see :func:`check`."""
    file_values = read_recipe_file(file) if file is not None else None
    source = str(file) if file is not None else None
    values = merge_layers({}, file_values, source, overrides, FIELDS, coerce, _unknown_recipe_key)
    recipe = Recipe(**values)
    check(recipe)
    return recipe


def check(r: Recipe) -> None:
    """Rules that do not need the model."""
    if r.share_bits:
        check_bits(r.share_bits, "share_bits")
    for layer, bits in r.share_bits_per_layer.items():
        check_bits(bits, f"share_bits_per_layer[{layer}]")
    for name, value in [
        ("prune", r.prune),
        *((f"prune_per_layer[{k}]", v) for k, v in r.prune_per_layer.items()),
    ]:
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} is a fraction of weights to remove; it must be in [0, 1), got {value}")
    if r.prune and r.prune_quality:
        raise UserError("prune and prune_quality exclude each other: give a target sparsity or a quality")
    if not 0.0 <= r.structured < 1.0:
        raise UserError(f"structured must be in [0, 1), got {r.structured}")
    for name, value in [
        ("index_bits", r.index_bits),
        *((f"index_bits_per_layer[{k}]", v) for k, v in r.index_bits_per_layer.items()),
    ]:
        if not 0 <= value <= 16:
            raise UserError(f"{name} must be between 1 and 16 (0: chosen per layer), got {value}")
    if not 0.0 <= r.alpha <= 1.0:
        raise UserError(f"alpha must be in [0, 1], got {r.alpha}")
    if not 0.0 < r.distill_fraction <= 1.0:
        raise UserError(f"distill_fraction must be in (0, 1], got {r.distill_fraction}")
    if not 0.0 <= r.munge_p <= 1.0 or r.munge_s <= 0:
        raise UserError(f"munge_p must be in [0, 1] and munge_s > 0, got {r.munge_p} and {r.munge_s}")
    if not r.steps():
        raise UserError(
            "the recipe does nothing: give at least one of --prune, --prune-quality, --structured, "
            "--share-bits, --int8, --distill-from"
        )


def check_against_model(r: Recipe, model) -> None:
    """Layer names in the recipe must be weight layers of the model (one clear line otherwise)."""
    select_layers(model, r.prune_layers, "prune_layers")
    check_layer_keys(model, r.prune_per_layer, "prune_per_layer")
    check_layer_keys(model, r.share_bits_per_layer, "share_bits_per_layer")
    check_layer_keys(model, r.index_bits_per_layer, "index_bits_per_layer")
