"""ottt_cuda's OTTT_A / OTTT_O / SLTT / SLTT-K / chunked / BPTT on a small
sWS VGG equal the plain-autograd reference (tests/_reference.py) in
float64."""
import pytest
import torch

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.models import VGGWS
from _firing import ModelWatch
from _compare import rel_err
from _reference import RefNet, run_reference, vgg_layers

T, B, CLASSES, ALPHA = 3, 2, 5, 0.05
TOL = 1e-8
SMALL_CFG = [8, "A", 16, "A", 16]


watch = ModelWatch()


@pytest.fixture(autouse=True)
def _every_model_fires():
    """Every spiking layer of every model a test runs fires at each step (else its comparison is vacuous)."""
    with watch.active():
        yield


def small_vgg(seed=0, dropout=0.0, cfg=SMALL_CFG):
    torch.manual_seed(seed)
    model = VGGWS(cfg, num_classes=CLASSES, dropout=dropout).double()
    with torch.no_grad():  # with gain 1 the deepest layer is silent at t = 1 at this size
        for conv in [m for m in model.features if isinstance(m, onn.WSConv2d)][1:]:
            conv.gain.fill_(2.0)
    return watch(model)


def data(seed=1, sequence=False, hw=8):
    g = torch.Generator().manual_seed(seed)
    shape = (T, B, 3, hw, hw) if sequence else (B, 3, hw, hw)
    x = 3.0 * torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (B,), generator=g)
    return x, y


def x_getter(x, sequence):
    return (lambda t: x[t]) if sequence else (lambda t: x)


def masks_of(model):
    return {id(m): m.mask for m in model.modules() if isinstance(m, onn.Dropout) and m.mask is not None}


def check_grads(model, ref, tol=TOL):
    errs = {}
    for name, p in model.named_parameters():
        e = ref.params[name].grad
        assert p.grad is not None and e is not None, name
        errs[name] = rel_err(p.grad, e)
    bad = {n: e for n, e in errs.items() if not e <= tol}
    assert not bad, f"relative gradient errors above {tol}: {bad}"
    # The comparison must mean something: every layer received a gradient.
    assert all(ref.params[n].grad.abs().max() > 0 for n in errs), "a layer got no gradient; make the test livelier"
    return max(errs.values())


@pytest.mark.parametrize("sequence", [False, True], ids=["static", "sequence"])
@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["nodrop", "dropout"])
def test_ottt_a_matches_reference(sequence, dropout):
    model = small_vgg(dropout=dropout)
    x, y = data(sequence=sequence)
    loss, osum = ottt_cuda.train_step(model, x, y, None, T=T, mode="ottt_a", loss_alpha=ALPHA)
    ref = RefNet(model, vgg_layers(model), "ottt", masks_of(model))
    ref_loss, ref_osum = run_reference(ref, x_getter(x, sequence), y, T, ALPHA)
    assert osum.abs().max() > 0
    assert rel_err(osum, ref_osum) <= TOL
    assert loss.item() == pytest.approx(ref_loss, rel=1e-12)
    check_grads(model, ref)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_chunked_ottt_a_equals_online(chunk):
    x, y = data(sequence=True)
    online = small_vgg(dropout=0.3)
    torch.manual_seed(5)
    ottt_cuda.train_step(online, x, y, None, T=T)
    chunked = small_vgg(dropout=0.3)
    torch.manual_seed(5)  # same dropout masks
    _, osum = ottt_cuda.train_step(chunked, x, y, None, T=T, chunk=chunk)
    for (n, p), q in zip(chunked.named_parameters(), online.parameters()):
        assert rel_err(p.grad, q.grad) <= TOL, n


def test_chunked_output_sum_equals_online():
    x, y = data()
    a, b = small_vgg(), small_vgg()
    _, o1 = ottt_cuda.train_step(a, x, y, None, T=T)
    _, o2 = ottt_cuda.train_step(b, x, y, None, T=T, chunk=2)
    assert rel_err(o2, o1) <= TOL and o1.abs().max() > 0


def test_sltt_matches_reference():
    model = small_vgg()
    x, y = data()
    ottt_cuda.train_step(model, x, y, None, T=T, mode="sltt")
    ref = RefNet(model, vgg_layers(model), "sltt")
    run_reference(ref, x_getter(x, False), y, T, ALPHA)
    check_grads(model, ref)


