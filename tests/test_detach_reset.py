"""LIF(detach_reset=False): under mode "bptt" the multi-step op back-propagates
through the reset too, on every backend, as SpikingJelly's BPTT does; the
default (detach_reset=True) keeps today's gradients; OTTT/SLTT keep the reset
detached and say so. Also: a hard-reset LIF starts at v_reset, and convert()
carries the flag over.

Every expected value comes from code written here (an autograd loop, a
finite-difference check of a smooth stand-in) or from SpikingJelly, never from
the kernels under test.
"""
import math
import warnings

import pytest
import torch
import torch.nn as nn

import ottt_cuda
from ottt_cuda import nn as onn
from _firing import fires
from conftest import NEURONS, backend_params, using_backend

T = 5
F64 = torch.float64
EXACT = dict(rtol=1e-11, atol=1e-12)


# ---- an independent BPTT loop (SpikingJelly's LIF equations) ----------------

def _sg(z, surrogate, alpha):
    """Surrogate derivatives, written from their definitions (docs/design.md, "The neuron")."""
    if surrogate == "sigmoid":
        return alpha * torch.sigmoid(alpha * z) * (1 - torch.sigmoid(alpha * z))
    if surrogate == "atan":
        return alpha / 2 / (1 + (math.pi / 2 * alpha * z) ** 2)
    if surrogate == "triangle":
        return alpha * torch.clamp(1 - alpha * z.abs(), min=0)
    return alpha * (z.abs() < 0.5 / alpha).to(z.dtype)


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, surrogate, alpha):
        ctx.save_for_backward(z)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * _sg(z, ctx.surrogate, ctx.alpha), None, None


def _charge(v, x, tau, v_reset, decay_input):
    vr = 0.0 if v_reset is None else v_reset
    return v + (x - (v - vr)) / tau if decay_input else v - (v - vr) / tau + x


def loop_bptt(x_seq, v0, *, detach_reset, tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid",
              alpha=4.0):
    v, spikes = v0, []
    for x in x_seq:
        h = _charge(v, x, tau, v_reset, decay_input)
        s = _Step.apply(h - v_th, surrogate, alpha)
        sr = s.detach() if detach_reset else s
        v = h - v_th * sr if v_reset is None else h * (1 - sr) + v_reset * sr
        spikes.append(s)
    return torch.stack(spikes), v


def _data(n=(3, 7), seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *n, generator=gen, dtype=F64) * 1.1 + 0.45
    v0 = torch.rand(n, generator=gen, dtype=F64) - 0.2
    gy = torch.randn(T, *n, generator=gen, dtype=F64)
    gv = torch.randn(n, generator=gen, dtype=F64)
    return x, v0, gy, gv


def _grads(fn, x, v0, gy, gv):
    xg, vg = x.clone().requires_grad_(), v0.clone().requires_grad_()
    s, v_last = fn(xg, vg)
    torch.autograd.backward([s, v_last], [gy, gv])
    return s.detach(), v_last.detach(), xg.grad, vg.grad


BACKENDS = [p for p in backend_params()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("neuron", NEURONS)
@pytest.mark.parametrize("detach_reset", [True, False], ids=["detached", "through-reset"])
def test_op_matches_independent_bptt_loop(backend, neuron, detach_reset):
    device, name = backend
    x, v0, gy, gv = (t.to(device) for t in _data())
    if neuron.get("decay_input"):  # the input enters as x / tau: scale it so that the neurons fire
        x = x * neuron["tau"]
    # detach_reset=True is passed implicitly: the default must keep today's gradients.
    kw = dict(neuron) if detach_reset else dict(neuron, detach_reset=False)
    with using_backend(name):
        got = _grads(lambda a, b: ottt_cuda.ops.lif_multistep(a, b, **kw), x, v0, gy, gv)
    want = _grads(lambda a, b: loop_bptt(a, b, detach_reset=detach_reset, **neuron), x, v0, gy, gv)
    other = _grads(lambda a, b: loop_bptt(a, b, detach_reset=not detach_reset, **neuron), x, v0, gy, gv)
    assert 0.1 < want[0].mean().item() < 0.9, "the neurons must fire for the reset to matter"
    # The case can tell the two flags apart: their gradients differ well beyond the tolerance.
    assert (want[2] - other[2]).abs().max().item() > 1e-3
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **EXACT)


# ---- finite differences of a smooth stand-in (the gradcheck) ---------------
#
# At x0 the surrogate gradient is the exact derivative of a function that is
# smooth around x0: the spike s = H(z0) + P(z) - P(z0), P the surrogate's
# primitive and z0 the values at x0 (constants). With the reset not detached
# that s drives the reset as well; detached, the reset uses the constant H(z0).

