"""Smaller, cheaper models: pruning, weight sharing, Huffman coding, int8 quantization, distillation.

The pieces follow Deep Compression (Han, Mao and Dally, ICLR 2016): prune the small weights and
retrain (:mod:`.prune`, :mod:`.structured`), share the remaining weights through a per-layer k-means
codebook and fine-tune the centroids (:mod:`.share`), Huffman-code the indices (:mod:`.huffman`) into
a file that reloads to the identical dense model (:mod:`.fileformat`). int8 inference comes from
``torch.ao`` (:mod:`.quantize`); distillation with soft targets and MUNGE data from :mod:`.distill`.
:func:`compress` (:mod:`.pipeline`) runs a :class:`Recipe` on a checkpoint; every retraining goes
through escala's one training loop (:mod:`.retrain`).
"""

from __future__ import annotations

import importlib

# Names resolved on first use (PEP 562), so importing escala.compress stays cheap.
_EXPORTS = {
    "Recipe": "recipe",
    "build_recipe": "recipe",
    "compress": "pipeline",
    "huffman_decode": "huffman",
    "huffman_encode": "huffman",
    "apply_masks": "prune",
    "magnitude_masks": "prune",
    "make_permanent": "prune",
    "sparsity": "prune",
    "apply_sharing": "share",
    "kmeans_codebook": "share",
    "remove_sharing": "share",
    "load_compressed": "fileformat",
    "read_compressed": "fileformat",
    "write_compressed": "fileformat",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"escala.compress.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'escala.compress' has no attribute {name!r}")
