"""The neuron writes the next synapse's trace (nn.fuse_traces, nn/_handoff.py).

Every comparison is against the same model with fusion switched off (each synapse updates its own trace,
the path checked elsewhere against SpikingJelly and the references), in float64. A counter on the
synapses' own trace updates shows that the fused path ran, or that a disturbed one fell back.
"""
import copy

import pytest
import torch
import torch.nn as tnn

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.models.vgg import VGGWS
from ottt_cuda import _backend
from ottt_cuda.nn import _fast
from conftest import backend_params, using_backend

BACKENDS = ["torch"] + (["cpu"] if _backend.runs_on("cpu", "cpu") else [])


@pytest.fixture
def own_updates(monkeypatch):
    """The number of trace updates the synapses ran themselves."""
    count = [0]
    out_of_place, in_place = _fast.trace_update, _fast.trace_update_

    def counted(f):
        def call(*args):
            count[0] += 1
            return f(*args)
        return call

    monkeypatch.setattr(_fast, "trace_update", counted(out_of_place))
    monkeypatch.setattr(_fast, "trace_update_", counted(in_place))
    return count


def _vgg(seed=0):
    torch.manual_seed(seed)
    # conv -> LIF -> Scale(2.74) -> conv twice (fused), one through an average pool (not fused)
    return VGGWS([6, 5, "A", 7, 4], num_classes=3, in_channels=2).double()


def _pair(model):
    unfused = copy.deepcopy(model)
    assert onn.fuse_traces(unfused, False) == 0
    return model, unfused


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _close(a, b, tol=1e-12):
    for i, (p, q) in enumerate(zip(a, b)):
        assert torch.allclose(p, q, rtol=tol, atol=tol * max(1.0, q.abs().max().item())), i


def test_fuse_traces_links_lif_to_the_synapse_after_flatten_identity_and_scale_only():
    m = tnn.Sequential(onn.Linear(4, 5), onn.LIF(), onn.Scale(2.0), tnn.Identity(), onn.Scale(0.5), onn.Linear(5, 6),
                       onn.LIF(), tnn.ReLU(), onn.Linear(6, 3),  # a module that is not linear: no link
                       onn.LIF(), onn.Linear(3, 3, trace=False),  # an untraced synapse: no link
                       onn.LIF())  # nothing after: no link
    assert onn.fuse_traces(m) == 1
    lifs = [x for x in m if isinstance(x, onn.LIF)]
    assert lifs[0]._trace_link.consumer is m[5] and lifs[0]._trace_link.scale == 1.0
    assert [x._trace_link for x in lifs[1:]] == [None, None, None]
    assert "_trace_link" not in dict(m.named_modules())  # not a submodule
    assert len(list(m.parameters())) == 8 and "consumer" not in str(m)
    assert onn.fuse_traces(m, False) == 0 and lifs[0]._trace_link is None
    with pytest.raises(TypeError, match="model"):
        onn.fuse_traces([m])
    with pytest.raises(TypeError, match="enabled"):
        onn.fuse_traces(m, 1)


def test_the_paper_vgg_is_built_fused_and_average_pooling_ends_a_link():
    m = _vgg()
    linked = [(i, lif._trace_link) for i, lif in enumerate(m.features) if isinstance(lif, onn.LIF)]
    assert [(i, link is not None) for i, link in linked] == [(1, True), (4, False), (8, True), (11, False)]
    assert linked[0][1].consumer is m.features[3] and linked[0][1].scale == pytest.approx(2.74)


