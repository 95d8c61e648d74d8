"""Alpha-beta costs of the collectives a plan uses (Hockney model: a message of n bytes takes a + n*b).

For ``p`` processes, ``n`` bytes per process, latency ``a`` and inverse bandwidth ``b`` (s/byte):

* ring all-reduce (reduce-scatter then all-gather around a ring; Patarasuk & Yuan, "Bandwidth optimal
  all-reduce algorithms for clusters of workstations", JPDC 2009)::

      T_ring = 2 (p - 1) a + 2 (p - 1) / p * n * b

  bandwidth-optimal: each process sends and receives ``2 (p-1)/p * n`` bytes whatever ``p`` is;
* tree all-reduce (binomial-tree reduce then broadcast; Thakur, Rabenseifner & Gropp, "Optimization of
  collective communication operations in MPICH", IJHPCA 2005)::

      T_tree = 2 ceil(log2 p) (a + n b)

  latency-optimal, it wins on small messages and many processes;
* ring all-gather / reduce-scatter of ``n`` bytes in all: ``(p - 1) a + (p - 1)/p * n * b``;
* point to point: ``a + n b``.

On a measured link a 2-process all-reduce inside the range of the calibrated sizes is interpolated on
the measured times (:attr:`escala.plan.cluster.Link.allreduce_points`): gloo's time is not one line
in the size (here 4 B ~0.1-0.3 ms, 4 KiB ~1.6 ms, 1 MiB ~2.2 ms; the line fitted through 4 KiB..16
MiB said ~1.8 ms for 4 B), and the empty-step overhead subtracts the prediction of tiny collectives.

Across nodes the all-reduce is hierarchical (as NCCL and Goyal et al. 2017 do it): reduce-scatter inside
each node over the fast link, all-reduce the ``n / g`` bytes each of the ``g`` local devices now holds
across the ``m`` nodes (the ``g`` flows share the node's network card, so the card carries ``n`` bytes
per direction and phase), then all-gather inside the node.
"""

from __future__ import annotations

import math

from escala.plan.cluster import Cluster, Link


def ring_allreduce(nbytes: float, p: int, link: Link) -> float:
    if p <= 1 or nbytes <= 0:
        return 0.0
    measured = link.measured_allreduce(nbytes) if p == 2 else None
    if measured is not None:  # a measured link: the 2-process all-reduces timed here, interpolated
        return measured
    return 2 * (p - 1) * link.latency + 2 * (p - 1) / p * nbytes / link.bandwidth


def tree_allreduce(nbytes: float, p: int, link: Link) -> float:
    if p <= 1 or nbytes <= 0:
        return 0.0
    return 2 * math.ceil(math.log2(p)) * (link.latency + nbytes / link.bandwidth)


def allreduce(nbytes: float, p: int, link: Link, algorithm: str = "ring") -> float:
    """All-reduce over one kind of link with ``algorithm`` ring, tree or auto (the cheaper)."""
    if algorithm == "ring":
        return ring_allreduce(nbytes, p, link)
    if algorithm == "tree":
        return tree_allreduce(nbytes, p, link)
    return min(ring_allreduce(nbytes, p, link), tree_allreduce(nbytes, p, link))


def ring_allgather(total_bytes: float, p: int, link: Link) -> float:
    """All-gather (or reduce-scatter) where the ``p`` pieces add up to ``total_bytes``."""
    if p <= 1 or total_bytes <= 0:
        return 0.0
    return (p - 1) * link.latency + (p - 1) / p * total_bytes / link.bandwidth


def p2p(nbytes: float, link: Link) -> float:
    return link.message(nbytes) if nbytes > 0 else 0.0


def placement(members: int, cluster: Cluster, stride: int = 1) -> tuple[int, int]:
    """(members per node, nodes spanned) of a group of ``members`` processes ``stride`` ranks apart.

    Ranks fill nodes in order; a data-parallel group of a layout whose model-parallel part has ``stride``
    processes puts ``devices_per_node // stride`` of its members on each node (at least one).
    """
    per_node = max(1, min(members, cluster.devices_per_node // max(stride, 1)))
    return per_node, math.ceil(members / per_node)


def group_allreduce(
    nbytes: float, members: int, cluster: Cluster, *, stride: int = 1, algorithm: str | None = None
) -> float:
    """All-reduce of ``nbytes`` per member over a group placed on the cluster (hierarchical across nodes).

    ``stride`` > 1 also means ``stride`` such groups run at once (one per model-parallel part), each
    with its own ``nbytes``; they share each node's network card.
    """
    algorithm = algorithm or cluster.allreduce
    if members <= 1 or nbytes <= 0:
        return 0.0
    g, m = placement(members, cluster, stride)
    if m == 1:
        return allreduce(nbytes, g, cluster.intra, algorithm)
    concurrent = g * max(stride, 1)
    # Each of the g local flows carries nbytes / g; `concurrent` flows share the card.
    card = Link(cluster.inter.bandwidth / concurrent, cluster.inter.latency)
    inter = allreduce(nbytes / g, m, card, algorithm)
    if g == 1:
        return inter
    return 2 * ring_allgather(nbytes, g, cluster.intra) + inter


def group_allgather(nbytes_each: float, members: int, cluster: Cluster, *, stride: int = 1) -> float:
    """Ring all-gather where every member contributes ``nbytes_each`` (non-summable codecs)."""
    if members <= 1 or nbytes_each <= 0:
        return 0.0
    g, m = placement(members, cluster, stride)
    if m == 1:
        return ring_allgather(nbytes_each * members, members, cluster.intra)
    # The slowest hop of the ring crosses a node's card, shared by the card's flows.
    concurrent = max(stride, 1)
    card = Link(cluster.inter.bandwidth / concurrent, cluster.inter.latency)
    return ring_allgather(nbytes_each * members, members, card)
