"""The result every loader returns: a train set, a validation set and what a model needs to know."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset


@dataclass
class DataSplit:
    """A named pair of datasets plus the facts a model is built from.

    ``input_shape`` is the shape of one sample without the batch dimension and ``num_classes`` the
    width of the classifier head; keeping them here means models never have to peek at the data.
    """

    name: str
    train: Dataset
    val: Dataset
    input_shape: tuple[int, ...]
    num_classes: int

    def __post_init__(self) -> None:
        # Normalise so that configs, checkpoints and comparisons see a plain tuple of ints.
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.num_classes = int(self.num_classes)

    def describe(self) -> str:
        """One line for logs: name, sizes, sample shape and class count."""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val, "
            f"input {self.input_shape}, {self.num_classes} classes"
        )