@pytest.mark.parametrize("device_backend", backend_params())
@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
def test_fused_vgg_trains_as_unfused_and_skips_two_trace_updates_per_step(device_backend, mode, own_updates):
    device, backend = device_backend
    T, steps = 4, 2
    fused, unfused = _pair(_vgg().to(device))
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64, device=device)
    y = torch.tensor([0, 2, 1], device=device)
    opt_f = torch.optim.SGD(fused.parameters(), lr=0.5)
    opt_u = torch.optim.SGD(unfused.parameters(), lr=0.5)
    with using_backend(backend):
        counts = []
        for _ in range(steps):
            own_updates[0] = 0
            loss_f, _ = ottt_cuda.train_step(fused, x, y, opt_f, T=T, mode=mode)
            counts.append(own_updates[0])
            own_updates[0] = 0
            loss_u, _ = ottt_cuda.train_step(unfused, x, y, opt_u, T=T, mode=mode)
            counts.append(own_updates[0])
            assert loss_f.item() == pytest.approx(loss_u.item(), rel=1e-12)
            _close(_grads(fused), _grads(unfused))
    # 4 traced synapses (3 convs after the first, the classifier): 2 get their trace from the LIF
    assert counts == [2 * T, 4 * T] * steps
    _close(list(fused.parameters()), list(unfused.parameters()))
    # the synapse keeps the trace of the spikes, in units of its input / 2.74
    assert fused.features[3]._a_scale == pytest.approx(2.74) and unfused.features[3]._a_scale == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_lif_flatten_linear_is_fused_exactly(backend, own_updates):
    """With nothing but a reshape between them the hand-over is the same arithmetic: equal to the last bit."""
    torch.manual_seed(1)
    m = tnn.Sequential(onn.Conv2d(2, 3, 3, padding=1, trace=False), onn.LIF(), tnn.Flatten(1), onn.Linear(3 * 16, 4))
    fused, unfused = _pair(m)
    assert onn.fuse_traces(fused) == 1
    x = torch.rand(2, 2, 4, 4) * 3
    with using_backend(backend):
        onn.reset(fused), onn.reset(unfused)
        for _ in range(3):  # a user's loop: every step's graph alive until one backward at the end
            out_f = fused(x)
        n_fused = own_updates[0]
        for _ in range(3):
            out_u = unfused(x)
        assert (n_fused, own_updates[0]) == (0, 3)
        out_f.sum().backward()
        out_u.sum().backward()
    assert torch.equal(fused[3].a_hat.view(2, -1), unfused[3].a_hat)
    for p, q in zip(fused.parameters(), unfused.parameters()):
        assert torch.equal(p.grad, q.grad)


def _hooked_pair(hook_on, make_hook):
    fused, unfused = _pair(_vgg(3))
    for m in (fused, unfused):
        m.features[hook_on].register_forward_hook(make_hook())
    return fused, unfused


@pytest.mark.parametrize("what", ["replace", "in_place", "replace_at_step_2"])
def test_a_hook_that_changes_the_tensor_on_the_way_makes_the_synapse_update_its_own_trace(what, own_updates):
    """A hook that returns another tensor, or writes into the spikes in place: the synapse's input is no
    longer what the LIF traced, so it must not take the hand-over (the gradient would be silently wrong)."""
    def make_hook():
        step = [0]

        def hook(module, inputs, out):
            step[0] += 1
            if what == "in_place":
                out.mul_(1.5)  # on the spikes: the version counter moves
                return None
            if what == "replace_at_step_2" and step[0] != 2:
                return None
            return out * 1.5
        return hook

    # in place on the LIF's output; the others on the Scale's
    fused, unfused = _hooked_pair(1 if what == "in_place" else 2, make_hook)
    x, y = torch.rand(2, 2, 8, 8, dtype=torch.float64), torch.tensor([1, 0])
    T = 4
    onn.reset(fused), onn.reset(unfused)
    outs_f, outs_u = [], []
    for _ in range(T):
        outs_f.append(fused(x))
        outs_u.append(unfused(x))
    sum(ottt_cuda.training.step_loss(o, y, T, 0.05) for o in outs_f).backward()
    sum(ottt_cuda.training.step_loss(o, y, T, 0.05) for o in outs_u).backward()
    _close(_grads(fused), _grads(unfused))
    assert not torch.equal(fused.features[3].weight.grad, torch.zeros(()))
    if what == "replace_at_step_2":
        # step 1 handed over (scale 2.74); step 2 fell back and turned the trace into input units; from then on
        # this synapse updates its own trace, the other link keeps handing over: 1 + 4 + 4 + 4 + ... own updates
        assert fused.features[3]._a_scale == 1.0 and fused.features[10]._a_scale == pytest.approx(2.74)
    else:
        assert fused.features[3]._a_scale == 1.0


