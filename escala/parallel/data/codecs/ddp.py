"""Run a codec inside DistributedDataParallel through a communication hook.

DDP hands each gradient bucket to ``hook(state, bucket)`` and expects a future of the averaged bucket
(``DistributedDataParallel.register_comm_hook``), so compression overlaps with the rest of the backward
pass exactly as the plain all-reduce does.

* summable codecs (fp16, bf16): scale by 1/N in float32 (so fp16 cannot overflow in the sum), cast,
  all-reduce the half-precision tensor, cast back: PyTorch's own ``fp16_compress_hook`` scheme;
* the others (QSGD, top-k): every worker encodes its bucket into a byte message, the messages are
  all-gathered, and every worker decodes all N and averages them, so all replicas apply the same
  update. Error-feedback state is kept per parameter (slots), so DDP's re-bucketing after the first
  step loses nothing.
"""

# No `from __future__ import annotations`: DDP checks the hook's annotations as real objects.

from dataclasses import dataclass

import torch
import torch.distributed as dist

from escala.parallel.data.codecs.base import Codec, Traffic, nbytes


@dataclass
class HookState:
    codec: Codec
    world: int
    index: dict[int, int]  # id(parameter) -> its position in model.parameters()
    traffic: Traffic


def _slots(state: HookState, bucket: dist.GradBucket, numel: int):
    slots = [(state.index[id(p)], p.numel()) for p in bucket.parameters()]
    if sum(n for _, n in slots) != numel:  # a layout with padding: keep the state per bucket instead
        return [(("bucket", tuple(k for k, _ in slots)), numel)]
    return slots


def codec_hook(state: HookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    buf = bucket.buffer()
    n, world = buf.numel(), state.world
    raw = n * 4
    if state.codec.summable:
        wire = state.codec.encode(buf.float() / world, _slots(state, bucket, n))
        state.traffic.add(2 * (world - 1) / world * nbytes(wire), 2 * (world - 1) / world * raw)
        fut = dist.all_reduce(wire, async_op=True).get_future()

        def finish_sum(f: torch.futures.Future) -> torch.Tensor:
            buf.copy_(state.codec.decode(f.value()[0], n))
            return buf

        return fut.then(finish_sum)

    wire = state.codec.encode(buf, _slots(state, bucket, n))
    state.traffic.add((world - 1) * nbytes(wire), 2 * (world - 1) / world * raw)
    gathered = [torch.empty_like(wire) for _ in range(world)]
    fut = dist.all_gather(gathered, wire, async_op=True).get_future()

    def finish_gather(f: torch.futures.Future) -> torch.Tensor:
        f.wait()
        total = torch.zeros(n, dtype=torch.float32, device=buf.device)
        for message in gathered:
            total += state.codec.decode(message, n)
        buf.copy_(total / world)
        return buf

    return fut.then(finish_gather)
