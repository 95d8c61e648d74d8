"""Atomic checkpoint files, safe loading and RNG capture for exact resume."""

from escala.checkpoint.io import load_checkpoint, save_atomic, save_checkpoint
from escala.checkpoint.rng import capture_rng, restore_rng

__all__ = ["capture_rng", "load_checkpoint", "restore_rng", "save_atomic", "save_checkpoint"]
