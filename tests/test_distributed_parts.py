"""The parts of data-parallel training one by one (gloo, 2 processes on 127.0.0.1): the model
broadcast, the training sampler's disjoint shards, the evaluation shards and the all-reduce of
the metrics. Both processes run every part once (one spawn for the whole file); the tests
then check what each rank saw."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _gloo import free_port, needs_gloo

WORLD = 2
N_TRAIN, N_TEST, BATCH = 11, 7, 4  # odd sizes: padding or a dropped tail would show
CLASSES = 4

pytestmark = needs_gloo


class IndexModel(torch.nn.Module):
    """Predicts from the sample's index i (its only feature): right for even i, wrong for odd i,
    so the accuracy over the whole test set is known: 4 of 7."""

    def forward(self, x):
        i = x[:, 0].round().long()
        return torch.nn.functional.one_hot((i + (i % 2)) % CLASSES, CLASSES).to(x.dtype)


def index_set(n):
    return torch.utils.data.TensorDataset(torch.arange(n, dtype=torch.float64)[:, None],
                                          torch.arange(n) % CLASSES)


def _broadcast_part(rank, result):
    from ottt_cuda.models import r400
    from ottt_cuda.train import distributed
    torch.manual_seed(100 + rank)  # each rank starts from its own random weights
    model = r400(10, in_features=36, hidden=24, dropout=0.0).double()
    result["before"] = {k: v.clone() for k, v in model.state_dict().items()}
    distributed.broadcast_model(model)
    result["after"] = {k: v.clone() for k, v in model.state_dict().items()}


def _sampler_part(rank, d, result):
    from ottt_cuda.train import runner
    cfg = dict(batch=BATCH, seed=3, workers=0)
    train, test, sampler, _ = runner.make_loaders(cfg, index_set(N_TRAIN), index_set(N_TEST), d, torch.device("cpu"))
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        epochs.append([x[:, 0].long().tolist() for x, _ in train])
    result["train_batches"] = epochs
    result["test_indices"] = [i for x, _ in test for i in x[:, 0].long().tolist()]
    cfg_eval = dict(limit_batches=None, T=2, amp=None)
    result["test_acc"] = runner.run_eval(IndexModel(), test, cfg_eval, torch.device("cpu"), d, False)


def _epoch_metrics_part(rank, d, result):
    """run_epoch's loss and accuracy all-reduced, and the same epoch without the all-reduce."""
    from ottt_cuda.models import r400
    from ottt_cuda.train import distributed, runner
    torch.manual_seed(0)
    model = r400(CLASSES, in_features=36, hidden=24, dropout=0.0).double()
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(3 * torch.rand(10, 1, 6, 6, generator=g, dtype=torch.float64),
                                          torch.randint(0, CLASSES, (10,), generator=g))
    cfg = dict(batch=4, seed=0, workers=0, limit_batches=None, epochs=1, progress=False, T=2, mode="ottt_a",
               loss_alpha=0.05, chunk=None, k=None, amp=None)
    train, _, sampler, _ = runner.make_loaders(cfg, data, data, d, torch.device("cpu"))
    sampler.set_epoch(0)
    # optimizer None: the model does not change, so both passes see the same outputs
    reduced = runner.run_epoch(model, train, None, None, cfg, torch.device("cpu"), False, 0, d)
    local = runner.run_epoch(model, train, None, None, cfg, torch.device("cpu"), False, 0, distributed.Dist())
    result["epoch_reduced"], result["epoch_local"] = reduced[:2], local[:2]
    result["epoch_samples"] = sum(len(y) for _, y in train)


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from ottt_cuda.train import distributed
        d = distributed.Dist(rank, world)
        result = {}
        _broadcast_part(rank, result)
        _sampler_part(rank, d, result)
        _epoch_metrics_part(rank, d, result)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        # Every rank waits for the other before tearing down: a rank that destroys the group
        # while the other still talks to it aborts gloo. Only on success (after an error the
        # barrier would hang).
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_parts")
    n = torch.get_num_threads()
    try:
        mp.spawn(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    finally:
        torch.set_num_threads(n)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_model_broadcast_makes_ranks_start_equal(ranks):
    r0, r1 = ranks
    differed = [k for k in r0["before"] if not torch.equal(r0["before"][k], r1["before"][k])]
    assert any(k.endswith("weight") for k in differed)  # different seeds, different weights
    for k, v in r0["before"].items():
        assert torch.equal(r0["after"][k], v), k  # rank 0 keeps its own
        assert torch.equal(r1["after"][k], v), k  # rank 1 now holds rank 0's


def test_training_shards_are_disjoint_and_cover_the_set(ranks):
    per_rank = N_TRAIN // WORLD  # DistributedSampler(drop_last=True): the same count on each rank
    for epoch in range(2):
        batches = [r["train_batches"][epoch] for r in ranks]
        for b in batches:
            assert all(len(x) == BATCH // WORLD for x in b)  # the global batch split across ranks
        seen = [[i for x in b for i in x] for b in batches]
        assert all(len(s) == len(set(s)) for s in seen)
        assert not set(seen[0]) & set(seen[1]), (epoch, seen)
        # whole local batches only (DataLoader drop_last): 2 batches of 2 of the 5 samples per rank
        assert len(set(seen[0]) | set(seen[1])) == WORLD * (per_rank // (BATCH // WORLD)) * (BATCH // WORLD)
    # a new epoch is a new shuffle
    assert ranks[0]["train_batches"][0] != ranks[0]["train_batches"][1]


def test_evaluation_shards_cover_the_test_set_once(ranks):
    seen = [r["test_indices"] for r in ranks]
    assert sorted(seen[0] + seen[1]) == list(range(N_TEST))  # no padding, no sample twice, none left out


def test_evaluation_accuracy_is_summed_over_ranks(ranks):
    # 4 of the 7 test samples are right; each rank alone would see 4/4 or 0/3
    for r in ranks:
        assert r["test_acc"] == pytest.approx(4 / 7, abs=1e-12)


def test_epoch_metrics_are_summed_over_ranks(ranks):
    n = [r["epoch_samples"] for r in ranks]
    assert all(k > 0 for k in n)
    loss = sum(r["epoch_local"][0] * k for r, k in zip(ranks, n)) / sum(n)
    acc = sum(r["epoch_local"][1] * k for r, k in zip(ranks, n)) / sum(n)
    assert ranks[0]["epoch_local"] != ranks[1]["epoch_local"]  # the shards differ
    for r in ranks:
        assert r["epoch_reduced"][0] == pytest.approx(loss, rel=1e-12)
        assert r["epoch_reduced"][1] == pytest.approx(acc, rel=1e-12)
