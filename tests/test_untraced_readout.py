"""A synapse with trace=False takes its weight gradient from its input itself, and for the memoryless readout of
R400 (o[t] = W s[t]) that is the exact gradient: OTTT_A's readout gradient then equals BPTT's, while with the
trace (the recipe, Algorithm 1) it does not. float64, the same weights, input and dropout mask in every run."""
import torch

import ottt_cuda
from ottt_cuda import models


def _build(readout_trace=True):
    torch.manual_seed(0)
    m = models.r400(feedback_dropout=True, hidden=16).double()
    m.readout.trace = readout_trace
    return m


def _readout_grad(mode, x, y, readout_trace=True):
    m = _build(readout_trace)
    torch.manual_seed(1)  # the same dropout mask in every run
    ottt_cuda.train_step(m, x, y, None, T=4, mode=mode)
    return m, m.readout.weight.grad


def test_untraced_readout_gives_bptt_s_exact_readout_gradient():
    # The loss's gradient at o[t] is the same in every mode (the forward is), so with s[t] instead of its
    # trace OTTT_A's readout gradient is BPTT's, sum_t g[t]^T s[t].
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64) * 6 - 2
    y = torch.randint(0, 10, (6,), generator=g)
    _, exact = _readout_grad("bptt", x, y)
    _, traced = _readout_grad("ottt_a", x, y)
    assert exact.abs().max() > 0
    assert (traced - exact).abs().max() > 1e-3 * exact.abs().max()  # the trace: not the exact gradient
    m, raw = _readout_grad("ottt_a", x, y, readout_trace=False)
    # Only the readout changed: the hidden layer's synapses still use their traces.
    assert m.readout.trace is False and m.rnn.input.trace is True and m.rnn.recurrent.trace is True
    torch.testing.assert_close(raw, exact, rtol=1e-10, atol=1e-12)
