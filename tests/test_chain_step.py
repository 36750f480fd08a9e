"""OTTT_A's (and SLTT's) time step without autograd for plain chains of layers (nn/_chain.py).

Every comparison runs train_step twice on copies of one float64 model, the chain on and off
(nn._chain.enabled; off is the autograd path, checked elsewhere against SpikingJelly and the
references), with the same inputs and an SGD optimizer: the returned loss and summed output,
every parameter's .grad and value after the step, and the layers' states after the call must
agree. A spy on Chain.forward says which path ran: the settings the chain must not take
(hooks, other modules, subclasses, frozen parameters, an input that requires grad, the
PyTorch backend, other modes) run the autograd path, and still agree.
"""
import copy

import pytest
import torch
import torch.nn as tnn

import ottt_cuda
from ottt_cuda import _backend
from ottt_cuda import nn as onn
from ottt_cuda.nn import _chain
from ottt_cuda.training import train_step
from _chain_models import deep as _deep, lif_first as _lif_first, make_input as _input, mlp as _mlp
from _chain_models import r400_small as _r400, states as _states, vgg_small as _vgg, ws_mlp as _ws_mlp
from conftest import cuda_only, using_backend

pytestmark = pytest.mark.skipif(not _backend.runs_on("cpu", "cpu"),
                                reason="the chain runs the compiled CPU kernels (ottt_cuda._C)")


@pytest.fixture
def chain_runs(monkeypatch):
    """How many time steps ran through the chain."""
    count = [0]
    forward = _chain.Chain.forward

    def counted(self, x):
        count[0] += 1
        return forward(self, x)

    monkeypatch.setattr(_chain.Chain, "forward", counted)
    return count


def _run(model, x, y, T, use_chain, sequence=True, steps=2, mode="ottt_a", **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(1234)  # the same dropout masks in both runs
    previous = _chain.enabled
    _chain.enabled = use_chain
    try:
        results = []
        for _ in range(steps):  # the second call starts from stepped weights and a momentum buffer
            loss, out_sum = train_step(model, x, y, opt, T=T, mode=mode, sequence=sequence, **kw)
            results.append((loss.clone(), out_sum.clone()))
    finally:
        _chain.enabled = previous
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    return results, grads, params, _states(model)


def _assert_same(a, b, tol=1e-12):
    def close(p, q, what):
        if p is None or q is None:
            assert p is None and q is None, what
            return
        assert p.shape == q.shape and torch.allclose(p, q, rtol=tol, atol=tol * max(1.0, q.abs().max().item())), what
    (ra, ga, pa, sa), (rb, gb, pb, sb) = a, b
    for i, ((la, oa), (lb, ob)) in enumerate(zip(ra, rb)):
        close(la, lb, f"loss of call {i}")
        close(oa, ob, f"output sum of call {i}")
    for i, (p, q) in enumerate(zip(ga, gb)):
        close(p, q, f"grad of parameter {i}")
    for i, (p, q) in enumerate(zip(pa, pb)):
        close(p, q, f"parameter {i} after the optimizer")
    for i, (p, q) in enumerate(zip(sa, sb)):
        close(p, q, f"state {i}")


def _compare(make, shape, T, B, chain_runs, expect_chain=True, sequence=True, prepare=None, device="cpu",
             mode="ottt_a"):
    model = make().to(device)
    other = copy.deepcopy(model)
    if prepare is not None:
        prepare(model)
        prepare(other)
    x, y = (t.to(device) for t in _input(shape, T, B, sequence=sequence))
    before = chain_runs[0]
    got = _run(model, x, y, T, True, sequence, mode=mode)
    used = chain_runs[0] - before
    want = _run(other, x, y, T, False, sequence, mode=mode)
    assert chain_runs[0] - before == used  # the reference run never takes the chain
    assert used == (2 * T if expect_chain else 0)
    _assert_same(got, want)
    return model


@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "ottt_o"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 5])
def test_mlp_matches_autograd(chain_runs, T, B, mode):
    _compare(_mlp, (3, 4), T, B, chain_runs, mode=mode)


@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "ottt_o"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("B", [1, 4])
def test_deep_chain_matches_autograd(chain_runs, fused, B, mode):
    # fused=False: every synapse updates its own trace (no hand-over).
    _compare(_deep, (8,), 6, B, chain_runs, prepare=lambda m: onn.fuse_traces(m, fused), mode=mode)


