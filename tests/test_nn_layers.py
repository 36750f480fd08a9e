"""ottt_cuda.nn layers on their own: state, modes, gradients against plain
torch formulas, validation."""
import pytest
import torch
import torch.nn.functional as F

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.reference import lif_multistep_ref
from _compare import rel_err
from _firing import assert_fires, recording


def test_lif_keeps_membrane_and_reset_clears_it():
    lif = onn.LIF()
    x = torch.tensor([[0.6, 1.5]])
    s1 = lif(x)
    assert torch.equal(s1, torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(lif.v, torch.tensor([[0.6, 0.5]]))
    lif(x)
    assert torch.allclose(lif.v, torch.tensor([[0.9, 0.75]]))
    ottt_cuda.reset(lif)
    assert lif.v is None


def test_lif_multistep_equals_steps_forward_and_bptt_single_steps_equal_multistep_grad():
    torch.manual_seed(0)
    x = 1.5 * torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    seq = onn.LIF(step_mode="m")
    ottt_cuda.set_mode(seq, "bptt")
    out_m = seq(x)
    single = onn.LIF()
    ottt_cuda.set_mode(single, "bptt")
    out_s = torch.stack([single(x[t]) for t in range(5)])
    assert torch.equal(out_m, out_s)
    w = torch.randn_like(out_m)
    g_m, = torch.autograd.grad((out_m * w).sum(), x)
    g_s, = torch.autograd.grad((out_s * w).sum(), x)
    ref, _ = lif_multistep_ref(x, None)
    g_r, = torch.autograd.grad((ref * w).sum(), x)
    assert rel_err(g_s, g_r) <= 1e-12 and rel_err(g_m, g_r) <= 1e-12
    # OTTT mode: no gradient through the membrane history, so it differs from BPTT.
    ottt = onn.LIF()
    out_o = torch.stack([ottt(x[t]) for t in range(5)])
    g_o, = torch.autograd.grad((out_o * w).sum(), x)
    assert torch.equal(out_o, out_s) and rel_err(g_o, g_r) > 1e-3


def test_lif_state_shape_mismatch_is_an_error():
    lif = onn.LIF()
    lif(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="reset"):
        lif(torch.zeros(4, 3))


@pytest.mark.parametrize("traced", [True, False])
def test_linear_weight_gradient_uses_the_trace(traced):
    torch.manual_seed(0)
    lin = onn.Linear(4, 3, trace=traced, trace_decay=0.3).double()
    xs = torch.randn(3, 2, 4, dtype=torch.float64)
    gs = torch.randn(3, 2, 3, dtype=torch.float64)
    for t in range(3):
        x = xs[t].clone().requires_grad_()
        out = lin(x)
        torch.testing.assert_close(out, F.linear(x, lin.weight, lin.bias))
        (out * gs[t]).sum().backward()
        torch.testing.assert_close(x.grad, gs[t] @ lin.weight.detach())
    trace = torch.zeros(2, 4, dtype=torch.float64)
    expected = torch.zeros(3, 4, dtype=torch.float64)
    for t in range(3):
        trace = 0.3 * trace + xs[t] if traced else xs[t]
        expected += gs[t].T @ trace
    torch.testing.assert_close(lin.weight.grad, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lin.bias.grad, gs.sum((0, 1)), rtol=1e-12, atol=1e-12)


def test_conv2d_weight_gradient_uses_the_trace_and_multistep_matches():
    torch.manual_seed(0)
    conv = onn.Conv2d(2, 3, 3, stride=2, padding=1, trace_decay=0.5).double()
    xs = torch.randn(3, 2, 2, 6, 6, dtype=torch.float64)
    gs = torch.randn(3, 2, 3, 3, 3, dtype=torch.float64)
    for t in range(3):
        (conv(xs[t]) * gs[t]).sum().backward()
    w = conv.weight.detach().clone().requires_grad_()
    trace, loss = torch.zeros_like(xs[0]), 0
    for t in range(3):
        trace = 0.5 * trace + xs[t]
        loss = loss + (F.conv2d(trace, w, None, 2, 1) * gs[t]).sum()
    loss.backward()
    torch.testing.assert_close(conv.weight.grad, w.grad, rtol=1e-12, atol=1e-12)
    g_single = conv.weight.grad.clone()
    conv.weight.grad = None
    ottt_cuda.reset(conv)
    conv.step_mode = "m"
    (conv(xs) * gs).sum().backward()
    assert rel_err(conv.weight.grad, g_single) <= 1e-12


def test_sltt_mode_uses_the_input_and_bptt_plain_autograd():
    torch.manual_seed(0)
    xs = torch.rand(2, 2, 4, dtype=torch.float64)
    for mode in ("sltt", "bptt"):
        lin = onn.Linear(4, 3).double()
        ottt_cuda.set_mode(lin, mode)
        for t in range(2):
            lin(xs[t]).sum().backward()
        torch.testing.assert_close(lin.weight.grad, torch.ones(3, 2, dtype=torch.float64) @ xs.sum(0))


def test_ws_layers_standardize_and_gain_shapes():
    lin, conv = onn.WSLinear(5, 3), onn.WSConv2d(2, 4, 3)
    assert lin.gain.shape == (3, 1) and conv.gain.shape == (4, 1, 1, 1)
    w = lin.standardized_weight().detach()
    assert torch.allclose(w.mean(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(w.var(1) * 5, torch.ones(3), atol=1e-3)
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias", "gain"]


def test_dropout_mask_fixed_across_steps_and_redrawn_at_reset():
    torch.manual_seed(0)
    d = onn.Dropout(0.5)
    x = torch.ones(4, 16)
    a, b = d(x), d(x)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 2.0} and (a == 0).any()
    ottt_cuda.reset(d)
    assert not torch.equal(d(x), a)
    d.eval()
    assert torch.equal(d(x), x)
    with pytest.raises(ValueError, match="p"):
        onn.Dropout(1.0)


def test_recurrent_lif_feeds_back_previous_spikes():
    torch.manual_seed(0)
    cell = onn.RecurrentLIF(3, 4).double()
    with torch.no_grad():
        cell.input.weight.zero_()
        cell.input.bias.fill_(0.6)
        cell.recurrent.weight.fill_(1.0)
    x = torch.zeros(1, 3, dtype=torch.float64)
    outs = [cell(x) for _ in range(3)]
    # t1: v = 0.6 no spike; t2: 0.3 + 0.6 = 0.9 no spike; t3: 0.45 + 0.6 = 1.05 spike
    assert [o.sum().item() for o in outs] == [0.0, 0.0, 4.0]
    ottt_cuda.reset(cell)
    assert cell.s_prev is None and cell.recurrent.a_hat is None


def test_layers_between_plain_modules_in_multistep():
    # Any plain torch module between neuron and synapse, also multi-step.
    torch.manual_seed(0)
    model = torch.nn.Sequential(onn.Conv2d(1, 2, 3, padding=1, trace=False), onn.LIF(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), onn.Linear(8, 2)).double()
    with torch.no_grad():  # the default init leaves the LIF silent: the output would be the Linear's bias
        model[0].weight.normal_(0, 0.5)
        model[0].bias.fill_(0.3)
    x = torch.rand(3, 2, 1, 4, 4, dtype=torch.float64) * 3
    ottt_cuda.reset(model)
    with recording(model) as rates:
        single = torch.stack([model(x[t]) for t in range(3)])
        ottt_cuda.reset(model)
        with onn.multistep(model, 3):
            multi = model(x.flatten(0, 1)).unflatten(0, (3, 2))
    assert len(rates["1"]) == 6  # 3 single steps, then 3 steps in one multi-step call
    assert_fires(rates)
    torch.testing.assert_close(multi, single, rtol=1e-12, atol=1e-12)


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="trace_decay"):
        onn.Linear(2, 2, trace_decay=1.5)
    with pytest.raises(TypeError, match="trace"):
        onn.Linear(2, 2, trace="yes")
    with pytest.raises(ValueError, match="padding_mode"):
        onn.Conv2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="tau"):
        onn.LIF(tau=0)
    with pytest.raises(ValueError, match="mode"):
        ottt_cuda.set_mode(onn.LIF(), "online")
    with pytest.raises(ValueError, match="step_mode"):
        onn.LIF(step_mode="x")
    with pytest.raises(TypeError, match="model"):
        ottt_cuda.reset(3)


def test_conv_padding_same_and_valid():
    c = onn.Conv2d(1, 1, 3, padding="same")
    assert c.padding == (1, 1) and onn.Conv2d(1, 1, 3, padding="valid").padding == (0, 0)
    assert c(torch.rand(1, 1, 5, 5)).shape == (1, 1, 5, 5)
