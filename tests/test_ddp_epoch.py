"""DDP on gloo with 2 processes: every rank gets the same number of batches in every epoch (whatever
the data size), the ranks' shares of a step are disjoint, and accumulated steps all-reduce once."""
import datetime
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from svmix.train.sampler import ShardedBatchSampler

WORLD = 2
CASES = [(13, 4, False), (16, 4, False), (7, 2, True), (23, 6, False)]  # (utterances, step batch, balanced)


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        report = {"epochs": []}
        for utts, batch, balanced in CASES:
            labels = [i % 3 for i in range(utts)]
            sampler = ShardedBatchSampler(labels, batch, seed=5, rank=rank, world_size=WORLD, speaker_balanced=balanced)
            for epoch, start in ((0, 0), (1, 0), (2, 1)):  # (2, 1): resumed in the middle of an epoch
                sampler.set_epoch(epoch, start)
                batches = []
                for items in sampler:
                    # A collective per batch, as a DDP step: a rank with one batch more would hang here.
                    size = torch.tensor([len(items)])
                    dist.all_reduce(size)
                    batches.append(items)
                report["epochs"].append({"case": [utts, batch, balanced], "epoch": epoch, "len": len(sampler),
                                         "batches": batches})
        report["ddp"] = _accumulated_ddp_step(rank)
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(report, f)
    finally:
        dist.destroy_process_group()


def _accumulated_ddp_step(rank):
    """Each rank: a step of 4 micro-batches under DDP vs its local whole-batch gradient, averaged by hand."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel
    from test_grad_accum import objective_and_batch

    from svmix.train.trainer import accumulated_backward

    objective, batch = objective_and_batch("distilhubert", batch=8, seed=3)  # same weights on both ranks
    objective.eval()
    mine = [t[rank::WORLD] for t in batch]  # this rank's share of a global batch of 16
    accumulated_backward(objective, objective, *mine, accum=1)
    expected = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
    for g in expected.values():
        dist.all_reduce(g)
        g /= WORLD
    objective.zero_grad(set_to_none=True)
    accumulated_backward(DistributedDataParallel(objective, find_unused_parameters=True), objective, *mine, accum=2)
    scale = max(float(g.abs().max()) for g in expected.values())  # some tensors' gradients are ~0 here
    worst = max(float((p.grad - expected[n]).abs().max()) / scale
                for n, p in objective.named_parameters() if n in expected)
    # All-reduces per step, counted by a hook on a second copy (a registered comm hook is kept apart
    # from the gradient check: the trainer registers none).
    counted, _ = objective_and_batch("distilhubert", batch=8, seed=3)
    counted.eval()
    ddp = DistributedDataParallel(counted, find_unused_parameters=True)
    calls = []

    def counting_hook(state, bucket):  # DDP's default all-reduce, counted
        calls.append(1)
        return allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, counting_hook)
    accumulated_backward(ddp, counted, *mine, accum=2)
    synced_calls = len(calls)
    calls.clear()
    accumulated_backward(ddp, counted, *mine, accum=1)
    return {"worst_relative_error": worst, "hook_calls_accum2": synced_calls, "hook_calls_accum1": len(calls)}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True, start_method="spawn")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_every_rank_gets_the_same_number_of_batches(reports):
    for per_rank in zip(*(r["epochs"] for r in reports)):
        utts, batch, _ = per_rank[0]["case"]
        expected = utts // batch - (1 if per_rank[0]["epoch"] == 2 else 0)
        assert [len(r["batches"]) for r in per_rank] == [r["len"] for r in per_rank] == [expected] * WORLD
        for step in zip(*(r["batches"] for r in per_rank)):
            assert all(len(items) == batch // WORLD for items in step)
            seeds = [seed for items in step for _, seed in items]
            assert len(set(seeds)) == batch  # the ranks' shares of a step are disjoint


def test_accumulation_under_ddp_syncs_only_the_last_micro_batch(reports):
    for report in reports:
        ddp = report["ddp"]
        assert ddp["worst_relative_error"] < 1e-5, ddp
        assert ddp["hook_calls_accum1"] >= 1 and ddp["hook_calls_accum2"] == ddp["hook_calls_accum1"], ddp