@pytest.mark.cuda
@cuda_only
@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
@pytest.mark.parametrize("B", [1, 300])
def test_chain_on_cuda_matches_autograd(chain_runs, monkeypatch, B, mode):
    # The same compiled ops on the GPU (the chain is taken there too); B = 300: kernels over many blocks.
    _compare(_mlp, (3, 4), 4, B, chain_runs, device="cuda", mode=mode)
    _compare(_deep, (8,), 3, B, chain_runs, device="cuda", mode=mode)
    _compare(lambda: _r400(feedback=True), (1, 6, 6), 3, B, chain_runs, device="cuda", mode=mode)
    monkeypatch.setattr(_chain, "conv_chains", True)  # not taken by default yet: checked here for when it is
    _compare(lambda: _vgg(dropout=0.2, fc_hw=2), (2, 8, 8), 3, B, chain_runs, device="cuda", mode=mode)


def test_lif_first_and_static_input(chain_runs):
    _compare(_lif_first, (8,), 4, 2, chain_runs, sequence=False)


@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "ottt_o"])
@pytest.mark.parametrize("feedback", [True, False], ids=["feedback_dropout", "readout_dropout"])
@pytest.mark.parametrize("B,T", [(1, 5), (3, 1), (3, 4)])
def test_r400_matches_autograd(chain_runs, feedback, mode, B, T):
    # models.R400 names its layers (_ottt_chain): sWS input synapse, recurrent synapse, the sequence's
    # dropout mask in the recurrent layer or after it, the readout.
    model = _compare(lambda: _r400(feedback=feedback), (1, 6, 6), T, B, chain_runs, mode=mode)
    assert model.rnn.s_prev is not None and (model.rnn.dropout.mask if feedback else model.dropout.mask) is not None


@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "ottt_o"])
@pytest.mark.parametrize("dropout,fc_hw", [(0.0, 1), (0.2, 2)])
@pytest.mark.parametrize("B", [1, 3])
def test_vgg_matches_autograd(chain_runs, monkeypatch, mode, dropout, fc_hw, B):
    # models.VGGWS names its two Sequentials (_ottt_chain): sWS convolutions, the LIF -> Scale -> conv
    # hand-over of the trace (scale 2.74), average and adaptive pooling, per-sequence dropout. train_step
    # keeps autograd for convolutional chains by default (no gain on the CPU, not yet run on a GPU):
    # checked here with that choice lifted.
    _no_cpu_exception(monkeypatch)
    model = _compare(lambda: _vgg(dropout=dropout, fc_hw=fc_hw), (2, 8, 8), 4, B, chain_runs, mode=mode)
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in model.parameters())


def _no_cpu_exception(monkeypatch):
    monkeypatch.setattr(_chain, "conv_chains", True)


def test_vgg_keeps_autograd_by_default(chain_runs):
    _compare(lambda: _vgg(), (2, 8, 8), 3, 2, chain_runs, expect_chain=False)


def _vgg_f(seed=0):
    from ottt_cuda.models.vgg import VGGFWS

    torch.manual_seed(seed)
    return VGGFWS([4, "A", 8], num_classes=3, in_channels=2).double()


def _with_max_pool(seed=0):
    torch.manual_seed(seed)
    return tnn.Sequential(onn.Conv2d(2, 4, 3, padding=1, trace=False), onn.LIF(), tnn.MaxPool2d(2), tnn.Flatten(1),
                          onn.Linear(64, 3)).double()


@pytest.mark.parametrize("make", [_vgg_f, _with_max_pool], ids=["VGG-F (feedback)", "max pooling"])
def test_convolutional_models_the_chain_leaves_to_autograd(chain_runs, make):
    _compare(make, (2, 8, 8), 3, 2, chain_runs, expect_chain=False)


def test_r400_in_eval_mode_matches_autograd(chain_runs):
    # No dropout in eval mode; train_step still trains (the gradients of the eval-mode network).
    def make():
        return _r400().eval()
    _compare(make, (1, 6, 6), 3, 2, chain_runs)


@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "ottt_o"])
def test_ws_linear_and_dropout_in_a_sequential_match_autograd(chain_runs, mode):
    model = _compare(_ws_mlp, (3, 4), 4, 3, chain_runs, mode=mode)
    assert model[1].gain.grad is not None and model[1].gain.grad.abs().max() > 0  # through the hoisted sWS


@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
def test_large_batch_flushes_every_step(chain_runs, mode):
    # rows * (in + out) >= in * out at every step: the deferred gradient is added per step.
    _compare(_mlp, (3, 4), 3, 40, chain_runs, mode=mode)


def test_the_chain_is_the_default_for_a_plain_mlp(chain_runs):
    model = _mlp()
    x, y = _input((3, 4), 2, 1)
    train_step(model, x, y, None, T=2, sequence=True)
    assert chain_runs[0] == 2


