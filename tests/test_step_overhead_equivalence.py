"""train_step's low-overhead online path gives the gradients, losses,
outputs and (OTTT_O) updated weights of the plain path, in float64.

The fast path: the LIF step through a plain autograd.Function on the compiled kernels,
traces updated in place and weight gradients added straight into .grad (nn.online_steps),
the loss gradient in closed form, the hoisted sWS backward in closed form. The reference
here is a step loop written in the test on the same layers under the pure-PyTorch
backend, outside online_steps, with the loss differentiated by autograd (step_loss) and
no hoisting: none of those fast paths runs in it. The layers themselves are checked
against an independent reference in test_equivalence_*.py.
"""
import pytest
import torch
import torch.nn as tnn

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.models import r400
from ottt_cuda.training import step_loss
from _firing import fires
from conftest import using_backend
from _compare import rel_err

T, B, ALPHA, TOL = 3, 2, 0.05, 1e-10
BACKENDS = ["torch"] + (["cpu"] if ottt_cuda.build_info()["cpu_compiled"] else [])


def mlp784(seed=0):
    torch.manual_seed(seed)
    m = tnn.Sequential(tnn.Flatten(1), onn.Linear(784, 400, trace=False), onn.LIF(), onn.Linear(400, 10)).double()
    with torch.no_grad():
        m[1].weight.normal_(0, 0.08)  # about half of the hidden layer fires
    return m, (1, 28, 28)


def r400_net(seed=0):
    torch.manual_seed(seed)
    m = r400().double()
    with torch.no_grad():  # livelier than the paper's N(0, 0.01): every path carries gradient
        m.rnn.recurrent.weight.normal_(0, 0.3)
        m.readout.weight.normal_(0, 0.3)
        m.rnn.input.bias.fill_(0.5)
    return m, (1, 28, 28)


def conv_net(seed=0):
    torch.manual_seed(seed)
    m = tnn.Sequential(onn.Conv2d(2, 4, 3, padding=1, trace=False), onn.LIF(), tnn.AvgPool2d(2),
                       onn.WSConv2d(4, 6, 3, padding=1), onn.LIF(), onn.Dropout(0.2), tnn.Flatten(1),
                       onn.Linear(6 * 4 * 4, 10)).double()
    with torch.no_grad():
        m[0].weight.normal_(0, 0.6)
        m[3].gain.fill_(2.5)  # standardized weights: the gain and bias set the firing
        m[3].bias.fill_(0.4)
    return m, (2, 8, 8)


MODELS = {"mlp784": mlp784, "r400": r400_net, "conv": conv_net}


