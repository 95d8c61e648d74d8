"""Bucketed gradient all-reduce overlapped with backward (how PyTorch DDP and Horovod hide communication).

Backward visits the layers last to first; a layer's gradients are ready when its backward ends. With
per-layer backward FLOPs ``f_i`` and a backward lasting ``T_b``, layer ``i`` is ready at

    r_i = T_b * sum_{j >= i} f_j / sum_j f_j

Gradients fill buckets of ``bucket`` bytes in that order (DDP's ``bucket_cap_mb``; Li et al., "PyTorch
Distributed", VLDB 2020). A bucket is reduced when its last gradient is ready and the previous bucket is
done (one collective at a time):

    start_k = max(ready_k, end_{k-1}),   end_k = start_k + t(bytes_k)

The exposed communication is ``max(0, end_last - T_b)``; without overlap it is ``sum_k t(bytes_k)``.
Each bucket pays the collective's latency, so a smaller bucket hides more but pays more messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def buckets(
    layers: Sequence[tuple[float, float]], bucket_bytes: float, elem: float = 4.0
) -> list[tuple[float, float]]:
    """(bytes, ready fraction of backward) of each bucket; ``layers`` are (params, flops) in forward order."""
    total_flops = sum(f for _, f in layers) or 1.0
    done, out, size, ready = 0.0, [], 0.0, 0.0
    for params, flops in reversed(list(layers)):
        done += flops
        if params <= 0:
            continue
        size += params * elem
        ready = done / total_flops
        if size >= bucket_bytes:
            out.append((size, ready))
            size = 0.0
    if size > 0:
        out.append((size, 1.0 if ready == 0 else ready))
    return out


def exposed_comm(
    bucket_list: Sequence[tuple[float, float]],
    backward: float,
    cost: Callable[[float], float],
    overlap: bool = True,
) -> tuple[float, float]:
    """(exposed, total) seconds of reducing ``bucket_list`` with per-bucket ``cost(bytes)``."""
    total = sum(cost(b) for b, _ in bucket_list)
    if not overlap:
        return total, total
    end = 0.0
    for nbytes, ready in bucket_list:
        end = max(ready * backward, end) + cost(nbytes)
    return max(0.0, end - backward), total
