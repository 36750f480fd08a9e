"""Neuron options and tau above the ops: the layers, RecurrentLIF, grouped and
dilated convolutions and convert(), trained with OTTT / SLTT / BPTT in float64,
equal the plain-autograd reference (tests/_reference.py) under hard
reset, decay_input, every surrogate and tau != 2. With tau != 2 the trace decay
1 - 1/tau differs from the default 0.5, so a layer that uses the wrong one fails.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ottt_cuda
from ottt_cuda import nn as onn
from _firing import fires
from _compare import rel_err
from _reference import Heaviside, RefNet, RefNeuron, ReplaceForGrad, ref_loss, ref_standardize, run_reference

T, B, CLASSES, ALPHA, TOL = 3, 2, 3, 0.05, 1e-8

# Every surrogate, soft and hard reset (to 0 and to v_reset != 0), decay_input; tau != 2 throughout.
# `gain` scales the input weights so that each configuration's layers fire (decay_input divides by tau).
NEURONS = [
    pytest.param(dict(tau=3.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0), 1.0,
                 id="soft-sigmoid-tau3"),
    pytest.param(dict(tau=4.0, v_th=1.0, v_reset=0.0, decay_input=False, surrogate="atan", alpha=2.0), 1.0,
                 id="hard0-atan-tau4"),
    pytest.param(dict(tau=2.5, v_th=0.9, v_reset=None, decay_input=True, surrogate="triangle", alpha=1.5), 2.5,
                 id="decay_input-triangle-tau2.5"),
    pytest.param(dict(tau=1.6, v_th=0.8, v_reset=-0.1, decay_input=True, surrogate="rectangle", alpha=0.8), 1.6,
                 id="hard-decay_input-rectangle-tau1.6"),
]


def grouped_net(neuron, gain, seed=0):
    """Conv (untraced input) -> LIF -> grouped, dilated conv -> LIF -> avg-pool -> Linear -> LIF -> readout.
    Every traced synapse decays with 1 - 1/tau, as the user of a tau != 2 neuron must set it."""
    torch.manual_seed(seed)
    lam = 1.0 - 1.0 / neuron["tau"]
    net = nn.Sequential(
        onn.Conv2d(2, 4, 3, padding=1, trace=False), onn.LIF(**neuron),
        onn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, trace_decay=lam), onn.LIF(**neuron),
        nn.AvgPool2d(2), nn.Flatten(1),
        onn.Linear(36, 8, trace_decay=lam), onn.LIF(**neuron),
        onn.Linear(8, CLASSES, trace_decay=lam)).double()
    with torch.no_grad():  # weights that keep every layer firing at 5%..95%
        for i, std, bias in ((0, 0.5, 0.6), (2, 0.6, 0.5), (6, 0.6, 0.4)):
            net[i].weight.normal_(0, std * gain)
            net[i].bias.fill_(bias * gain)
    return net


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.rand(T, B, 2, 6, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, CLASSES, (B,), generator=g)


def assert_grads_match(model, ref, skip=()):
    checked = 0
    for name, p in model.named_parameters():
        if name in skip:
            continue
        e = ref.params[name].grad
        assert e is not None and e.abs().max() > 0, f"{name}: no reference gradient; make the test livelier"
        assert rel_err(p.grad, e) <= TOL, f"{name}: relative error {rel_err(p.grad, e):.3g}"
        checked += 1
    assert checked


@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "bptt"])
@pytest.mark.parametrize("neuron,gain", NEURONS)
def test_layers_under_neuron_options_match_reference(neuron, gain, mode):
    model = grouped_net(neuron, gain)
    x, y = data()
    loss, osum = fires(model, lambda: ottt_cuda.train_step(model, x, y, None, T=T, mode=mode, loss_alpha=ALPHA))
    ref = RefNet(model, list(model), {"ottt_a": "ottt"}.get(mode, mode))
    ref_total, ref_osum = run_reference(ref, lambda t: x[t], y, T, ALPHA)
    assert rel_err(osum, ref_osum) <= TOL
    assert loss.item() == pytest.approx(ref_total, rel=1e-12)
    assert_grads_match(model, ref)


@pytest.mark.parametrize("neuron,gain", NEURONS[:2] + NEURONS[3:])
def test_bptt_through_the_reset_matches_reference(neuron, gain):
    """LIF(detach_reset=False) in mode "bptt" back-propagates through the reset too (soft, hard to 0 and to
    v_reset != 0), as the reference RefNeuron(detach_reset=False) does; the detached-reset reference differs."""
    model = grouped_net(dict(neuron, detach_reset=False), gain)
    x, y = data()
    fires(model, lambda: ottt_cuda.train_step(model, x, y, None, T=T, mode="bptt", loss_alpha=ALPHA))
    ref = RefNet(model, list(model), "bptt")
    assert all(op[1].detach_reset is False for op in ref.ops if op[0] == "lif")
    run_reference(ref, lambda t: x[t], y, T, ALPHA)
    assert_grads_match(model, ref)
    detached = RefNet(model, list(model), "bptt")
    for op in detached.ops:
        if op[0] == "lif":
            op[1].detach_reset = True
    run_reference(detached, lambda t: x[t], y, T, ALPHA)
    assert max(rel_err(detached.params[n].grad, ref.params[n].grad) for n in ref.params) > 1e-3


@pytest.mark.parametrize("neuron,gain", NEURONS[:1] + NEURONS[3:])
def test_ottt_o_under_neuron_options_matches_reference(neuron, gain):
    model = grouped_net(neuron, gain)
    x, y = data()
    ref = RefNet(model, list(model), "ottt")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    fires(model, lambda: ottt_cuda.train_step(model, x, y, opt, T=T, mode="ottt_o"))
    run_reference(ref, lambda t: x[t], y, T, ALPHA, optimizer=torch.optim.SGD(list(ref.params.values()), lr=0.3,
                                                                              momentum=0.9), online=True)
    for n, p in model.named_parameters():
        moved = ref.params[n].detach() - before[n]
        assert moved.abs().max() > 0, n
        assert rel_err(p.detach() - before[n], moved) <= TOL, n


def test_the_option_comparison_sees_the_trace_decay():
    # The reference with every trace decaying at 0.5 instead of 1 - 1/tau = 2/3 gives clearly different
    # gradients: the comparisons above distinguish the two.
    neuron, gain = NEURONS[0].values
    model = grouped_net(neuron, gain)
    x, y = data()
    ottt_cuda.train_step(model, x, y, None, T=T)
    ref = RefNet(model, list(model), "ottt")
    for kind, op in ref.ops:
        if kind == "lif":
            op.trace_decay = 0.5
    run_reference(ref, lambda t: x[t], y, T, ALPHA)
    assert rel_err(model[6].weight.grad, ref.params["6.weight"].grad) > 1e-3
    assert rel_err(model[2].weight.grad, ref.params["2.weight"].grad) > 1e-3


def test_grouped_dilated_conv_weight_gradient_uses_the_trace():
    torch.manual_seed(0)
    conv = onn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, trace_decay=0.7).double()
    xs = torch.rand(3, 2, 4, 7, 7, dtype=torch.float64)
    gs = torch.randn(3, 2, 6, 4, 4, dtype=torch.float64)
    gx = []
    for t in range(3):
        x = xs[t].clone().requires_grad_()
        (conv(x) * gs[t]).sum().backward()
        gx.append(x.grad)
    w = conv.weight.detach().clone().requires_grad_()
    x_ref = xs.clone().requires_grad_()
    trace, loss = torch.zeros_like(xs[0]), 0
    for t in range(3):
        trace = 0.7 * trace + xs[t]
        loss = loss + (F.conv2d(trace, w, None, 2, 2, 2, 2) * gs[t]).sum()  # weight gradient from the trace
        loss = loss + (F.conv2d(x_ref[t], w.detach(), None, 2, 2, 2, 2) * gs[t]).sum()  # input gradient W^T g
    loss.backward()
    assert rel_err(conv.weight.grad, w.grad) <= 1e-12
    assert rel_err(torch.stack(gx), x_ref.grad) <= 1e-12
    assert rel_err(conv.bias.grad, gs.sum((0, 1, 3, 4))) <= 1e-12
    g_single = conv.weight.grad.clone()
    conv.weight.grad = None
    ottt_cuda.reset(conv)
    conv.step_mode = "m"
    (conv(xs) * gs).sum().backward()
    assert rel_err(conv.weight.grad, g_single) <= 1e-12


# ---- RecurrentLIF with its options -------------------------------------------------------------------------

IN, HIDDEN = 6, 10

RECURRENT = [
    pytest.param(dict(ws=True, input_trace=True, trace_decay=None),
                 dict(tau=3.0, v_th=1.0, v_reset=0.0, decay_input=False, surrogate="atan", alpha=2.0), id="ws-hard0-atan"),
    pytest.param(dict(ws=False, input_trace=False, trace_decay=0.3),
                 dict(tau=4.0, v_th=0.9, v_reset=None, decay_input=True, surrogate="triangle", alpha=1.5),
                 id="untraced-input-decay0.3-triangle"),
    pytest.param(dict(ws=True, input_trace=True, trace_decay=0.8),
                 dict(tau=1.6, v_th=1.0, v_reset=-0.1, decay_input=False, surrogate="rectangle", alpha=0.8),
                 id="ws-decay0.8-rectangle"),
    pytest.param(dict(ws=False, input_trace=True, trace_decay=None),
                 dict(tau=2.5, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0),
                 id="plain-sigmoid-tau2.5"),
]


def recurrent_net(opts, neuron, seed=0):
    torch.manual_seed(seed)
    lam = 1.0 - 1.0 / neuron["tau"]
    net = nn.Sequential(onn.RecurrentLIF(IN, HIDDEN, **opts, **neuron),
                        onn.Linear(HIDDEN, CLASSES, trace_decay=lam)).double()
    scale = neuron["tau"] if neuron["decay_input"] else 1.0
    with torch.no_grad():
        net[0].input.weight.normal_(0, 0.6)
        net[0].input.bias.fill_(0.5 * scale)
        if opts["ws"]:
            net[0].input.gain.fill_(1.5 * scale)
        else:
            net[0].input.weight.mul_(scale)
        net[0].recurrent.weight.normal_(0, 0.5 * scale)
        net[1].weight.normal_(0, 0.5)
    return net


class RefRecurrent:
    """x -> RecurrentLIF -> Linear readout, written from the layer's definition: I[t] = F x[t] + W s[t-1] + b;
    F's gradient uses the trace of x (decay `trace_decay`, else the neuron's leak) or x itself
    (input_trace=False), W's the trace of s[t-1]; the readout's the trace of s with the neuron's leak."""

    def __init__(self, model, opts, neuron, mode):
        self.mode, self.opts = mode, opts
        lam = 1.0 - 1.0 / neuron["tau"]
        self.d_syn = lam if opts["trace_decay"] is None else opts["trace_decay"]
        self.d_out = lam
        self.neuron = RefNeuron(bptt=mode == "bptt", **neuron)
        self.params = {n: nn.Parameter(p.detach().clone()) for n, p in model.named_parameters()}
        self.eps = getattr(model[0].input, "eps", None)
        self.x_hat = self.r_hat = self.s_hat = self.s_prev = None

    def _trace(self, old, new, decay):
        decay = 0.0 if self.mode == "sltt" else decay
        return new.detach() if old is None else decay * old + new.detach()

    def _syn(self, fn, x, grad_source):
        if self.mode == "bptt":
            return fn(x)
        with torch.no_grad():
            out = fn(x)
        return ReplaceForGrad.apply(fn(ReplaceForGrad.apply(x, grad_source)), out)

    def step(self, x):
        p = self.params
        w_in = p["0.input.weight"]
        if self.opts["ws"]:
            w_in = ref_standardize(w_in, p["0.input.gain"], self.eps)
        self.x_hat = self._trace(self.x_hat, x, self.d_syn)
        cur = self._syn(lambda z: F.linear(z, w_in, p["0.input.bias"]), x,
                        self.x_hat if self.opts["input_trace"] else x.detach())
        if self.s_prev is not None:
            self.r_hat = self._trace(self.r_hat, self.s_prev, self.d_syn)
            cur = cur + self._syn(lambda z: F.linear(z, p["0.recurrent.weight"]), self.s_prev, self.r_hat)
        s = self.neuron(cur)
        self.s_prev = s if self.mode == "bptt" else s.detach()
        self.s_hat = self._trace(self.s_hat, s, self.d_out)
        return self._syn(lambda z: F.linear(z, p["1.weight"], p["1.bias"]), s, self.s_hat)