_PRIMITIVE = {"sigmoid": lambda z, a: torch.sigmoid(a * z),
              "atan": lambda z, a: torch.atan(math.pi / 2 * a * z) / math.pi + 0.5}


def _smooth_objective(x_seq, v0, z0, gy, gv, *, detach_reset, tau, v_th, v_reset, decay_input, surrogate, alpha):
    P = _PRIMITIVE[surrogate]
    v, total, zs = v0, 0.0, []
    for t in range(x_seq.shape[0]):
        h = _charge(v, x_seq[t], tau, v_reset, decay_input)
        z = h - v_th
        zs.append(z)
        zt = z if z0 is None else z0[t]
        s = (zt >= 0).to(z.dtype) + P(z, alpha) - P(zt, alpha)
        sr = (zt >= 0).to(z.dtype) if detach_reset else s
        v = h - v_th * sr if v_reset is None else h * (1 - sr) + v_reset * sr
        total = total + (gy[t] * s).sum()
    return total + (gv * v).sum(), zs


FD_NEURONS = [
    pytest.param(dict(tau=2.0, v_th=1.0, v_reset=None, decay_input=False, surrogate="sigmoid", alpha=4.0), id="soft"),
    pytest.param(dict(tau=3.0, v_th=0.8, v_reset=None, decay_input=True, surrogate="atan", alpha=2.0),
                 id="soft-decay_input-atan"),
    pytest.param(dict(tau=1.7, v_th=0.9, v_reset=0.25, decay_input=False, surrogate="sigmoid", alpha=3.0),
                 id="hard0.25"),
    pytest.param(dict(tau=2.5, v_th=1.0, v_reset=-0.3, decay_input=True, surrogate="atan", alpha=2.5),
                 id="hard-0.3-decay_input-atan"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("neuron", FD_NEURONS)
@pytest.mark.parametrize("detach_reset", [True, False], ids=["detached", "through-reset"])
def test_backward_equals_finite_differences(backend, neuron, detach_reset):
    device, name = backend
    x, v0, gy, gv = (t.to(device) for t in _data(n=(2, 3), seed=1))
    with using_backend(name):
        _, _, gx, gv0 = _grads(lambda a, b: ottt_cuda.ops.lif_multistep(a, b, detach_reset=detach_reset, **neuron),
                               x, v0, gy, gv)
    with torch.no_grad():
        _, z0 = _smooth_objective(x, v0, None, gy, gv, detach_reset=detach_reset, **neuron)
        z0 = [z.clone() for z in z0]
        assert min(z.abs().min().item() for z in z0) > 1e-4, "no membrane may sit on the threshold"
        eps = 1e-6

        def fd(t):
            out = torch.empty_like(t)
            for i in range(t.numel()):
                e = torch.zeros_like(t).view(-1)
                e[i] = eps
                e = e.view_as(t)
                plus = x + e if t is x else x, v0 + e if t is v0 else v0
                minus = x - e if t is x else x, v0 - e if t is v0 else v0
                fp, _ = _smooth_objective(*plus, z0, gy, gv, detach_reset=detach_reset, **neuron)
                fm, _ = _smooth_objective(*minus, z0, gy, gv, detach_reset=detach_reset, **neuron)
                out.view(-1)[i] = (fp - fm) / (2 * eps)
            return out

        torch.testing.assert_close(gx, fd(x), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(gv0, fd(v0), rtol=1e-6, atol=1e-7)


# ---- against SpikingJelly's BPTT --------------------------------------------

def _sj():
    return pytest.importorskip("spikingjelly.activation_based", reason="spikingjelly is not installed")


SJ_NEURONS = [pytest.param(dict(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=None), id="soft"),
              pytest.param(dict(tau=3.0, decay_input=True, v_threshold=0.6, v_reset=None), id="soft-decay_input"),
              pytest.param(dict(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0), id="hard0"),
              pytest.param(dict(tau=1.5, decay_input=True, v_threshold=0.8, v_reset=0.2), id="hard0.2-decay_input")]


def _lif_kwargs(sj_kw):
    return dict(tau=sj_kw["tau"], decay_input=sj_kw["decay_input"], v_th=sj_kw["v_threshold"],
                v_reset=sj_kw["v_reset"], surrogate="sigmoid", alpha=4.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sj_kw", SJ_NEURONS)
@pytest.mark.parametrize("detach_reset", [False, True], ids=["through-reset", "detached"])
def test_lif_equals_spikingjelly_multistep_lifnode(backend, sj_kw, detach_reset):
    device, name = backend
    _sj()
    from spikingjelly.activation_based import neuron, surrogate

    x, _, gy, _ = _data(n=(4, 6), seed=2)
    x, gy = x.to(device), gy.to(device)
    if sj_kw["decay_input"]:  # the input enters as x / tau: scale it so that the neurons fire
        x = x * sj_kw["tau"]
    sj = neuron.LIFNode(surrogate_function=surrogate.Sigmoid(alpha=4.0), detach_reset=detach_reset, step_mode="m",
                        **sj_kw)
    xs = x.clone().requires_grad_()
    s_sj = sj(xs)
    (s_sj * gy).sum().backward()

    lif = onn.LIF(step_mode="m", detach_reset=detach_reset, **_lif_kwargs(sj_kw))
    ottt_cuda.set_mode(lif, "bptt")
    xo = x.clone().requires_grad_()
    with using_backend(name):
        s_o = lif(xo)
        (s_o * gy).sum().backward()
    assert 0.1 < s_sj.mean().item() < 0.9
    torch.testing.assert_close(s_o, s_sj.detach(), **EXACT)
    torch.testing.assert_close(xo.grad, xs.grad, **EXACT)


def _sj_net(sj_kw, detach_reset=None):
    from spikingjelly.activation_based import layer, neuron, surrogate

    kw = dict(surrogate_function=surrogate.Sigmoid(alpha=4.0), **sj_kw)
    if detach_reset is not None:
        kw["detach_reset"] = detach_reset
    torch.manual_seed(3)
    net = nn.Sequential(layer.Linear(6, 10), neuron.LIFNode(**kw), layer.Linear(10, 8), neuron.LIFNode(**kw),
                        layer.Linear(8, 3)).double()
    with torch.no_grad():  # weights that keep both spiking layers firing
        net[0].weight.normal_(0, 0.7)
        net[0].bias.fill_(0.6)
        net[2].weight.normal_(0, 0.8)
        net[2].bias.fill_(0.5)
    return net


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sj_kw", SJ_NEURONS[::2] + SJ_NEURONS[3:])
def test_converted_model_equals_spikingjelly_bptt(backend, sj_kw):
    """SpikingJelly's LIFNode default (detach_reset=False) through convert(): same BPTT weight gradients."""
    device, name = backend
    _sj()
    from spikingjelly.activation_based import functional

    net = _sj_net(sj_kw)  # SpikingJelly's own default for detach_reset
    assert net[1].detach_reset is False
    model = ottt_cuda.convert(net).to(device)
    assert all(m.detach_reset is False for m in model.modules() if isinstance(m, onn.LIF))
    ottt_cuda.set_mode(model, "bptt")
    gen = torch.Generator().manual_seed(4)
    x = (torch.rand(T, 5, 6, generator=gen, dtype=F64) * 2).to(device)
    w_out = torch.randn(T, 5, 3, generator=gen, dtype=F64).to(device)

    # SpikingJelly: its own multi-step BPTT over [T, B, ...].
    functional.set_step_mode(net, "m")
    functional.reset_net(net)
    (net(x) * w_out).sum().backward()

    ottt_cuda.reset(model)
    with using_backend(name), onn.multistep(model, T):
        out = fires(model, lambda: model(x.flatten(0, 1)).unflatten(0, (T, -1)))
        (out * w_out).sum().backward()
    for (n_sj, p_sj), (n_o, p_o) in zip(net.named_parameters(), model.named_parameters()):
        assert n_sj == n_o
        torch.testing.assert_close(p_o.grad, p_sj.grad, **EXACT, msg=f"gradient of {n_o}")


# ---- the flag itself ----------------------------------------------------------

def test_convert_carries_detach_reset():
    _sj()
    from spikingjelly.activation_based import neuron

    for sj_flag in (False, True):
        net = nn.Sequential(nn.Linear(2, 3), neuron.LIFNode(detach_reset=sj_flag), nn.Linear(3, 2),
                            neuron.IFNode(detach_reset=sj_flag))
        conv = ottt_cuda.convert(net)
        assert conv[1].detach_reset is sj_flag and conv[3].detach_reset is sj_flag
    assert ottt_cuda.convert(nn.Sequential(neuron.LIFNode()))[0].detach_reset is False  # SpikingJelly's default


@pytest.mark.parametrize("reset_delay", [True, False])
def test_convert_snntorch_leaky_bptt_gradients_equal_snntorchs(reset_delay):
    """snnTorch's zero reset is detached with reset_delay (mem_reset detaches the spike) and back-propagated
    through without it (mem - spk * mem): convert carries that over, so BPTT through the converted model
    gives snnTorch's own gradients, and the other choice of detach_reset would not."""
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    T, B = 6, 5
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 7), snn.Leaky(beta=0.7, threshold=0.8, init_hidden=True,
                                                   reset_mechanism="zero", reset_delay=reset_delay), nn.Linear(7, 3))
    with torch.no_grad():
        net[0].weight.mul_(2)  # livelier: about 20% of the neurons fire
    converted = {flag: ottt_cuda.convert(net) for flag in ("as converted", "flipped")}
    assert converted["as converted"][1].detach_reset is reset_delay
    converted["flipped"][1].detach_reset = not reset_delay
    x = torch.rand(T, B, 4) * 2

    net[1].reset_hidden()  # snnTorch, one step at a time, float32 (its membrane state is float32)
    spikes, outs = [], []
    for t in range(T):
        spikes.append(net[1](net[0](x[t])))
        outs.append(net[2](spikes[-1]))
    assert 0.05 < torch.stack(spikes).mean().item() < 0.95
    (torch.stack(outs) ** 2).sum().backward()
    expected = net[0].weight.grad

    grads = {}
    for flag, model in converted.items():
        ottt_cuda.set_mode(model, "bptt")
        onn.set_step_mode(model, "m")
        ottt_cuda.reset(model)
        out = model(x)
        torch.testing.assert_close(out, torch.stack(outs), rtol=1e-6, atol=1e-6)
        (out ** 2).sum().backward()
        grads[flag] = model[0].weight.grad
    torch.testing.assert_close(grads["as converted"], expected, rtol=1e-5, atol=1e-5)
    assert (grads["flipped"] - expected).abs().max() > 0.1 * expected.abs().max()


def test_default_is_detached_and_bad_values_are_named():
    assert onn.LIF().detach_reset is True
    with pytest.raises(TypeError, match="detach_reset"):
        onn.LIF(detach_reset="no")
    with pytest.raises(TypeError, match="detach_reset"):
        ottt_cuda.ops.lif_multistep(torch.zeros(2, 3), detach_reset=0)


@pytest.mark.parametrize("mode", ["ottt", "sltt"])
def test_online_modes_keep_the_reset_detached_and_say_so(mode):
    x, _, gy, _ = _data(n=(3, 4), seed=5)
    grads = {}
    for flag in (True, False):
        lif = onn.LIF(v_reset=0.0, detach_reset=flag)
        ottt_cuda.set_mode(lif, mode)
        xs = x.clone().requires_grad_()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = torch.stack([lif(xs[t]) for t in range(T)])
        msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if flag:
            assert not any("detach_reset" in m for m in msgs)
        else:
            # Said once per layer, not once per step.
            assert sum("detach_reset=False" in m and "detached" in m for m in msgs) == 1
        (out * gy).sum().backward()
        grads[flag] = xs.grad
    # The method's gradients: the spatial error through the surrogate, nothing through the reset.
    torch.testing.assert_close(grads[False], grads[True], rtol=0, atol=0)


# ---- a hard-reset membrane starts at v_reset ---------------------------------

@pytest.mark.parametrize("mode", ["ottt", "bptt"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_hard_reset_membrane_starts_at_v_reset(mode, step_mode):
    tau, v_th, v_reset = 2.0, 1.0, 0.6
    # From v = v_reset the charge is h = v_reset + x (no leak toward v_reset yet):
    # x = 0.5 fires (1.1 >= 1); from v = 0 it would give h = 0.8 and not fire.
    x = torch.tensor([[0.5, 0.3]], dtype=F64)
    lif = onn.LIF(tau=tau, v_th=v_th, v_reset=v_reset, step_mode=step_mode)
    ottt_cuda.set_mode(lif, mode)
    for _ in range(2):  # and again after a reset
        ottt_cuda.reset(lif)
        out = lif(x if step_mode == "s" else x.unsqueeze(0))
        torch.testing.assert_close(out.reshape(-1), torch.tensor([1.0, 0.0], dtype=F64))
        # fired -> v_reset; silent -> h = 0.6 + 0.3
        torch.testing.assert_close(lif.v.detach().reshape(-1), torch.tensor([0.6, 0.9], dtype=F64), **EXACT)


# ---- compiled ops: schema, fake kernel and autograd registration ------------

def _compiled():
    if not ottt_cuda._backend.runs_on("cpu", "cpu"):
        pytest.skip("the compiled extension is not built")
    return torch.ops.ottt_cuda


def test_compiled_op_registration_with_the_reset_attached():
    ops = _compiled()
    x, v0, gy, gv = _data(n=(2, 3), seed=6)
    args = (x.clone().requires_grad_(), v0.clone().requires_grad_(), 2.0, 0.9, 0.1, True, "atan", 2.0, True)
    torch.library.opcheck(ops.lif_multistep_fwd, args, {"detach_reset": False})
    _, _, z = ops.lif_multistep_fwd(x, v0, 2.0, 0.9, 0.1, True, "atan", 2.0, True)
    torch.library.opcheck(ops.lif_multistep_bwd, (gy, gv, z, 2.0, 0.9, 0.1, True, "atan", 2.0),
                          {"detach_reset": False})