def data(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 1.5 * torch.rand(B, *shape, generator=g, dtype=torch.float64), torch.tensor([3, 7])


def reference(model, x, y, mode, opt=None):
    """Today's plain path, written out: one step per call, step_loss's autograd backward per step
    (OTTT/SLTT), or the summed loss backward once (BPTT); 'torch' backend, no online_steps."""
    layer_mode = {"ottt_a": "ottt", "ottt_o": "ottt", "sltt": "sltt", "bptt": "bptt"}[mode]
    onn.reset(model)
    onn.set_mode(model, layer_mode)
    model.zero_grad(set_to_none=True)
    total, out_sum, losses = 0.0, 0, []
    with using_backend("torch"):
        for _ in range(T):
            if mode == "ottt_o":
                opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = step_loss(out, y, T, ALPHA)
            if mode == "bptt":
                losses.append(loss)
            else:
                loss.backward()
            if mode == "ottt_o":
                opt.step()
            total += loss.item()
            out_sum = out_sum + out.detach()
        if mode == "bptt":
            sum(losses).backward()
    return total, out_sum


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "bptt"])
@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_loss_and_output_equal_the_plain_path(name, mode, backend):
    fast, shape = MODELS[name]()
    ref, _ = MODELS[name]()
    x, y = data(shape)
    torch.manual_seed(5)  # the dropout mask
    with using_backend(backend):
        loss, out = fires(fast, lambda: ottt_cuda.train_step(fast, x, y, None, T=T, mode=mode, loss_alpha=ALPHA))
    torch.manual_seed(5)
    ref_loss, ref_out = reference(ref, x, y, mode)
    assert loss.item() == pytest.approx(ref_loss, rel=TOL)
    assert rel_err(out, ref_out) <= TOL
    grads = {n: p.grad for n, p in fast.named_parameters()}
    for n, p in ref.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, f"{n}: the reference has no gradient"
        assert grads[n] is not None, f"{n}: train_step left no gradient"
        assert rel_err(grads[n], p.grad) <= TOL, f"{name} {mode} {backend}: gradient of {n}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_ottt_o_updates_equal_the_plain_path(name, backend):
    fast, shape = MODELS[name]()
    ref, _ = MODELS[name]()
    x, y = data(shape)
    opt_fast = torch.optim.SGD(fast.parameters(), lr=0.05, momentum=0.9)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(5)
    with using_backend(backend):
        loss, out = ottt_cuda.train_step(fast, x, y, opt_fast, T=T, mode="ottt_o", loss_alpha=ALPHA,
                                         check_finite=True)
    torch.manual_seed(5)
    ref_loss, ref_out = reference(ref, x, y, "ottt_o", opt_ref)
    assert loss.item() == pytest.approx(ref_loss, rel=TOL)
    assert rel_err(out, ref_out) <= TOL
    before, _ = MODELS[name]()
    for (n, p), q, p0 in zip(fast.named_parameters(), ref.parameters(), before.parameters()):
        assert not torch.equal(q, p0), f"{n}: the reference did not update it"
        assert rel_err(p - p0, q - p0) <= 1e-8, f"{name} ottt_o {backend}: update of {n}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_calls_without_optimizer_accumulate_into_existing_grad(backend):
    """The second call finds .grad allocated: the direct in-place accumulation must add, not overwrite."""
    fast, shape = mlp784()
    ref, _ = mlp784()
    x, y = data(shape)
    with using_backend(backend):
        ottt_cuda.train_step(fast, x, y, None, T=T)
        ottt_cuda.train_step(fast, x.flip(0), y.flip(0), None, T=T)
    reference(ref, x, y, "ottt_a")
    first = {n: p.grad.clone() for n, p in ref.named_parameters()}
    reference(ref, x.flip(0), y.flip(0), "ottt_a")
    for n, p in fast.named_parameters():
        assert rel_err(p.grad, first[n] + dict(ref.named_parameters())[n].grad) <= TOL, n


def test_gradient_hooks_still_run_and_see_every_step():
    """A weight with a hook takes the ordinary route: its hook runs at every step, .grad is the same."""
    fast, shape = mlp784()
    ref, _ = mlp784()
    x, y = data(shape)
    seen = []
    fast[3].weight.register_hook(lambda g: seen.append(g.clone()))
    ottt_cuda.train_step(fast, x, y, None, T=T)
    reference(ref, x, y, "ottt_a")
    assert len(seen) == T
    assert rel_err(sum(seen), ref[3].weight.grad) <= TOL
    assert rel_err(fast[3].weight.grad, ref[3].weight.grad) <= TOL


def test_a_users_summed_loss_over_steps_still_works_outside_train_step():
    """Outside online_steps nothing is updated in place: graphs of several steps may be alive at
    once (one backward of the summed loss), and the gradient is the sum of the per-step ones."""
    a, shape = r400_net()
    b, _ = r400_net()
    x, y = data(shape)
    for m in (a, b):
        onn.reset(m)
    torch.manual_seed(5)
    sum(step_loss(a(x), y, T, ALPHA) for _ in range(T)).backward()
    torch.manual_seed(5)
    for _ in range(T):
        step_loss(b(x), y, T, ALPHA).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert rel_err(p.grad, q.grad) <= TOL, n


def test_online_steps_sets_the_flag_only_for_its_duration():
    m, _ = mlp784()
    with pytest.raises(RuntimeError, match="boom"):
        with onn.online_steps(m):
            assert all(mod._online for mod in m.modules() if isinstance(mod, onn.Stateful))
            raise RuntimeError("boom")
    assert not any(mod._online for mod in m.modules() if isinstance(mod, onn.Stateful))
    with pytest.raises(TypeError, match="model"):
        onn.online_steps([]).__enter__()
