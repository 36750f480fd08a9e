"""SLTT-K (train_step mode "sltt_k"): backward at k of the T time steps, chosen at random
from torch's global RNG, first thing in the step (so a seed reproduces them), redrawn for
every batch; the other steps only run forward. The steps that got a backward are observed
here directly, by a module whose backward records the time step it belongs to."""
import pytest
import torch

import ottt_cuda
from ottt_cuda import nn as onn

T, B, K = 4, 3, 2


class _Record(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, step, log):
        ctx.step, ctx.log = step, log
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.log.append(ctx.step)
        return grad, None, None


class BackwardSteps(torch.nn.Module):
    """Identity that numbers its forward calls (the time steps) and logs, for each backward
    that passes through it, the step whose forward it belongs to."""

    def __init__(self):
        super().__init__()
        self.t, self.backward_steps = 0, []

    def forward(self, x):
        out = _Record.apply(x, self.t, self.backward_steps)
        self.t += 1
        return out

    def clear(self):
        self.t, self.backward_steps = 0, []


def net():
    torch.manual_seed(0)
    # The dropout layer draws its mask from the global RNG during the first step: if the steps
    # were drawn after that, they would no longer be those of torch.randperm right after the seed.
    return torch.nn.Sequential(onn.Linear(6, 16), onn.LIF(), onn.Dropout(0.3), BackwardSteps(),
                               onn.Linear(16, 5)).double()


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(B, 6, generator=g, dtype=torch.float64), torch.randint(0, 5, (B,), generator=g)


def run(model, x, y, mode="sltt_k", k=K):
    rec = model[3]
    rec.clear()
    model.zero_grad(set_to_none=True)
    ottt_cuda.train_step(model, x, y, None, T=T, mode=mode, k=k if mode == "sltt_k" else None)
    assert rec.t == T  # every step ran forward
    return sorted(rec.backward_steps)


def test_steps_follow_the_global_rng_and_exactly_k_get_a_backward():
    model = net()
    x, y = batch(1)
    for seed in (3, 11):
        torch.manual_seed(seed)
        expected = sorted(torch.randperm(T)[:K].tolist())
        torch.manual_seed(seed)
        first = run(model, x, y)
        torch.manual_seed(seed)
        again = run(model, x, y)
        assert first == again == expected, (seed, first, again, expected)


def test_each_batch_draws_new_steps():
    model = net()
    torch.manual_seed(5)
    drawn = [tuple(run(model, *batch(i))) for i in range(8)]
    assert all(len(set(d)) == K for d in drawn)  # k distinct steps each time
    assert len(set(drawn)) > 2, drawn  # 6 possible pairs of 4 steps; not one fixed choice


@pytest.mark.parametrize("k", [1, 3])
def test_only_the_chosen_steps_contribute_gradients(k):
    """The gradient is the sum of the chosen steps' SLTT gradients: with k = T it equals
    SLTT's; with k < T it equals the SLTT gradient of a run whose loss at the other steps is
    cut off (computed here by hand with the layers' own modes)."""
    model = net()
    x, y = batch(2)
    torch.manual_seed(7)
    steps = run(model, x, y, k=k)
    assert len(steps) == k
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    # The same step by hand: backward only at `steps` (the dropout mask drawn as train_step does,
    # after the k steps).
    torch.manual_seed(7)
    torch.randperm(T)
    model.zero_grad(set_to_none=True)
    model[3].clear()
    onn.reset(model)
    onn.set_mode(model, "sltt")
    for t in range(T):
        out = model(x)
        if t in steps:
            logp = out.log_softmax(1)
            onehot = torch.nn.functional.one_hot(y, 5).double()
            loss = ((1 - 0.05) * -logp[torch.arange(B), y].mean() + 0.05 * ((out - onehot) ** 2).mean()) / T
            loss.backward()
    for n, p in model.named_parameters():
        assert got[n].abs().max() > 0, n
        torch.testing.assert_close(got[n], p.grad, rtol=1e-12, atol=1e-14, msg=n)


def test_k_equal_to_t_is_sltt():
    model = net()
    x, y = batch(4)
    torch.manual_seed(9)
    assert run(model, x, y, k=T) == list(range(T))
    all_steps = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.manual_seed(9)
    torch.randperm(T)  # keep the dropout mask the same as in the SLTT-K run
    assert run(model, x, y, mode="sltt") == list(range(T))
    for n, p in model.named_parameters():
        torch.testing.assert_close(all_steps[n], p.grad, rtol=1e-12, atol=1e-14, msg=n)
