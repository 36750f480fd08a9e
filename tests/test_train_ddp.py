"""Data parallelism on the CPU (gloo, 2 processes on 127.0.0.1): one training step on two
half batches gives the parameters of one process on the whole batch, with one gradient
all-reduce per OTTT_A step and one per time step under OTTT_O; and torchrun runs the CLI."""
import json
import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ottt_cuda
from ottt_cuda.models import r400
from ottt_cuda.train.distributed import GradSync
from _gloo import free_port, needs_gloo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("ottt_a", "ottt_o", "sltt", "bptt")
T, B = 3, 8

pytestmark = needs_gloo


def make_model():
    # dropout off: each rank would draw its own masks (a single process draws one set)
    torch.manual_seed(0)
    return r400(10, in_features=36, hidden=24, dropout=0.0).double()


def one_step(model, opt, x, y, mode):
    ottt_cuda.train_step(model, x, y, opt, T=T, mode=mode, loss_alpha=0.05, sequence=False)


def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, 1, 6, 6, generator=g, dtype=torch.float64) * 3, torch.randint(0, 10, (B,), generator=g)


def _worker(rank, world, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = data()
        shard = slice(rank * B // world, (rank + 1) * B // world)
        result = {}
        for mode in MODES:
            model = make_model()
            opt = GradSync(torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3), world)
            one_step(model, opt, x[shard], y[shard], mode)
            result[mode] = ({k: v.clone() for k, v in model.state_dict().items()}, opt.syncs)
        if rank == 0:
            torch.save(result, out_path)
        # Wait for every rank before any tears down: a rank that destroys the group while the
        # other still talks to it aborts gloo ("terminate called without an active exception"),
        # as in ottt_cuda.train.distributed.finish. Only on success: after an error it would hang.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    x, y = data()
    n = torch.get_num_threads()
    try:
        for mode in MODES:
            model = make_model()
            before = {k: v.clone() for k, v in model.state_dict().items()}
            opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
            one_step(model, opt, x, y, mode)
            params, syncs = got[mode]
            # all-reduce once per optimizer step: once per OTTT_A/SLTT/BPTT step, every time step in OTTT_O
            assert syncs == (T if mode == "ottt_o" else 1), mode
            for k, v in model.state_dict().items():
                assert not torch.equal(v, before[k]) or k.endswith("gain"), (mode, k, "did not train")
                torch.testing.assert_close(params[k], v, rtol=1e-10, atol=1e-12, msg=f"{mode}: {k}")
    finally:
        torch.set_num_threads(n)


def test_torchrun_cli_two_processes(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "ottt_cuda.train", "synthetic",
           "--epochs", "1", "--limit-batches", "3", "--batch", "16", "--out-dir", str(tmp_path), "--stats",
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads([l for l in proc.stdout.splitlines() if l.strip()][-1])
    assert res["world_size"] == 2 and res["epochs"] == 1 and 0.0 <= res["test_acc"] <= 1.0
    assert proc.stdout.count('"dataset"') == 1  # only rank 0 reports
    assert (tmp_path / "stats.json").is_file() and (tmp_path / "checkpoint.pt").is_file()
