"""ottt_cuda._C.fast (csrc/fast_calls.cpp): the registered ops called without torch.ops'
boxed call, which the eager fast paths use (ops._Compiled). Each binding must give what
the op gives through torch.ops (the same kernels, bit for bit), raise the op's own errors
with Python's types, stay out of autograd where the wrappers need it to, bump the version
of what it writes in place, and be what the fast paths actually call; torch.compile's
path (the checked one) must keep the OpOverloads."""
import threading

import pytest
import torch

from ottt_cuda import _extension, ops
from conftest import strided

fast = _extension._C.fast if _extension.loaded() else None
needs_fast = pytest.mark.skipif(fast is None, reason="compiled extension not loaded")
OPS = torch.ops.ottt_cuda

# (tau, v_th, v_reset, decay_input, trace_decay, surrogate, alpha): soft and hard reset, each surrogate
NEURONS = [(2.0, 1.0, None, False, 0.5, "sigmoid", 4.0), (3.0, 0.8, 0.1, True, 0.25, "atan", 2.0),
           (1.7, 1.0, 0.0, False, 0.0, "triangle", 1.5), (2.0, 0.9, -0.2, True, 0.9, "rectangle", 0.9)]
SHAPES = [(0,), (1,), (7, 13), (3, 5, 17)]


def _same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


def _inputs(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=gen) * 1.5).to(dtype) for _ in range(3)]


@needs_fast
@pytest.mark.parametrize("neuron", NEURONS, ids=lambda n: n[5])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_lif_step_matches_the_op(neuron, shape, dtype):
    x, v, tr = _inputs(shape, dtype, 0)
    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(1)) > 0.3).to(dtype)
    for args in [(x, v, tr, mask), (x, None, None, None), (strided(x), strided(v), tr, None)]:
        got = fast.lif_step_fwd(*args, *neuron, True)
        want = OPS.lif_step_fwd(*args, *neuron, True)
        _same(got, want)
        grad = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(dtype)
        tau, v_th, _, decay_input, _, surrogate, alpha = neuron
        _same([fast.lif_step_bwd(grad, got[2], args[3], tau, v_th, decay_input, surrogate, alpha)],
              [OPS.lif_step_bwd(grad, want[2], args[3], tau, v_th, decay_input, surrogate, alpha)])


@needs_fast
@pytest.mark.parametrize("neuron", NEURONS, ids=lambda n: n[5])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_lif_multistep_matches_the_op(neuron, detach_reset):
    tau, v_th, v_reset, decay_input, _, surrogate, alpha = neuron
    args = (tau, v_th, v_reset, decay_input, surrogate, alpha)
    x_seq, _, _ = _inputs((5, 3, 11), torch.float32, 3)
    v0 = torch.rand(3, 11, generator=torch.Generator().manual_seed(4))
    got = fast.lif_multistep_fwd(x_seq, v0, *args, True, detach_reset=detach_reset)
    want = OPS.lif_multistep_fwd(x_seq, v0, *args, True, detach_reset=detach_reset)
    _same(got, want)
    g = torch.randn(5, 3, 11, generator=torch.Generator().manual_seed(5))
    gv = torch.randn(3, 11, generator=torch.Generator().manual_seed(6))
    _same(fast.lif_multistep_bwd(g, gv, got[2], *args, detach_reset=detach_reset),
          OPS.lif_multistep_bwd(g, gv, want[2], *args, detach_reset=detach_reset))
    # detach_reset is optional and defaults to True, as in the schema
    _same(fast.lif_multistep_fwd(x_seq, None, *args, True), OPS.lif_multistep_fwd(x_seq, None, *args, True))


@needs_fast
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_trace_updates_match_the_op(shape):
    tr, s, _ = _inputs(shape, torch.float32, 7)
    _same([fast.trace_update(tr, s, 0.3)], [OPS.trace_update(tr, s, 0.3)])
    _same([fast.trace_update(None, s, 0.3)], [OPS.trace_update(None, s, 0.3)])
    want = tr.clone()
    OPS.trace_update_(want, s, 0.3)
    got = strided(tr.clone())  # in place through any strides
    fast.trace_update_(got, s, 0.3)
    assert torch.equal(got, want)


