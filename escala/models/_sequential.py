"""Base class for the zoo's models: an ``nn.Sequential`` whose slices are plain ``nn.Sequential``.

The models subclass ``nn.Sequential`` so pipeline parallelism can cut them into stages by slicing
(``model[:6]``) and pruning can address children by name. ``nn.Sequential.__getitem__`` builds a
slice with ``self.__class__(OrderedDict(...))``, which would call a model constructor with the wrong
arguments; a slice of a model is just a stage, so it is returned as a plain ``nn.Sequential``
(sharing the same child modules, as the stock slice does).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class NamedSequential(nn.Sequential):
    """``nn.Sequential`` with named children whose slices are plain ``nn.Sequential`` stages."""

    def __getitem__(self, idx: slice | int) -> nn.Sequential | nn.Module:
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)
