import pytest
import torch

from escala.data.shard import ShardedBatches, eval_shard


@pytest.mark.parametrize(
    ("n", "batch", "world"), [(100, 8, 1), (100, 8, 3), (7, 4, 4), (64, 16, 2), (5, 1, 4)]
)
def test_epoch_covers_every_sample_once_and_ranks_stay_in_step(n, batch, world):
    plans = [ShardedBatches(n, batch, r, world, seed=3) for r in range(world)]
    per_rank = [list(p.epoch(2)) for p in plans]
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
    seen = torch.cat([b.indices[b.weights > 0] for batches in per_rank for b in batches])
    assert sorted(seen.tolist()) == list(range(n))
    for step in range(len(per_rank[0])):
        counts = {batches[step].global_count for batches in per_rank}
        real = sum(int(batches[step].weights.sum()) for batches in per_rank)
        assert counts == {real}


def test_global_batch_union_matches_single_worker():
    single = list(ShardedBatches(50, 12, 0, 1, seed=1).epoch(0))
    split = [list(ShardedBatches(50, 6, r, 2, seed=1).epoch(0)) for r in range(2)]
    for k, whole in enumerate(single):
        union = torch.cat([split[r][k].indices[split[r][k].weights > 0] for r in range(2)])
        assert sorted(union.tolist()) == sorted(whole.indices.tolist())


def test_epochs_are_reshuffled_deterministically():
    a = ShardedBatches(30, 30, 0, 1, seed=0)
    assert torch.equal(a.permutation(1), ShardedBatches(30, 30, 0, 1, seed=0).permutation(1))
    assert not torch.equal(a.permutation(0), a.permutation(1))


def test_resume_mid_epoch_continues_the_same_batches():
    plan = ShardedBatches(40, 4, 1, 2, seed=5)
    full = list(plan.epoch(3))
    rest = list(plan.epoch(3, start_step=2))
    assert all(torch.equal(a.indices, b.indices) for a, b in zip(full[2:], rest, strict=True))


def test_eval_shard_partitions():
    parts = [eval_shard(11, r, 3) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(11))
