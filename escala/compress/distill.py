"""Knowledge distillation: a student learns from a teacher's soft targets.

* Hinton, Vinyals and Dean, "Distilling the knowledge in a neural network" (2015): the teacher's
  class probabilities at temperature ``T``, ``p_i = softmax(v / T)_i``, carry how it generalises
  (which wrong classes are nearly right). The student with logits ``z`` minimises the cross-entropy
  ``-sum_i p_i log softmax(z / T)_i``, scaled by ``T^2`` so its gradients keep their size as ``T``
  changes; an ensemble teacher averages its members' ``p``. Real samples may mix in their true label:
  the target is ``alpha * p + (1 - alpha) * onehot(y)`` (one cross-entropy at temperature ``T``, a
  simplification of the paper's sum of a soft and a hard term at temperature 1).
* Bucilua, Caruana and Niculescu-Mizil, "Model compression" (KDD 2006): when the original data is
  scarce, label *synthetic* data with the teacher. MUNGE makes it: for each example ``e`` find its
  nearest neighbour ``e'`` and, for each attribute with probability ``p``, draw ``e_a`` from
  ``N(e'_a, |e_a - e'_a| / s)``. (The paper also moves ``e'`` toward ``e`` in the same pass; here each
  pass rewrites only ``e``, which makes the pass order-free and vectorised.)

The student trains through escala's one loop: its training set holds the target distributions as
float labels (``F.cross_entropy`` accepts class probabilities) and :class:`TemperatureScaled` divides
its logits by ``T`` in training mode only, with a backward that multiplies by ``T`` so the gradient is
that of ``T^2 * CE``. Evaluation (eval mode) sees the plain logits and the real validation labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from escala.data import DataSplit
from escala.train.trainer import fetch


class SoftTargetData(Dataset):
    """Inputs ``x`` and target distributions ``y`` (rows sum to 1); tensors, so the loop indexes them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.float(), y.float()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int):
        return self.x[index], self.y[index]


class _DivideScaledGrad(torch.autograd.Function):
    """Forward ``z / T``; backward ``g * T``: the gradient of ``T^2 * CE(z / T, p)`` with respect to z."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, t: float) -> torch.Tensor:
        ctx.t = t
        return z / t

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.t, None


class TemperatureScaled(nn.Module):
    """The student seen by the training loop: logits at temperature ``T`` while training."""

    def __init__(self, student: nn.Module, temperature: float) -> None:
        super().__init__()
        self.student = student
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.student(x)
        if self.training and self.temperature != 1.0:
            return _DivideScaledGrad.apply(z, self.temperature)
        return z


@torch.no_grad()
def soft_targets(
    teachers: list[nn.Module], x: torch.Tensor, temperature: float, batch: int = 1024
) -> torch.Tensor:
    """Mean over ``teachers`` of ``softmax(logits / T)`` for every row of ``x``."""
    total = torch.zeros(0)
    for teacher in teachers:
        teacher.eval()
        device = next(teacher.parameters()).device
        parts = [
            F.softmax(teacher(x[i : i + batch].to(device)).float().cpu() / temperature, dim=1)
            for i in range(0, len(x), batch)
        ]
        probs = torch.cat(parts)
        total = probs if total.numel() == 0 else total + probs
    return total / len(teachers)


def munge(x: torch.Tensor, samples: int, p: float = 0.5, s: float = 1.0, seed: int = 0) -> torch.Tensor:
    """``samples`` synthetic inputs near ``x`` by MUNGE (Bucilua et al. 2006), in passes over ``x``."""
    from sklearn.neighbors import NearestNeighbors

    if samples <= 0 or len(x) < 2:
        return x.new_zeros((0, *x.shape[1:]))
    rng = np.random.default_rng(seed)
    flat = x.reshape(len(x), -1).double().numpy()
    # The nearest *other* example: ask for two neighbours, the first is the point itself.
    neighbour = NearestNeighbors(n_neighbors=2).fit(flat).kneighbors(flat, return_distance=False)[:, 1]
    out = []
    made = 0
    while made < samples:
        e, e2 = flat, flat[neighbour]
        swap = rng.random(e.shape) < p
        sd = np.abs(e - e2) / s
        new = np.where(swap, rng.normal(e2, sd), e)
        take = min(samples - made, len(new))
        out.append(new[rng.permutation(len(new))[:take]])
        made += take
    return torch.from_numpy(np.concatenate(out)).float().reshape(samples, *x.shape[1:])


def transfer_set(
    teachers: list[nn.Module],
    data: DataSplit,
    temperature: float,
    alpha: float = 1.0,
    fraction: float = 1.0,
    munge_samples: int = 0,
    munge_p: float = 0.5,
    munge_s: float = 1.0,
    seed: int = 0,
) -> DataSplit:
    """The student's training set: (a ``fraction`` of) the real samples plus MUNGE samples, soft-labelled."""
    n = len(data.train)
    keep = max(2, round(fraction * n))
    idx = torch.from_numpy(np.random.default_rng(seed).permutation(n)[:keep])
    x, y = fetch(data.train, idx)
    probs = soft_targets(teachers, x, temperature)
    if alpha < 1.0:
        probs = alpha * probs + (1.0 - alpha) * F.one_hot(y, probs.shape[1]).float()
    if munge_samples > 0:
        extra = munge(x, munge_samples, munge_p, munge_s, seed)
        x = torch.cat([x, extra])
        probs = torch.cat([probs, soft_targets(teachers, extra, temperature)])
    return DataSplit(
        name=f"{data.name}+distill",
        train=SoftTargetData(x, probs),
        val=data.val,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
    )