def _forward_hook(model):
    model[1].register_forward_hook(lambda m, i, o: None)


def _model_pre_hook(model):
    model.register_forward_pre_hook(lambda m, i: None)


def _weight_hook(model):
    model[3].weight.register_hook(lambda g: g * 2.0)  # changes the gradient: the autograd path honours it


def _freeze_first(model):
    model[1].weight.requires_grad_(False)


@pytest.mark.parametrize("prepare", [_forward_hook, _model_pre_hook, _weight_hook, _freeze_first],
                         ids=["layer forward hook", "model pre-hook", "weight gradient hook", "frozen weight"])
@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
def test_settings_the_chain_leaves_to_autograd(chain_runs, prepare, mode):
    _compare(_mlp, (3, 4), 3, 2, chain_runs, expect_chain=False, prepare=prepare, mode=mode)


def test_global_module_hook_leaves_it_to_autograd(chain_runs):
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        _compare(_mlp, (3, 4), 3, 2, chain_runs, expect_chain=False)
    finally:
        handle.remove()


class _MyLinear(onn.Linear):
    pass


def _with_subclass(seed=0):
    torch.manual_seed(seed)
    return tnn.Sequential(tnn.Flatten(1), _MyLinear(12, 9), onn.LIF(), onn.Linear(9, 4)).double()


def _with_dropout(seed=0):
    torch.manual_seed(seed)
    return tnn.Sequential(tnn.Flatten(1), onn.Linear(12, 9), onn.LIF(), tnn.Dropout(0.0), onn.Linear(9, 4)).double()


def _nested(seed=0):
    torch.manual_seed(seed)
    return tnn.Sequential(tnn.Sequential(tnn.Flatten(1), onn.Linear(12, 9)), onn.LIF(), onn.Linear(9, 4)).double()


class _MyR400(type(_r400())):
    pass  # inherits forward but not the class's own _ottt_chain: the chain cannot know its forward


def _r400_subclass(seed=0):
    m = _r400(seed)
    m.__class__ = _MyR400
    return m


def _r400_neuron_hook(seed=0):
    m = _r400(seed)
    m.rnn.neuron.register_forward_hook(lambda *a: None)
    return m


def _r400_frozen_recurrent(seed=0):
    m = _r400(seed)
    m.rnn.recurrent.weight.requires_grad_(False)
    return m


@pytest.mark.parametrize("make,shape", [(_r400_subclass, (1, 6, 6)), (_r400_neuron_hook, (1, 6, 6)),
                                        (_r400_frozen_recurrent, (1, 6, 6))],
                         ids=["R400 subclass", "hook on a submodule", "frozen recurrent weight"])
@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
def test_recurrent_models_the_chain_leaves_to_autograd(chain_runs, make, shape, mode):
    _compare(make, shape, 3, 2, chain_runs, expect_chain=False, mode=mode)


@pytest.mark.parametrize("make", [_with_subclass, _with_dropout, _nested], ids=["subclass", "other module", "nested"])
def test_other_models_leave_it_to_autograd(chain_runs, make):
    _compare(make, (3, 4), 3, 2, chain_runs, expect_chain=False)


def test_input_that_requires_grad_leaves_it_to_autograd(chain_runs):
    model = _mlp()
    x, y = _input((3, 4), 3, 2)
    x.requires_grad_(True)
    train_step(model, x, y, None, T=3, sequence=True)
    assert chain_runs[0] == 0
    assert x.grad is not None and x.grad.abs().sum() > 0  # the input's gradient is there, as asked


def test_pytorch_backend_leaves_it_to_autograd(chain_runs):
    model = _mlp()
    x, y = _input((3, 4), 3, 2)
    with using_backend("torch"):
        train_step(model, x, y, None, T=3, sequence=True)
    assert chain_runs[0] == 0


@pytest.mark.parametrize("mode,kw", [("ottt_a", {"chunk": 2}), ("sltt", {"chunk": 2}), ("bptt", {}),
                                     ("sltt_k", {"k": 2})])