def test_sltt_differs_from_ottt():
    # Guards against a mode switch that does nothing.
    x, y = data()
    a, b = small_vgg(), small_vgg()
    ottt_cuda.train_step(a, x, y, None, T=T, mode="sltt")
    ottt_cuda.train_step(b, x, y, None, T=T, mode="ottt_a")
    assert rel_err(a.features[4].weight.grad, b.features[4].weight.grad) > 1e-3


def test_sltt_k_matches_reference_on_the_same_steps():
    model = small_vgg()
    x, y = data()
    torch.manual_seed(11)
    steps = set(torch.randperm(T)[:2].tolist())
    torch.manual_seed(11)
    ottt_cuda.train_step(model, x, y, None, T=T, mode="sltt_k", k=2)
    ref = RefNet(model, vgg_layers(model), "sltt")
    run_reference(ref, x_getter(x, False), y, T, ALPHA, steps=steps)
    check_grads(model, ref)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_ottt_o_parameters_after_T_updates_match_reference(momentum):
    model = small_vgg()
    x, y = data()
    ref = RefNet(model, vgg_layers(model), "ottt")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=momentum)
    ottt_cuda.train_step(model, x, y, opt, T=T, mode="ottt_o")
    ref_opt = torch.optim.SGD(list(ref.params.values()), lr=0.5, momentum=momentum)
    run_reference(ref, x_getter(x, False), y, T, ALPHA, optimizer=ref_opt, online=True)
    moved = 0
    for n, p in model.named_parameters():
        e = ref.params[n].detach()
        assert rel_err(p.detach() - before[n], e - before[n]) <= TOL, n
        moved += int((e - before[n]).abs().max() > 0)
    assert moved == len(before)


def test_ottt_o_differs_from_ottt_a_with_one_sgd_step():
    x, y = data()
    a, b = small_vgg(), small_vgg()
    ottt_cuda.train_step(a, x, y, torch.optim.SGD(a.parameters(), lr=0.5), T=T, mode="ottt_o")
    ottt_cuda.train_step(b, x, y, torch.optim.SGD(b.parameters(), lr=0.5), T=T, mode="ottt_a")
    assert rel_err(a.features[0].weight, b.features[0].weight) > 1e-6


@pytest.mark.parametrize("sequence", [False, True], ids=["static", "sequence"])
def test_bptt_matches_reference_loop(sequence):
    model = small_vgg(dropout=0.3)
    x, y = data(sequence=sequence)
    loss, osum = ottt_cuda.train_step(model, x, y, None, T=T, mode="bptt")
    ref = RefNet(model, vgg_layers(model), "bptt", masks_of(model))
    ref_loss, ref_osum = run_reference(ref, x_getter(x, sequence), y, T, ALPHA)
    assert rel_err(osum, ref_osum) <= TOL
    assert loss.item() == pytest.approx(ref_loss, rel=1e-12)
    check_grads(model, ref)


def test_ottt_a_optimizer_step_equals_manual_step():
    x, y = data()
    a, b = small_vgg(), small_vgg()
    ottt_cuda.train_step(a, x, y, torch.optim.SGD(a.parameters(), lr=0.1), T=T)
    ottt_cuda.train_step(b, x, y, None, T=T)
    with torch.no_grad():
        for p in b.parameters():
            p -= 0.1 * p.grad
    for p, q in zip(a.parameters(), b.parameters()):
        assert rel_err(p, q) <= 1e-12


def test_ws_hoisting_equals_per_step_standardization():
    x, y = data()
    hoisted = small_vgg()
    ottt_cuda.train_step(hoisted, x, y, None, T=T)
    manual = small_vgg()  # a user's own loop: every call re-standardizes
    ottt_cuda.reset(manual)
    ottt_cuda.set_mode(manual, "ottt")
    for t in range(T):
        out = manual(x)
        ottt_cuda.training.step_loss(out, y, T, ALPHA).backward()
    for (n, p), q in zip(hoisted.named_parameters(), manual.parameters()):
        assert rel_err(p.grad, q.grad) <= TOL, n
