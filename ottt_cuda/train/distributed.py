"""Data-parallel training over torch.distributed (NCCL on CUDA, gloo on CPU).

Launched by torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
Each rank trains on its shard of every batch (DistributedSampler); the gradients are averaged
across ranks right before each optimizer step, by wrapping the optimizer (GradSync):

- OTTT_A, SLTT, SLTT-K, BPTT: train_step steps the optimizer once per training step, so the
  gradients accumulated over the T time steps are all-reduced once per training step;
- OTTT_O: the optimizer steps after every time step, so they are all-reduced every time step.

Why not torch's DistributedDataParallel with no_sync on the first T-1 backward calls:
train_step (ottt_cuda.training) owns the forward and backward calls, and which backward is the
last one of a training step depends on the mode: the T-th under OTTT_A/SLTT, the last chunk
with --chunk, every one under OTTT_O, the single one under BPTT, and under SLTT-K the last of
k steps that train_step draws at random inside. Wrapping the model so that DDP syncs only on
that call needs a per-mode prediction of train_step's schedule. The optimizer step is the one
point every mode shares, and one all-reduce there is exactly "once per OTTT_A step, every time
step under OTTT_O". The arithmetic is DDP's (mean of the per-rank gradients; the model is
broadcast from rank 0 at the start); what is lost is DDP's overlap of communication with the
backward pass, which matters little when it happens once per T backward calls.
"""
import os

import torch
import torch.distributed as dist


class Dist:
    def __init__(self, rank=0, world=1, local_rank=0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @property
    def enabled(self):
        return self.world > 1

    @property
    def main(self):
        return self.rank == 0


def init(device_type):
    """Join the process group torchrun describes in the environment (single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local)


def finish(d):
    """After a successful run: wait until every rank is done before any tears
    down; a rank leaving while another still talks to it aborts gloo
    ("terminate called without an active exception"). Not called on an error,
    where it would turn the failure into a hang."""
    if d.enabled and dist.is_initialized():
        dist.barrier()


def shutdown(d):
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_model(model, src=0):
    """Every rank starts from rank 0's parameters and buffers (as DDP does at construction)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src)


def all_reduce_sum(values, device):
    """Sum a list of floats over ranks (metrics), in float64."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params, world):
    """Replace each .grad by its mean over ranks: one flat all-reduce per dtype, plus one for
    the "has a gradient" flags so a parameter that got no gradient on any rank keeps None (as
    in a single process; the optimizer then skips it) while one missing on some ranks counts
    as zeros there."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = params[0].device
    flags = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(flags)
    by_dtype = {}
    for p, f in zip(params, flags.tolist()):
        if f:
            by_dtype.setdefault(p.dtype, []).append(p)
    for dtype, ps in by_dtype.items():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for p in ps:
            n = p.numel()
            g = flat[offset:offset + n].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
            offset += n


class GradSync:
    """An optimizer wrapper that averages gradients over ranks before each step (see module doc).
    Counts its all-reduces in `syncs` (tests check one per OTTT_A step, T per OTTT_O step)."""

    def __init__(self, optimizer, world):
        self.optimizer, self.world = optimizer, world
        self.syncs = 0
        self._synced = False

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def sync(self):
        if not self._synced:
            average_gradients(self._params(), self.world)
            self.syncs += 1
            self._synced = True

    def all_ranks_ok(self, ok):
        """True when `ok` holds on every rank (train_step's check_finite asks before each step:
        a rank that stopped alone would leave the others waiting in the gradient all-reduce)."""
        params = self._params()
        device = params[0].device if params else torch.device("cpu")
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def zero_grad(self, set_to_none=True):
        self._synced = False
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("GradSync does not support closures")
        self.sync()
        out = self.optimizer.step()
        self._synced = False
        return out

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, sd):
        self.optimizer.load_state_dict(sd)


def make_scaler(device_type, d, optimizer):
    """GradScaler for fp16. Under data parallelism the scaled gradients are averaged before the
    scaler looks for inf/NaN, so every rank agrees on skipping a step."""
    base = torch.amp.GradScaler

    if not d.enabled:
        return base(device_type)

    class SyncedScaler(base):
        def unscale_(self, opt):
            if isinstance(opt, GradSync):
                opt.sync()
            return super().unscale_(opt)

    return SyncedScaler(device_type)