def test_other_modes_do_not_take_the_chain(chain_runs, mode, kw):
    model = _mlp()
    x, y = _input((3, 4), 3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    train_step(model, x, y, opt, T=3, mode=mode, sequence=True, **kw)
    assert chain_runs[0] == 0


def test_ottt_o_is_stepped_after_every_time_step_through_the_chain(chain_runs):
    # The chain's OTTT_O loop steps the optimizer T times per call, each after that step's own gradient:
    # the parameters seen by step t's forward are those after t optimizer steps.
    model = _ws_mlp()
    x, y = _input((3, 4), 3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    seen = []
    step = opt.step

    def counted():
        seen.append([p.grad.clone() for p in model.parameters()])
        step()

    opt.step = counted
    train_step(model, x, y, opt, T=3, mode="ottt_o", sequence=True)
    assert chain_runs[0] == 3 and len(seen) == 3
    # each step's gradient is that step's alone (zeroed in between): no two steps give the same one
    assert not torch.allclose(seen[0][-1], seen[1][-1]) and not torch.allclose(seen[1][-1], seen[2][-1])


@pytest.mark.parametrize("kw", [{"check_finite": True}, {"amp": "bf16"}], ids=["check_finite", "amp"])
def test_ottt_o_settings_that_keep_autograd(chain_runs, kw):
    # A per-step loss (check_finite) and autocast need the autograd path.
    model = _mlp().float()
    x, y = _input((3, 4), 3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    train_step(model, x.float(), y, opt, T=3, mode="ottt_o", sequence=True, **kw)
    assert chain_runs[0] == 0


@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o"])
def test_bad_input_shape_is_named_as_before(mode):
    model = _mlp()
    x = torch.randn(3, 2, 13, dtype=torch.float64)  # 13 features where the Linear takes 12
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"Linear\(in_features=12, out_features=9.*input x must have shape"):
        train_step(model, x, torch.zeros(2, dtype=torch.long), opt, T=3, sequence=True, mode=mode)


def test_an_exception_mid_sequence_leaves_no_gradient():
    model = _mlp()
    x, y = _input((3, 4), 3, 2)
    y[0] = 7  # a class the model has no output for: refused at the first step
    with pytest.raises(ValueError, match="class index 7"):
        train_step(model, x, y, None, T=3, sequence=True)
    assert all(p.grad is None for p in model.parameters())
    # and the model trains normally afterwards, through the chain
    y[0] = 1
    loss, _ = train_step(model, x, y, None, T=3, sequence=True)
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_an_ottt_o_error_at_the_first_step_changes_nothing(chain_runs):
    # Under OTTT_O a refused target stops the call before any optimizer step: no gradient, no new weights;
    # the model then trains through the chain.
    model = _ws_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _input((3, 4), 3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    y[0] = 7
    with pytest.raises(ValueError, match="class index 7"):
        train_step(model, x, y, opt, T=3, mode="ottt_o", sequence=True)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert chain_runs[0] == 1  # the refused call stopped at its first step's output
    y[0] = 1
    train_step(model, x, y, opt, T=3, mode="ottt_o", sequence=True)
    assert chain_runs[0] == 4 and not all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_reset_between_sequences_is_kept():
    # Two calls on the same model with different batch sizes: the states are reset by train_step.
    model = _mlp()
    for B in (2, 5):
        x, y = _input((3, 4), 2, B)
        loss, out = train_step(model, x, y, None, T=2, sequence=True)
        assert out.shape == (B, 4) and torch.isfinite(loss)
    assert ottt_cuda.nn.LIF is onn.LIF


def test_output_that_is_not_batch_by_classes_is_refused():
    # Linear on [B, 2, 6] inputs (no Flatten) keeps three dimensions: the loss needs [B, classes].
    torch.manual_seed(0)
    model = tnn.Sequential(onn.Linear(6, 5), onn.LIF(), onn.Linear(5, 3)).double()
    x = torch.randn(2, 4, 2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"output must be \[batch, classes\] at each time step, got shape \(4, 2, 3\)"):
        train_step(model, x, torch.zeros(4, dtype=torch.long), None, T=2, sequence=True)


@pytest.mark.parametrize("fused", [True, False])
def test_the_lif_hands_its_trace_to_the_readout(chain_runs, monkeypatch, fused):
    # Fused, the readout's trace comes from the LIF's kernel pass (nn._handoff): the synapse never
    # updates it itself; unfused, it does once per step. The numbers are the same either way (above).
    from ottt_cuda.nn import _fast

    calls = [0]
    for name in ("trace_update_", "trace_update"):
        original = getattr(_fast, name)

        def counted(*args, _original=original, **kw):
            calls[0] += 1
            return _original(*args, **kw)
        monkeypatch.setattr(_fast, name, counted)
    model = _mlp()  # its input layer is untraced: the readout's is the only trace
    onn.fuse_traces(model, fused)
    x, y = _input((3, 4), 4, 2)
    train_step(model, x, y, None, T=4, sequence=True)
    assert chain_runs[0] == 4
    assert calls[0] == (0 if fused else 4)
