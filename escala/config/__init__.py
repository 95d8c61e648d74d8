"""Typed configuration: dataclasses whose field docs become ``--help``, TOML files and overrides."""

from escala.config.load import build_config, coerce, read_toml
from escala.config.schema import TrainConfig

__all__ = ["TrainConfig", "build_config", "coerce", "read_toml"]