@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "bptt"])
@pytest.mark.parametrize("opts,neuron", RECURRENT)
def test_recurrent_lif_options_match_reference(opts, neuron, mode):
    model = recurrent_net(opts, neuron)
    g = torch.Generator().manual_seed(2)
    x = 2.0 * torch.rand(T, B, IN, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (B,), generator=g)
    _, osum = fires(model, lambda: ottt_cuda.train_step(model, x, y, None, T=T, mode=mode, loss_alpha=ALPHA))
    ref = RefRecurrent(model, opts, neuron, {"ottt_a": "ottt"}.get(mode, mode))
    ref_total, ref_osum = run_reference(ref, lambda t: x[t], y, T, ALPHA)
    assert rel_err(osum, ref_osum) <= TOL
    assert_grads_match(model, ref)


def test_recurrent_lif_trace_options_change_the_gradient():
    # Guards against options that do nothing: input_trace and trace_decay each move the input weight's gradient.
    opts, neuron = RECURRENT[0].values
    g = torch.Generator().manual_seed(2)
    x = 2.0 * torch.rand(T, B, IN, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (B,), generator=g)
    grads = []
    for change in ({}, {"input_trace": False}, {"trace_decay": 0.3}):
        model = recurrent_net({**opts, **change}, neuron)
        ottt_cuda.train_step(model, x, y, None, T=T)
        grads.append(model[0].input.weight.grad)
    assert rel_err(grads[1], grads[0]) > 1e-3 and rel_err(grads[2], grads[0]) > 1e-3


