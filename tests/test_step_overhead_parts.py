"""The pieces of the low-overhead online step, each against plain autograd or the public ops:
the closed-form sWS backward, the remembered backend choice, and checks that moved from
every step to the first step of a sequence (still raised, still naming the argument)."""
import pytest
import torch

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.nn import _fast
from ottt_cuda.nn.ws import _row_stats, standardize_backward
from conftest import using_backend
from _compare import rel_err
from _reference import ref_standardize

COMPILED = ottt_cuda.build_info()["cpu_compiled"]


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 3, 3), (6, 2)])
@pytest.mark.parametrize("with_gain", [True, False])
def test_standardize_backward_equals_autograd_of_the_reference(shape, with_gain):
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(*shape, generator=g, dtype=torch.float64) + 0.7).requires_grad_()
    gain_shape = (shape[0],) + (1,) * (len(shape) - 1)
    gain = (torch.rand(*gain_shape, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    grad = torch.randn(*shape, generator=g, dtype=torch.float64)
    ref_gain = gain if with_gain else torch.ones_like(gain)
    ref_standardize(w, ref_gain, 1e-4).backward(grad)  # torch.var, autograd: written independently
    _, mean, scale = _row_stats(w.detach(), 1e-4)
    gw, gg = standardize_backward(w.detach(), gain.detach() if with_gain else None, mean, scale, grad)
    assert rel_err(gw, w.grad) <= 1e-10
    if with_gain:
        assert rel_err(gg, gain.grad) <= 1e-10
    else:
        assert gg is None


_WS_MAKERS = {"linear": lambda: onn.WSLinear(7, 5), "conv": lambda: onn.WSConv2d(3, 4, 3, padding=1),
              "no_gain": lambda: onn.WSLinear(7, 5, gain=False)}


@pytest.mark.parametrize("kind,trained", [(k, t) for k in ("linear", "conv") for t in ("both", "weight", "gain")]
                         + [("no_gain", "weight")])
def test_per_call_standardization_equals_autograd_of_the_reference(kind, trained):
    """Without hoisting (OTTT_O, a user's loop) the synapse standardizes on every call through
    _Standardized (closed-form backward); its value and gradients equal the reference's autograd."""
    torch.manual_seed(0)
    m = _WS_MAKERS[kind]().double()
    with torch.no_grad():
        m.weight.add_(0.3)  # rows with a nonzero mean
        if m.gain is not None:
            m.gain.uniform_(0.5, 1.5)
    if trained == "weight" and m.gain is not None:
        m.gain.requires_grad_(False)
    if trained == "gain":
        m.weight.requires_grad_(False)
    w_hat = m.standardized_weight()
    ref_w = m.weight.detach().clone().requires_grad_(m.weight.requires_grad)
    ref_g = (m.gain.detach().clone().requires_grad_(m.gain.requires_grad) if m.gain is not None
             else torch.ones((m.weight.shape[0],) + (1,) * (m.weight.dim() - 1), dtype=torch.float64))
    want = ref_standardize(ref_w, ref_g, m.eps)
    assert rel_err(w_hat.detach(), want.detach()) <= 1e-12
    assert w_hat.grad_fn is not None and type(w_hat.grad_fn).__name__ == "_StandardizedBackward"
    grad = torch.randn_like(want)
    (w_hat * grad).sum().backward()
    (want * grad).sum().backward()
    for p, ref in ((m.weight, ref_w), (m.gain, ref_g)):
        if p is None:
            continue
        if p.requires_grad:
            assert rel_err(p.grad, ref.grad) <= 1e-10
        else:
            assert p.grad is None


def test_per_call_standardization_refuses_a_second_derivative_and_skips_the_graph_without_grad():
    lin = onn.WSLinear(4, 3).double()
    w_hat = lin.standardized_weight()
    (g,) = torch.autograd.grad((w_hat ** 2).sum(), lin.weight, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward|once_differentiable|differentiable"):
        g.sum().backward()
    with torch.no_grad():
        assert lin.standardized_weight().grad_fn is None
    lin.requires_grad_(False)
    assert lin.standardized_weight().grad_fn is None


def test_hoisted_ws_gradient_with_existing_grad_and_with_a_hook():
    """unhoist adds to an existing .grad, and a parameter with a hook still has it called."""
    torch.manual_seed(0)
    lin = onn.WSLinear(6, 4).double()
    x = torch.rand(3, 6, dtype=torch.float64)
    grad = torch.randn(3, 4, dtype=torch.float64)
    ref_w = lin.weight.detach().clone().requires_grad_()
    ref_g = lin.gain.detach().clone().requires_grad_()
    (torch.nn.functional.linear(x, ref_standardize(ref_w, ref_g, lin.eps), lin.bias.detach()) * grad).sum().backward()
    seen = []
    lin.gain.register_hook(lambda g: seen.append(g))
    lin.weight.grad = torch.ones_like(lin.weight)
    with onn.hoisted(lin):
        (torch.nn.functional.linear(x, lin._weights()[0], lin.bias) * grad).sum().backward()
    assert rel_err(lin.weight.grad, ref_w.grad + 1) <= 1e-12
    assert len(seen) == 1 and rel_err(lin.gain.grad, ref_g.grad) <= 1e-12


@pytest.mark.skipif(not COMPILED, reason="needs the compiled CPU kernels")
def test_backend_choice_follows_set_backend_between_calls():
    t = torch.zeros(2)
    assert _fast.compiled(t)
    with using_backend("torch"):
        assert not _fast.compiled(t)
    assert _fast.compiled(t)


def test_backend_choice_is_false_for_the_reference_backend():
    with using_backend("torch"):
        assert not _fast.compiled(torch.zeros(2))


@pytest.mark.parametrize("attr, value, name", [("tau", -1.0, "tau"), ("surrogate", "nope", "surrogate"),
                                               ("alpha", 0.0, "alpha")])
def test_lif_argument_changed_after_construction_is_refused_at_the_next_sequence(attr, value, name):
    lif = onn.LIF()
    x = torch.rand(2, 5)
    lif(x)
    setattr(lif, attr, value)
    onn.reset(lif)
    with pytest.raises((ValueError, TypeError), match=name):
        lif(x)


def test_trace_decay_changed_after_construction_is_refused_at_the_next_sequence():
    lin = onn.Linear(5, 3)
    x = torch.rand(2, 5, requires_grad=True)
    lin(x)
    lin.trace_decay = 1.5
    onn.reset(lin)
    with pytest.raises(ValueError, match="trace_decay"):
        lin(x)


def test_lif_changed_tau_applies_from_the_next_sequence():
    """tau is read once per sequence: the next sequence after reset runs with the new value."""
    a, b = onn.LIF(), onn.LIF(tau=4.0)
    x = torch.full((1, 3), 0.6)
    a(x)
    a.tau = 4.0
    onn.reset(a)
    for _ in range(4):
        assert torch.equal(a(x), b(x))


def test_state_left_from_another_shape_or_device_names_the_reset():
    lif, lin = onn.LIF(), onn.Linear(5, 3)
    lif(torch.rand(2, 5))
    lin(torch.rand(2, 5))
    with pytest.raises(ValueError, match="reset"):
        lif(torch.rand(3, 5))
    with pytest.raises(ValueError, match="reset"):
        lin(torch.rand(3, 5))
    with pytest.raises(TypeError, match="x"):
        lif(torch.ones(2, 5, dtype=torch.int32))


def test_online_train_step_updates_the_trace_in_place_and_a_user_loop_does_not():
    """Inside train_step's step loop the synapse keeps one trace buffer; outside, each step makes a new one
    (a graph of an earlier step may still hold the old one). Unfused: a fused LIF hands over a new trace each step
    (tests/test_trace_handoff.py)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(onn.Linear(4, 6), onn.LIF(), onn.Linear(6, 3))
    onn.fuse_traces(model, False)
    x, y = torch.rand(2, 4), torch.tensor([0, 2])
    seen = []
    orig = model[2]._grad_source

    def spy(*args, **kw):
        out = orig(*args, **kw)
        seen.append(out[0].data_ptr())
        return out

    model[2]._grad_source = spy
    ottt_cuda.train_step(model, x, y, None, T=4)
    assert len(seen) == 4 and len(set(seen)) == 1
    seen.clear()
    onn.reset(model)
    keep = [model(x) for _ in range(3)]  # every step's graph alive at once
    assert len(seen) == 3 and len(set(seen)) == 3
    sum(o.sum() for o in keep).backward()


def _tiny(seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(onn.Linear(4, 6), onn.LIF(), onn.Linear(6, 3)).double()
    with torch.no_grad():
        m[0].weight.normal_(0, 1.5)
    return m


def test_deferred_weight_gradients_flush_when_they_weigh_as_much_as_the_weight():
    """Linear(4, 6) at batch 2: 2 rows x (4 + 6) numbers per step against 24 in the weight, so the rows are
    summed into .grad every 2nd step (memory bounded, independent of T); the gradient equals per-step
    accumulation (plain loop, torch backend, no online_steps)."""
    from ottt_cuda.nn._deferred import DeferredWeightGrad

    fast, ref = _tiny(), _tiny()
    x, y = torch.rand(2, 4, dtype=torch.float64) * 2, torch.tensor([0, 2])
    rows, flushes = [], []
    add, flush = DeferredWeightGrad.add, DeferredWeightGrad.flush

    def spy_add(self, weight, bias, g, a, *scale):
        add(self, weight, bias, g, a, *scale)
        rows.append((weight.shape[1], self.rows))

    def spy_flush(self):
        flushes.append(self.rows)
        flush(self)

    DeferredWeightGrad.add, DeferredWeightGrad.flush = spy_add, spy_flush
    try:
        ottt_cuda.train_step(fast, x, y, None, T=5)
    finally:
        DeferredWeightGrad.add, DeferredWeightGrad.flush = add, flush
    first = [r for n_in, r in rows if n_in == 4]
    assert first == [2, 0, 2, 0, 2]  # pending rows after each step's add: flushed at 4 rows
    assert max(r for _, r in rows) * (4 + 6) <= 2 * 24
    onn.reset(ref)
    with using_backend("torch"):
        for _ in range(5):
            ottt_cuda.training.step_loss(ref(x), y, 5, 0.05).backward()
    for (n, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert rel_err(p.grad, q.grad) <= 1e-12, n


def test_online_steps_drops_pending_gradients_on_an_exception_and_flushes_on_exit():
    m = _tiny()
    x = torch.rand(2, 4, dtype=torch.float64) * 2
    onn.reset(m)
    with pytest.raises(RuntimeError, match="stop"):
        with onn.online_steps(m, defer_weight_grads=True):
            m(x).sum().backward()
            raise RuntimeError("stop")
    # Linear(4, 6) at batch 2: 20 pending numbers < 24 in the weight, so nothing was flushed yet
    assert m[0].weight.grad is None  # pending, then dropped
    onn.reset(m)
    with onn.online_steps(m, defer_weight_grads=True):
        m(x).sum().backward()
        assert m[0].weight.grad is None  # still pending
    assert m[0].weight.grad is not None and m[0].weight.grad.abs().max() > 0


def test_deferred_weight_grads_lists_the_synapses_online_steps_set_up():
    from ottt_cuda.nn import _state
    from ottt_cuda.nn.synapse import Linear

    m = _tiny()
    linears = [mod for mod in m.modules() if isinstance(mod, Linear)]
    assert linears and _state.deferred_weight_grads(m) == []
    onn.reset(m)
    with onn.online_steps(m, defer_weight_grads=True):
        got = _state.deferred_weight_grads(m)
        assert [id(d) for d in got] == [id(mod._deferred) for mod in linears] and all(d is not None for d in got)
    with onn.online_steps(m):  # without deferral nothing is set up
        assert _state.deferred_weight_grads(m) == []
    assert _state.deferred_weight_grads(m) == []


@pytest.mark.parametrize("alpha", [0.0, 0.05, 1.0])
def test_all_step_losses_at_once_equal_step_loss_per_step(alpha):
    from ottt_cuda._loss import step_losses
    from ottt_cuda.training import step_loss

    g = torch.Generator().manual_seed(3)
    outs = 3 * torch.randn(4, 5, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (5,), generator=g)
    expected = torch.stack([step_loss(outs[t], y, 4, alpha) for t in range(4)])
    assert rel_err(step_losses(outs, y, 4, alpha, None), expected) <= 1e-12


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("alpha", [0.0, 0.05, 1.0])
@pytest.mark.parametrize("B,C", [(1, 10), (7, 3), (5, 1)])
def test_closed_form_loss_gradient_equals_autograd_of_step_loss(alpha, dtype, tol, B, C):
    # The gradient train_step's fast paths and the CUDA-graph step use instead of autograd.
    from ottt_cuda._loss import loss_grad
    from ottt_cuda.training import step_loss

    g = torch.Generator().manual_seed(B * 100 + C)
    u = (3 * torch.randn(B, C, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    y = torch.randint(0, C, (B,), generator=g)
    step_loss(u, y, 6, alpha).backward()
    got = loss_grad(u.detach(), torch.nn.functional.one_hot(y, C).to(dtype), 6, alpha)
    assert got.dtype == dtype and not got.requires_grad
    assert rel_err(got, u.grad) <= tol