@needs_fast
@pytest.mark.parametrize("batch", [0, 1, 3, 8, 9, 33], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_outer_accumulate_matches_the_op(batch, dtype):
    gen = torch.Generator().manual_seed(8)
    g, a = torch.randn(batch, 19, generator=gen).to(dtype), torch.rand(batch, 23, generator=gen).to(dtype)
    w0 = torch.randn(19, 23, generator=gen).to(dtype)
    want = w0.clone()
    OPS.outer_accumulate_(want, g, a, 0.5)
    got = w0.clone()
    fast.outer_accumulate_(got, g, a, 0.5)
    assert torch.equal(got, want)
    # independently of the op: grad_w + alpha g^T a in float64
    torch.testing.assert_close(got.double(), w0.double() + 0.5 * g.double().t() @ a.double(),
                               rtol=1e-5, atol=1e-5)


@needs_fast
def test_errors_are_the_ops_own_with_python_types():
    w, g, a = torch.zeros(4, 5), torch.randn(2, 4), torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"a's last dimension must equal grad_w.size\(1\) = 5"):
        fast.outer_accumulate_(w, g, torch.randn(2, 6), 1.0)
    with pytest.raises(TypeError, match="g and a must have the same dtype"):
        fast.outer_accumulate_(w, g.double(), a, 1.0)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        fast.lif_step_fwd(g, None, None, None, 2.0, 1.0, None, False, 0.0, "relu", 4.0, False)
    with pytest.raises(ValueError, match="decay"):
        fast.trace_update_(torch.zeros(3), torch.ones(3), 1.5)
    assert torch.equal(w, torch.zeros(4, 5))  # nothing written by the refused call


@needs_fast
def test_forward_ops_stay_out_of_autograd_and_in_place_ops_bump_the_version():
    x = torch.randn(6, requires_grad=True)
    outs = fast.lif_step_fwd(x, None, None, None, 2.0, 1.0, None, False, 0.0, "sigmoid", 4.0, True)
    assert all(o.grad_fn is None and not o.requires_grad for o in outs)
    outs = fast.lif_multistep_fwd(x.view(2, 3), None, 2.0, 1.0, None, False, "sigmoid", 4.0, True)
    assert all(o.grad_fn is None and not o.requires_grad for o in outs)
    tr = fast.trace_update(None, x, 0.5)
    assert tr.grad_fn is None and not tr.requires_grad

    # autograd's saved-tensor check relies on the version of what is written in place
    for op, args in ((fast.outer_accumulate_, (torch.randn(1, 3), torch.randn(1, 4), 1.0)),
                     (fast.outer_accumulate_, (torch.randn(20, 3), torch.randn(20, 4), 1.0)),
                     (fast.trace_update_, (torch.randn(3, 4), 0.5))):
        t = torch.zeros(3, 4)
        before = t._version
        op(t, *args)
        assert t._version > before, op


@needs_fast
def test_fast_paths_call_the_bindings_and_the_checked_path_the_op():
    assert ops._Compiled.outer_accumulate_ is fast.outer_accumulate_
    assert ops._Compiled.lif_step_fwd is fast.lif_step_fwd
    assert ops._Compiled.lif_multistep_bwd is fast.lif_multistep_bwd
    # what torch.compile traces: the OpOverloads (they carry the fake kernels)
    assert ops._impl("cpu").outer_accumulate_ is OPS.outer_accumulate_.default
    assert ops._impl("cpu").trace_update_ is OPS.trace_update_.default


@needs_fast
def test_concurrent_calls_from_threads():
    # the GIL is released while an op runs; each thread accumulates into its own grad_w
    gen = torch.Generator().manual_seed(9)
    g, a = torch.randn(4, 64, generator=gen), torch.rand(4, 96, generator=gen)
    want = g.double().t() @ a.double() * 50
    outs, errors = [torch.zeros(64, 96) for _ in range(4)], []

    def work(w):
        try:
            for _ in range(50):
                fast.outer_accumulate_(w, g, a, 1.0)
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for w in outs:
        torch.testing.assert_close(w.double(), want, rtol=1e-5, atol=1e-4)


def _backends():
    from conftest import backend_params
    return [p for p in backend_params() if p.values[0][0] == "cpu"]


@pytest.mark.parametrize("dev_backend", _backends())
def test_in_place_ops_trip_autograds_saved_tensor_check(dev_backend):
    """A tensor saved for a backward and then changed by trace_update_ / outer_accumulate_:
    the backward must refuse (autograd's version check), not silently use the new values,
    on every backend (before the compiled ops bumped the version, it went through)."""
    from conftest import using_backend

    _, backend = dev_backend
    with using_backend(backend):
        x = torch.randn(3, 4, requires_grad=True)
        trace = torch.rand(3, 4)
        y = (x * trace).sum()  # mul saves trace for x's gradient
        ops.trace_update_(trace, torch.ones(3, 4), 0.5)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()

        w = torch.rand(3, 4)
        z = (x * w).sum()
        ops.outer_accumulate_(w, torch.randn(2, 3), torch.randn(2, 4))
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            z.backward()