# ---- convert() under neuron options: tau carried into the trace decay -------------------------------------


def _sj_net(neuron_factory, gain):
    from spikingjelly.activation_based import layer

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), neuron_factory(),
                        layer.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), neuron_factory(),
                        layer.AvgPool2d(2), layer.Flatten(1), layer.Linear(36, 8), neuron_factory(),
                        nn.Linear(8, CLASSES)).double()
    with torch.no_grad():
        for i, std, bias in ((0, 0.5, 0.6), (2, 0.6, 0.5), (6, 0.6, 0.4)):
            net[i].weight.normal_(0, std * gain)
            net[i].bias.fill_(bias * gain)
    return net


# (SpikingJelly neuron, the options ottt_cuda must run it with, convert's tau argument, weight gain for liveness);
# detach_reset=True as in OTTT (the reference detaches the reset; BPTT through the reset is another test's job).
def _sj_cases():
    pytest.importorskip("spikingjelly.activation_based", reason="spikingjelly is not installed")
    from spikingjelly.activation_based import neuron, surrogate
    return {
        "lif-tau3-hard0-decay_input-atan": (
            lambda: neuron.LIFNode(tau=3.0, decay_input=True, v_reset=0.0, surrogate_function=surrogate.ATan(2.5),
                                   detach_reset=True),
            dict(tau=3.0, v_th=1.0, alpha=2.5, v_reset=0.0, decay_input=True, surrogate="atan"), None, 4.0),
        "lif-tau4-soft-rect": (
            lambda: neuron.LIFNode(tau=4.0, decay_input=False, v_reset=None, v_threshold=0.9,
                                   surrogate_function=surrogate.Rect(alpha=0.7), detach_reset=True),
            dict(tau=4.0, v_th=0.9, alpha=0.7, v_reset=None, decay_input=False, surrogate="rectangle"), None, 1.5),
        "ottt-lif-tau-override-5": (
            lambda: neuron.OTTTLIFNode(tau=2.0, surrogate_function=surrogate.Sigmoid(alpha=3.0), detach_reset=True),
            dict(tau=5.0, v_th=1.0, alpha=3.0, v_reset=None, decay_input=False, surrogate="sigmoid"), 5.0, 1.5),
    }


