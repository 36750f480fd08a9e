"""train_step / evaluate: argument handling, input forms, AMP."""
import pytest
import torch

import ottt_cuda
from ottt_cuda.models import VGGWS
from _compare import rel_err

T, B = 3, 2


def small(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return VGGWS([8, "A", 16], num_classes=4).to(dtype)


def data(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return 3 * torch.randn(B, 3, 8, 8, generator=g).to(dtype), torch.tensor([0, 3])


@pytest.mark.parametrize("kwargs, arg", [
    (dict(mode="online"), "mode"), (dict(T=0), "T"), (dict(loss_alpha=2.0), "loss_alpha"),
    (dict(chunk=0), "chunk"), (dict(chunk=2, mode="ottt_o"), "chunk"), (dict(mode="sltt_k"), "k"),
    (dict(mode="sltt_k", k=5), "k"), (dict(k=2), "k"), (dict(amp="fp8"), "amp"),
])
def test_train_step_errors_name_the_argument(kwargs, arg):
    model = small()
    x, y = data()
    kw = dict(T=T)
    kw.update(kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=arg):
        ottt_cuda.train_step(model, x, y, opt, **kw)


def test_ottt_o_needs_an_optimizer_and_shapes_are_checked():
    model = small()
    x, y = data()
    with pytest.raises(ValueError, match="optimizer"):
        ottt_cuda.train_step(model, x, y, None, T=T, mode="ottt_o")
    with pytest.raises(ValueError, match="x"):
        ottt_cuda.train_step(model, x[:1], y, None, T=T)
    with pytest.raises(ValueError, match="y"):
        ottt_cuda.train_step(model, x, y.float().unsqueeze(1), None, T=T)


def test_ambiguous_input_asks_for_sequence():
    model = small()
    y = torch.tensor([0, 1, 2])
    x_seq = torch.rand(3, 3, 3, 8, 8)  # B = T = 3: the shape alone cannot tell
    with pytest.raises(ValueError, match="sequence"):
        ottt_cuda.train_step(model, x_seq, y, None, T=3)
    loss, out = ottt_cuda.train_step(model, x_seq, y, None, T=3, sequence=True)
    assert torch.isfinite(loss) and out.shape == (3, 4)
    loss, _ = ottt_cuda.train_step(model, torch.rand(3, 3, 8, 8), y, None, T=3, sequence=False)
    assert torch.isfinite(loss)
    # [4, 3, ...] with T = 4, B = 3 can only be a sequence: read as one, without being told
    x4 = 3 * torch.randn(4, 3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    _, auto = ottt_cuda.train_step(model, x4, y, None, T=4)
    _, told = ottt_cuda.train_step(model, x4, y, None, T=4, sequence=True)
    _, first_frame = ottt_cuda.train_step(model, x4[0], y, None, T=4, sequence=False)
    assert auto.abs().max() > 0  # the network's output is alive
    torch.testing.assert_close(auto, told, rtol=0, atol=0)
    assert not torch.equal(auto, first_frame)  # the frames were used one per step, not one for all


def test_static_input_equals_repeated_sequence_and_optimizer_none_accumulates():
    x, y = data(torch.float64)
    a, b = small(torch.float64), small(torch.float64)
    la, oa = ottt_cuda.train_step(a, x, y, None, T=T)
    lb, ob = ottt_cuda.train_step(b, x.unsqueeze(0).expand(T, *x.shape), y, None, T=T)
    assert la.item() == pytest.approx(lb.item(), rel=1e-12) and rel_err(oa, ob) <= 1e-12
    g1 = a.features[0].weight.grad.clone()
    ottt_cuda.train_step(a, x, y, None, T=T)  # no optimizer: .grad accumulates
    assert rel_err(a.features[0].weight.grad, 2 * g1) <= 1e-12


def test_evaluate_equals_summed_training_outputs_and_builds_no_graph():
    x, y = data(torch.float64)
    model = small(torch.float64)
    _, osum = ottt_cuda.train_step(model, x, y, None, T=T)
    out = ottt_cuda.evaluate(model, x, T)
    assert not out.requires_grad
    assert rel_err(out, osum) <= 1e-12
    with pytest.raises(ValueError, match="sequence"):
        ottt_cuda.evaluate(model, torch.rand(T, 3, 8, 8), T)


def test_training_reduces_the_loss():
    x, y = data()
    model = small()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    first = ottt_cuda.train_step(model, x, y, opt, T=T)[0].item()
    for _ in range(15):
        last = ottt_cuda.train_step(model, x, y, opt, T=T)[0].item()
    assert last < 0.7 * first


@pytest.mark.parametrize("mode", ["ottt_a", "bptt"])
def test_bf16_autocast_gradients_close_to_fp32(mode):
    x, y = data()
    ref, amp = small(), small()
    ottt_cuda.train_step(ref, x, y, None, T=T, mode=mode)
    loss, out = ottt_cuda.train_step(amp, x, y, None, T=T, mode=mode, amp="bf16")
    assert out.dtype == torch.float32 and torch.isfinite(loss)
    for p, q in zip(amp.parameters(), ref.parameters()):
        assert p.grad.dtype == torch.float32
    # bf16 rounding can flip a few spikes; the classifier's gradient direction must agree.
    g, r = amp.classifier[2].weight.grad.flatten(), ref.classifier[2].weight.grad.flatten()
    assert torch.nn.functional.cosine_similarity(g, r, dim=0) > 0.9


def test_fp16_autocast_with_grad_scaler_steps():
    x, y = data()
    model = small()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    before = model.features[0].weight.detach().clone()
    loss, _ = ottt_cuda.train_step(model, x, y, opt, T=T, amp="fp16", scaler=scaler)
    assert torch.isfinite(loss)
    assert not torch.equal(model.features[0].weight, before)