def test_a_synapse_called_with_another_tensor_or_twice_never_takes_a_stale_trace(own_updates):
    torch.manual_seed(0)
    lif, syn = onn.LIF(), onn.Linear(5, 2)
    m = tnn.Sequential(lif, syn).double()
    ref = copy.deepcopy(m)
    onn.fuse_traces(m), onn.fuse_traces(ref, False)
    x, other = torch.rand(3, 5, dtype=torch.float64) * 3, torch.rand(3, 5, dtype=torch.float64)
    for net in (m, ref):
        onn.reset(net)
        s = net[0](x)
        net[1](other)  # another input first: updates the trace with it
        net[1](s)  # then the spikes: the hand-over was computed from the trace before `other`
        net[1](s)  # and a second time: adopted at most once
    assert torch.allclose(m[1].a_hat * m[1]._a_scale, ref[1].a_hat, rtol=0, atol=1e-15)
    assert own_updates[0] == 6  # 3 calls each: none handed over


def test_a_kept_spike_tensor_does_not_keep_traces_alive():
    m = tnn.Sequential(onn.LIF(), onn.Scale(2.0), onn.Linear(4, 2))
    assert onn.fuse_traces(m) == 1
    kept = []
    m[0].register_forward_hook(lambda mod, i, out: kept.append(out))
    m[1].register_forward_hook(lambda mod, i, out: kept.append(out))
    onn.reset(m)
    for _ in range(3):
        m(torch.rand(2, 4) * 3)
    assert m[2]._a_scale == 2.0
    assert all(not hasattr(t, "_ottt_trace_handoff") for t in kept)


@pytest.mark.parametrize("mode", ["sltt", "bptt"])
def test_other_modes_run_unfused_with_the_same_gradients(mode, own_updates):
    fused, unfused = _pair(_vgg(5))
    x, y = torch.rand(2, 2, 8, 8, dtype=torch.float64), torch.tensor([2, 0])
    for m in (fused, unfused):
        ottt_cuda.train_step(m, x, y, None, T=3, mode=mode)
    _close(_grads(fused), _grads(unfused))
    assert fused.features[3]._a_scale == 1.0
    assert own_updates[0] == 0  # SLTT's gradient uses the input, BPTT's plain autograd: no trace in either


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_chunked_ottt_a_hands_over_all_steps_of_a_chunk(backend, chunk, own_updates):
    """Multi-step (chunked OTTT_A): the LIF stacks the linked synapse's traces of the chunk's steps; the
    gradients equal the unfused chunked ones and the step-by-step fused ones, over chunks of 1, 2 and 4 of
    T = 4 steps (the hand-over also carries across chunks)."""
    T = 4
    fused, unfused = _pair(_vgg(5))
    stepwise = copy.deepcopy(fused)
    x, y = torch.rand(2, 2, 8, 8, dtype=torch.float64), torch.tensor([2, 0])
    with using_backend(backend):
        ottt_cuda.train_step(fused, x, y, None, T=T, mode="ottt_a", chunk=chunk)
        n_fused = own_updates[0]
        ottt_cuda.train_step(unfused, x, y, None, T=T, mode="ottt_a", chunk=chunk)
        assert (n_fused, own_updates[0] - n_fused) == (2 * T, 4 * T)
        ottt_cuda.train_step(stepwise, x, y, None, T=T, mode="ottt_a")
    _close(_grads(fused), _grads(unfused))
    _close(_grads(fused), _grads(stepwise), tol=1e-10)
    assert fused.features[3]._a_scale == pytest.approx(2.74)
    assert fused.features[3].a_hat._base is None  # the last step's trace, not a view holding the chunk's


def test_eval_without_grad_is_fused_and_gives_the_same_outputs(own_updates):
    fused, unfused = _pair(_vgg(7))
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        onn.reset(fused), onn.reset(unfused)
        for _ in range(4):
            a, b = fused(x), unfused(x)
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert own_updates[0] == 2 * 4 + 4 * 4
    assert torch.allclose(fused.features[3].a_hat * fused.features[3]._a_scale, unfused.features[3].a_hat,
                          rtol=1e-12, atol=1e-12)


def test_train_step_fuses_a_model_once_and_respects_an_explicit_unfuse():
    m = tnn.Sequential(onn.Linear(4, 5), onn.LIF(), onn.Linear(5, 3))
    x, y = torch.rand(2, 4), torch.tensor([0, 1])
    ottt_cuda.train_step(m, x, y, None, T=2)
    assert m[1]._trace_link is not None
    onn.fuse_traces(m, False)
    ottt_cuda.train_step(m, x, y, None, T=2)
    assert m[1]._trace_link is None
