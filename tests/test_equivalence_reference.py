"""Checks of the plain-autograd reference (tests/_reference.py) itself: its neuron,
replace-for-grad, standardization and surrogates against values worked by hand."""
import pytest
import torch

from _reference import Heaviside, RefNeuron, ReplaceForGrad, ref_standardize, surrogate_derivative


def test_reference_neuron_matches_dynamics_by_hand():
    n = RefNeuron(2.0, 1.0, 4.0, bptt=False)
    xs = torch.tensor([[0.6], [0.8], [2.5]], dtype=torch.float64)
    spikes = [n(x).item() for x in xs]
    # v: 0.6 (no spike) -> 0.3 + 0.8 = 1.1 (spike, v = 0.1) -> 0.05 + 2.5 = 2.55 (spike)
    assert spikes == [0.0, 1.0, 1.0]
    assert n.v.item() == pytest.approx(1.55)


def test_replace_for_grad_routes_gradient_to_both():
    a = torch.ones(3, requires_grad=True)
    b = torch.full((3,), 2.0, requires_grad=True)
    out = ReplaceForGrad.apply(a, b)
    assert torch.equal(out, b.detach())
    (out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(a.grad, torch.tensor([1.0, 2.0, 3.0])) and torch.equal(b.grad, a.grad)


def test_reference_standardization_has_zero_mean_unit_scale():
    w = torch.randn(5, 7, dtype=torch.float64) * 3 + 1
    ws = ref_standardize(w, torch.ones(5, 1, dtype=torch.float64), 0.0)
    assert torch.allclose(ws.mean(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ws.var(1) * 7, torch.ones(5, dtype=torch.float64), atol=1e-12)


def test_reference_hard_reset_and_decay_input_by_hand():
    n = RefNeuron(4.0, 1.0, 4.0, bptt=False, v_reset=0.2, decay_input=True)
    xs = torch.tensor([[2.0], [4.0], [1.0]], dtype=torch.float64)
    spikes = [n(x).item() for x in xs]
    # lam = 0.75, v starts at 0.2. h1 = 0.15 + 2/4 + 0.2/4 = 0.7 (no spike); h2 = 0.525 + 1 + 0.05 = 1.575
    # (spike, v = 0.2); h3 = 0.15 + 0.25 + 0.05 = 0.45 (no spike)
    assert spikes == [0.0, 1.0, 0.0]
    assert n.v.item() == pytest.approx(0.45)


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan", "triangle", "rectangle"])
def test_reference_surrogates_integrate_to_one_and_peak_at_threshold(surrogate):
    z = torch.linspace(-60, 60, 1_200_001, dtype=torch.float64)
    d = surrogate_derivative(z, surrogate, 2.5)
    # atan's tails decay like 1/z^2: the integral over [-60, 60] misses 4/(pi^2 * 2.5 * 60) ~ 2.7e-3.
    assert torch.trapezoid(d, z).item() == pytest.approx(1.0, abs=4e-3)
    assert d.argmax().item() == pytest.approx(600_000, abs=2) or surrogate == "rectangle"
    zero = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    Heaviside.apply(zero, 2.5, surrogate).sum().backward()
    assert zero.grad.item() == pytest.approx({"sigmoid": 2.5 / 4, "atan": 2.5 / 2, "triangle": 2.5,
                                              "rectangle": 2.5}[surrogate])
