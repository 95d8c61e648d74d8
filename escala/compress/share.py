"""Trained quantization by weight sharing (Han, Mao and Dally, "Deep Compression", ICLR 2016, sec. 3).

Per layer, the non-zero weights are clustered into ``2^b - 1`` shared values by one-dimensional
k-means (scikit-learn's ``KMeans``) started from *linear* initialisation: centroids spaced evenly
between the smallest and the largest weight, which the paper found best because it keeps the rare
large weights represented. Code 0 is reserved for the exact zero of pruned connections, so a layer's
codebook holds at most ``2^b`` values and each weight is stored as a ``b``-bit index.

Fine-tuning the centroids: with ``W[i, j] = c[k(i, j)]`` the gradient of centroid ``c_k`` is the sum
of the gradients of the weights in its group, ``dL/dc_k = sum_{(i,j): k(i,j)=k} dL/dW[i,j]`` (eq. 3
of the paper). Autograd makes this exact: the layer's parameter becomes the
centroid vector and ``weight`` is recomputed as ``centroids[codes]`` before every forward (a forward
pre-hook, as ``torch.nn.utils.prune`` does for masks), so autograd's backward of the gather sums the
grouped gradients. Zero stays zero because it is not a parameter.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from escala.compress.targets import weight_layers
from escala.errors import UserError


def check_bits(bits: int, where: str = "share_bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise UserError(f"{where} must be an integer between 1 and 16, got {bits!r}")
    return bits


def kmeans_codebook(values: np.ndarray, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means with linear initialisation; returns ``(centroids, labels)`` (labels 0-based).

    Fewer distinct values than ``clusters`` gives one centroid per distinct value (exact).
    """
    from sklearn.cluster import KMeans  # imported late: sklearn's import is slow

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    distinct = np.unique(values)
    if distinct.size <= clusters:
        labels = np.searchsorted(distinct, values)
        return distinct.astype(np.float32), labels
    init = np.linspace(values.min(), values.max(), clusters).reshape(-1, 1)
    km = KMeans(n_clusters=clusters, init=init, n_init=1, max_iter=300, tol=1e-8, random_state=seed)
    labels = km.fit_predict(values.reshape(-1, 1))
    return km.cluster_centers_.reshape(-1).astype(np.float32), labels


class SharedWeight:
    """Forward pre-hook ``weight = [0, c_1, ..., c_K][codes]``; the layer's parameter is the centroid vector.

    Built the way ``torch.nn.utils.prune`` attaches masks: the layer holds ``weight_centroids`` (the
    parameter) and ``weight_codes`` (a buffer), and ``weight`` is recomputed from them before every
    forward. Unlike a ``torch.nn.utils.parametrize`` parametrization, such a layer pickles, so it can be
    sent to spawned workers (``--workers N``) and wrapped by DDP.
    """

    def __init__(self, clusters: int) -> None:
        self.clusters = clusters

    @staticmethod
    def compute(module: nn.Module) -> torch.Tensor:
        centroids = module.weight_centroids
        return torch.cat([centroids.new_zeros(1), centroids])[module.weight_codes]

    def __call__(self, module: nn.Module, inputs) -> None:
        module.weight = self.compute(module)

    def right_inverse(self, weight: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Least-squares centroids for the fixed codes: the mean of each group (k-means' update)."""
        flat = weight.detach().reshape(-1).to(torch.float64)
        codes = codes.reshape(-1)
        sums = torch.zeros(self.clusters + 1, dtype=torch.float64, device=flat.device)
        counts = torch.zeros_like(sums)
        sums.index_add_(0, codes, flat)
        counts.index_add_(0, codes, torch.ones_like(flat))
        return (sums / counts.clamp(min=1))[1:].to(weight.dtype)


def _hook(module: nn.Module) -> tuple[int, SharedWeight] | None:
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, SharedWeight):
            return key, hook
    return None


def is_shared(module: nn.Module) -> bool:
    return _hook(module) is not None


def apply_sharing(model: nn.Module, bits: dict[str, int], seed: int = 0) -> dict[str, dict]:
    """Cluster each named layer's non-zero weights to ``2^b - 1`` centroids and share them.

    Returns per layer the number of clusters used and the bits asked for.
    """
    layers = weight_layers(model)
    info = {}
    for name, b in bits.items():
        check_bits(b, f"share bits of layer {name!r}")
        module = layers[name]
        w = module.weight.detach()
        flat = w.reshape(-1).cpu().numpy()
        nonzero = flat != 0
        codes = np.zeros(flat.shape, dtype=np.int64)
        clusters = 0
        if nonzero.any():
            want = max(2**b - 1, 1)
            _, labels = kmeans_codebook(flat[nonzero], want, seed=seed)
            codes[nonzero] = labels + 1
            clusters = int(labels.max()) + 1
        hook = SharedWeight(max(clusters, 1))
        codes_t = torch.from_numpy(codes).reshape(w.shape).to(w.device)
        centroids = hook.right_inverse(w, codes_t)
        del module._parameters["weight"]
        module.register_parameter("weight_centroids", nn.Parameter(centroids))
        module.register_buffer("weight_codes", codes_t)
        module.weight = hook.compute(module)
        module.register_forward_pre_hook(hook)
        info[name] = {"bits": b, "clusters": clusters}
    return info


def refresh_shared(model: nn.Module) -> None:
    """Recompute every shared ``weight`` from its centroids outside autograd.

    Needed after the centroids change outside a forward (an optimizer step, ``load_state_dict``) and
    before copying or pickling the model; the next forward recomputes it with autograd again.
    """
    for module in model.modules():
        if is_shared(module):
            with torch.no_grad():
                module.weight = SharedWeight.compute(module)


def codebooks(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (codes, table)}`` for every shared layer; ``table[0] == 0``, ``weight == table[codes]``."""
    out = {}
    for name, module in weight_layers(model).items():
        if is_shared(module):
            centroids = module.weight_centroids.detach()
            out[name] = (module.weight_codes.clone(), torch.cat([centroids.new_zeros(1), centroids]))
    return out


def remove_sharing(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return the codebooks and turn each shared layer back into a plain dense ``weight`` parameter."""
    books = codebooks(model)
    for name, module in weight_layers(model).items():
        if name in books:
            key, _ = _hook(module)
            del module._forward_pre_hooks[key]
            codes, table = books[name]
            del module.weight
            del module._parameters["weight_centroids"], module._buffers["weight_codes"]
            module.weight = nn.Parameter(table[codes].clone())
    return books