CONVERT_CASES = ["lif-tau3-hard0-decay_input-atan", "lif-tau4-soft-rect", "ottt-lif-tau-override-5"]


@pytest.mark.parametrize("mode", ["ottt_a", "bptt"])
@pytest.mark.parametrize("case", CONVERT_CASES)
def test_convert_under_neuron_options_matches_reference(case, mode):
    make, expected, tau, gain = _sj_cases()[case]
    model = ottt_cuda.convert(_sj_net(make, gain), tau=tau)
    x, y = data()
    _, osum = fires(model, lambda: ottt_cuda.train_step(model, x, y, None, T=T, mode=mode, loss_alpha=ALPHA))
    # The reference's neurons follow the SpikingJelly model's declared options, not the converted modules.
    ref = RefNet(model, list(model), {"ottt_a": "ottt"}.get(mode, mode), neuron=expected)
    _, ref_osum = run_reference(ref, lambda t: x[t], y, T, ALPHA)
    assert rel_err(osum, ref_osum) <= TOL
    # The readout (no neuron after it) included: its input trace decays with the last neuron's leak.
    assert_grads_match(model, ref)


@pytest.mark.parametrize("case", CONVERT_CASES[:1])
def test_convert_readout_trace_decays_with_the_last_neuron(case):
    make, expected, tau, gain = _sj_cases()[case]
    model = ottt_cuda.convert(_sj_net(make, gain), tau=tau)
    x, y = data()
    fires(model, lambda: ottt_cuda.train_step(model, x, y, None, T=T, loss_alpha=ALPHA))
    ref = RefNet(model, list(model), "ottt", neuron=expected)
    run_reference(ref, lambda t: x[t], y, T, ALPHA)
    assert rel_err(model[8].weight.grad, ref.params["8.weight"].grad) <= TOL
