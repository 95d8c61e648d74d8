"""Recipes: flags and TOML, checked with one clear line before any work."""

from __future__ import annotations

import pytest
import torch

from escala.compress.recipe import build_recipe, check_against_model
from escala.errors import UserError
from escala.models import build_model


def test_flags_and_toml_merge(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text(
        "[compress]\nprune = 0.9\nshare_bits = 5\nshare_bits_per_layer = {fc1 = 8}\nhuffman = true\n"
    )
    r = build_recipe(f, {"share_bits": "4", "prune_per_layer": "fc1=0.8, fc3=0.5"})
    assert (r.prune, r.share_bits, r.huffman) == (0.9, 4, True)
    assert r.share_bits_per_layer == {"fc1": 8} and r.prune_per_layer == {"fc1": 0.8, "fc3": 0.5}
    assert r.steps() == ["prune", "share", "huffman"]


@pytest.mark.parametrize(
    "values,message",
    [
        ({"share_bits": 17}, "share_bits must be an integer between 1 and 16, got 17"),
        (
            {"share_bits_per_layer": "fc1=0"},
            r"share_bits_per_layer\[fc1\] must be an integer between 1 and 16",
        ),
        ({"prune": 1.0}, r"prune is a fraction .* \[0, 1\)"),
        ({"prune": 0.5, "prune_quality": 1.0}, "exclude each other"),
        ({"int8": "int4"}, "field 'int8' must be one of none, dynamic, static, qat"),
        ({"prune": "lots"}, "field 'prune' must be a number"),
        ({"share_bits_per_layer": "fc1"}, "layer=value pairs"),
        ({"sharebits": 4}, "did you mean 'share_bits'"),
        ({"prune": 0.5, "index_bits": 17}, r"index_bits must be between 1 and 16 \(0: chosen per layer\)"),
        ({"prune": 0.5, "index_bits_per_layer": "fc1=20"}, r"index_bits_per_layer\[fc1\] must be between"),
        ({}, "the recipe does nothing"),
    ],
)
def test_bad_recipes_get_one_line(values, message):
    with pytest.raises(UserError, match=message) as err:
        build_recipe(None, values)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "values",
    [
        {"prune": 0.5, "prune_layers": "fc9"},
        {"prune_per_layer": "conv7=0.5"},
        {"share_bits_per_layer": "fc1=4,nope=3"},
        {"prune": 0.5, "index_bits_per_layer": "fc4=6"},
    ],
)
def test_layers_that_do_not_exist_are_named(values):
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 8, 8), 10)
    with pytest.raises(UserError, match=r"does not exist .* layers of this model: fc1, fc2, fc3"):
        check_against_model(build_recipe(None, values), model)


def test_missing_recipe_file_and_bad_toml(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_recipe(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("prune = = 3")
    with pytest.raises(UserError, match="not valid TOML"):
        build_recipe(bad)
