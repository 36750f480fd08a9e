"""The wrappers' fast path on the compiled backends (ottt_cuda/ops.py): a valid call
skips the Python checks and the registered custom-op autograd, and yet every bad
argument is still refused with the error the other backends raise, the in-place
ops leave tensors that autograd tracks alone, and gradients are unchanged."""
import math

import pytest
import torch

import ottt_cuda
from ottt_cuda import ops, reference
from conftest import using_backend

compiled = pytest.mark.skipif(not ottt_cuda.build_info()["cpu_compiled"], reason="compiled extension not built")


@pytest.fixture
def no_python_checks(monkeypatch):
    """Makes the Python argument checks fail the test if they run."""
    def refuse(*args, **kwargs):
        raise AssertionError("the Python checks ran on a valid call")
    for name in ("tensor", "like", "number", "decay", "neuron", "mask_for"):
        monkeypatch.setattr(ops._validation, name, refuse)


@compiled
def test_valid_in_place_calls_skip_the_python_checks(no_python_checks):
    gen = torch.Generator().manual_seed(0)
    w, g, a = torch.randn(3, 4, generator=gen), torch.randn(2, 3, generator=gen), torch.rand(2, 4, generator=gen)
    tr, s = torch.rand(5, generator=gen), torch.rand(5, generator=gen)
    want_w = w.double() + 0.5 * g.double().t() @ a.double()
    want_tr = 0.25 * tr + s
    with using_backend("cpu"):
        assert ops.outer_accumulate_(w, g, a, 0.5) is w
        assert ops.trace_update_(tr, s, 0.25) is tr
    torch.testing.assert_close(w.double(), want_w, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tr, want_tr, rtol=0, atol=1e-7)


@compiled
@pytest.mark.parametrize("with_grad", [False, True])
def test_valid_lif_step_skips_the_python_checks(with_grad, no_python_checks):
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 9, generator=gen) * 1.5).requires_grad_(with_grad)
    v, tr = torch.rand(4, 9, generator=gen), torch.rand(4, 9, generator=gen)
    mask = (torch.rand(4, 9, generator=gen) > 0.5).float()
    kw = dict(tau=3, v_th=0.8, v_reset=0.1, decay_input=True, surrogate="atan", alpha=2, trace_decay=0.5, mask=mask)
    with using_backend("cpu"):
        s, vn, tn = ops.lif_step(x, v, trace=tr, **kw)
    ref_kw = dict(kw, tau=3.0, alpha=2.0)  # the reference takes floats
    want = reference.lif_step_ref(x.detach(), v, trace=tr, **ref_kw)
    for got, exp in zip((s, vn, tn), want):
        torch.testing.assert_close(got.detach(), exp, rtol=1e-6, atol=1e-6)
    assert s.requires_grad == with_grad


# Mistakes the compiled op alone would accept or report as another type; the wrapper must refuse each
# with the Python message (argument named) and leave the output untouched.
BAD_OUTER = [
    (TypeError, r"\balpha\b.*real number.*bool", dict(alpha=True)),
    (TypeError, r"\balpha\b.*real number.*str", dict(alpha="1")),
    (ValueError, r"\balpha\b.*finite", dict(alpha=math.inf)),
    (TypeError, r"\bg\b.*torch\.Tensor.*list", dict(g=[[1.0, 2.0, 3.0]])),
    (TypeError, r"\ba\b.*float.*int64", dict(a=torch.ones(2, 4, dtype=torch.int64))),
    (TypeError, r"\bgrad_w\b.*float.*float8", dict(grad_w=torch.zeros(3, 4).to(torch.float8_e4m3fn))),
]


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("exc,pattern,change", BAD_OUTER, ids=[str(i) for i in range(len(BAD_OUTER))])
def test_outer_accumulate_bad_argument_is_named_on_every_backend(backend, exc, pattern, change):
    if backend == "cpu" and not ottt_cuda.build_info()["cpu_compiled"]:
        pytest.skip("compiled extension not built")
    call = dict(grad_w=torch.zeros(3, 4), g=torch.ones(2, 3), a=torch.ones(2, 4), alpha=1.0)
    call.update(change)
    before = call["grad_w"].clone()
    with using_backend(backend), pytest.raises(exc, match=pattern):
        ops.outer_accumulate_(**call)
    assert torch.equal(call["grad_w"].float(), before.float())


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("decay", [1.5, -0.1, math.nan, True])
def test_trace_update_bad_decay_is_refused_and_trace_kept(backend, decay):
    if backend == "cpu" and not ottt_cuda.build_info()["cpu_compiled"]:
        pytest.skip("compiled extension not built")
    tr = torch.rand(6)
    before = tr.clone()
    with using_backend(backend), pytest.raises((ValueError, TypeError), match=r"\bdecay\b"):
        ops.trace_update_(tr, torch.ones(6), decay)
    assert torch.equal(tr, before)


@compiled
def test_in_place_ops_on_tensors_autograd_tracks():
    """g, a or the trace requiring grad: the result is the same and the outputs do not
    join the graph (the accumulation is no part of the model's forward)."""
    g = torch.randn(2, 3).requires_grad_()
    a = torch.rand(2, 4).requires_grad_()
    with using_backend("cpu"):
        w = torch.zeros(3, 4)
        ops.outer_accumulate_(w, g, a)
        tr = torch.zeros(4).requires_grad_()
        ops.trace_update_(tr, a[0], 0.5)
    assert not w.requires_grad and w.grad_fn is None
    torch.testing.assert_close(w, (g.t() @ a).detach())
    assert tr.grad_fn is None
    torch.testing.assert_close(tr.detach(), a[0].detach())


@compiled
@pytest.mark.parametrize("surrogate", reference.SURROGATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lif_step_gradient_through_the_autograd_function(surrogate, dtype):
    """Eagerly, the compiled lif_step differentiates through ops._LIFStep (not the custom op's
    registered autograd); same gradient as the reference, membrane and trace detached."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 33, generator=gen) * 1.5).to(dtype)
    v, tr = torch.rand(4, 33, generator=gen).to(dtype), torch.rand(4, 33, generator=gen).to(dtype)
    mask = (torch.rand(33, generator=gen) > 0.3).to(dtype)
    gy = torch.randn(4, 33, generator=gen).to(dtype)
    kw = dict(surrogate=surrogate, alpha=2.5, trace=tr, trace_decay=0.5, mask=mask)
    outs = {}
    for backend in ("cpu", "torch"):
        xl = x.clone().requires_grad_()
        with using_backend(backend):
            s, vn, tn = ops.lif_step(xl, v, **kw)
        (gx,) = torch.autograd.grad(s, xl, gy)
        outs[backend] = (s.detach(), vn, tn, gx)
        if backend == "cpu":
            assert type(s.grad_fn).__name__ == "_LIFStepBackward"
            assert vn.grad_fn is None and not vn.requires_grad and tn.grad_fn is None and not tn.requires_grad
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for got, want in zip(outs["cpu"], outs["torch"]):
        torch.testing.assert_close(got, want, **tol)


@compiled
@pytest.mark.parametrize("detach_reset", [True, False])
def test_lif_multistep_gradients_through_the_autograd_function(detach_reset):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, 7, generator=gen, dtype=torch.float64) * 1.5
    v0 = torch.rand(3, 7, generator=gen, dtype=torch.float64)
    gs, gv = torch.randn(5, 3, 7, generator=gen, dtype=torch.float64), torch.randn(3, 7, generator=gen,
                                                                                     dtype=torch.float64)
    outs = {}
    for backend in ("cpu", "torch"):
        xl, vl = x.clone().requires_grad_(), v0.clone().requires_grad_()
        with using_backend(backend):
            s, v_last = ops.lif_multistep(xl, vl, v_reset=0.0, surrogate="atan", detach_reset=detach_reset)
        grads = torch.autograd.grad((s, v_last), (xl, vl), (gs, gv))
        outs[backend] = (s.detach(), v_last.detach()) + grads
        if backend == "cpu":
            assert type(s.grad_fn).__name__ == "_LIFMultistepBackward"
    for got, want in zip(outs["cpu"], outs["torch"]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@compiled
def test_lif_step_without_grad_builds_no_graph_and_saves_nothing():
    x = torch.randn(8).requires_grad_()
    with using_backend("cpu"), torch.no_grad():
        s, vn = ops.lif_step(x)
    assert s.grad_fn is None and not s.requires_grad and vn.grad_fn is None
    torch.testing.assert_close(s, (x.detach() >= 1.0).float())


# The compiled ops called directly (bypassing ottt_cuda.ops) raise the Python types too.
DIRECT = [
    (TypeError, r"\bx\b.*float.*Int", lambda o: o.lif_step_fwd(torch.ones(3, dtype=torch.int32), None, None, None,
                                                               2.0, 1.0, None, False, 0.0, "sigmoid", 4.0, False)),
    (ValueError, r"\btau\b.*finite", lambda o: o.lif_step_fwd(torch.ones(3), None, None, None, math.nan, 1.0, None,
                                                              False, 0.0, "sigmoid", 4.0, False)),
    (TypeError, r"\bv\b.*dtype", lambda o: o.lif_step_fwd(torch.ones(3), torch.ones(3, dtype=torch.float64), None,
                                                          None, 2.0, 1.0, None, False, 0.0, "sigmoid", 4.0, False)),
    (ValueError, r"\bsurrogate\b", lambda o: o.lif_step_bwd(torch.ones(3), torch.ones(3), None, 2.0, 1.0, False,
                                                            "erf", 4.0)),
    (TypeError, r"\bv0\b.*dtype", lambda o: o.lif_multistep_fwd(torch.ones(2, 3), torch.ones(3, dtype=torch.float64),
                                                                2.0, 1.0, None, False, "sigmoid", 4.0, False)),
    (ValueError, r"\bdecay\b.*\[0, 1\]", lambda o: o.trace_update_(torch.ones(3), torch.ones(3), 2.0)),
    (ValueError, r"\bdecay\b.*finite", lambda o: o.trace_update(None, torch.ones(3), math.nan)),
    (ValueError, r"\balpha\b.*finite", lambda o: o.outer_accumulate_(torch.zeros(3, 4), torch.ones(2, 3),
                                                                      torch.ones(2, 4), math.inf)),
    (TypeError, r"\bgrad_w\b.*dtype", lambda o: o.outer_accumulate_(torch.zeros(3, 4, dtype=torch.float64),
                                                                     torch.ones(2, 3), torch.ones(2, 4), 1.0)),
]


@compiled
@pytest.mark.parametrize("exc,pattern,call", DIRECT, ids=[str(i) for i in range(len(DIRECT))])
def test_compiled_ops_raise_value_and_type_errors(exc, pattern, call):
    with pytest.raises(exc, match=pattern):
        call(torch.ops.ottt_cuda)


@compiled
@pytest.mark.parametrize("surrogate", reference.SURROGATES)
def test_vectorized_backward_matches_float64_formula(surrogate):
    """The CPU backward's vector loop (AVX2, with ATen's fast polynomial exp for the
    sigmoid) over a few thousand float32 elements spanning the surrogate's support,
    against the surrogate derivative computed in float64 (ottt_cuda.reference)."""
    z = torch.linspace(-3.0, 3.0, 4099)  # float32; the formula sees the same values in float64
    grad = torch.linspace(-2.0, 2.0, 4099).flip(0)
    want = grad.double() * reference.surrogate_grad_ref(z.double(), surrogate, 4.0)
    got = torch.ops.ottt_cuda.lif_step_bwd(grad, z, None, 2.0, 1.0, False, surrogate, 4.0)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@compiled
def test_backend_chosen_at_run_time_is_honored(monkeypatch):
    """The fast path's backend lookup still follows OTTT_BACKEND and set_backend, as changed
    between calls."""
    calls = []
    monkeypatch.setattr(reference, "outer_accumulate__ref", lambda *args: calls.append("torch"))
    w, g, a = torch.zeros(3, 4), torch.ones(2, 3), torch.ones(2, 4)
    with using_backend(None):
        ops.outer_accumulate_(w, g, a)
        assert calls == [] and torch.equal(w, torch.full((3, 4), 2.0))
        monkeypatch.setenv("OTTT_BACKEND", "torch")
        ops.outer_accumulate_(w, g, a)
        assert calls == ["torch"]
        monkeypatch.setenv("OTTT_BACKEND", "cuda")
        with pytest.raises(RuntimeError, match=r"backend 'cuda'.*OTTT_BACKEND"):
            ops.outer_accumulate_(w, g, a)
        monkeypatch.delenv("OTTT_BACKEND")
        ops.outer_accumulate_(w, g, a)
        assert calls == ["torch"] and torch.equal(w, torch.full((3, 4), 4.0))
    with using_backend("torch"):
        ops.outer_accumulate_(w, g, a)
    assert calls == ["torch", "torch"]


@compiled
@pytest.mark.parametrize("batch", range(1, 10))
@pytest.mark.parametrize("threads", [1, 2])
def test_outer_accumulate_small_batch_kernel_every_batch_and_edge(batch, threads):
    """The CPU small-batch loop (batch <= 8; 9 is addmm_) over full 16-wide column blocks plus
    a masked tail (in = 37), groups of 4 rows plus leftover rows (out = 1203, cut into chunks
    by the threads at row counts that are not multiples of 4), vs a float64 matmul."""
    gen = torch.Generator().manual_seed(batch)
    w = torch.randn(1203, 37, generator=gen)
    g, a = torch.randn(batch, 1203, generator=gen), torch.rand(batch, 37, generator=gen)
    exact = w.double() + 0.3 * g.double().t() @ a.double()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with using_backend("cpu"):
            ops.outer_accumulate_(w, g, a, 0.3)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(w.double(), exact, rtol=1e-6, atol=1e-5)


@compiled
@pytest.mark.parametrize("surrogate", reference.SURROGATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vectorized_backward_keeps_nan_and_infinite_membranes(surrogate, dtype):
    """A NaN membrane gives a NaN gradient (0 for the triangle, whose fmax the compiled
    kernels use on every backend) and +-inf the surrogate's limit, 0, as in the reference:
    the vector loop's fast exp must not turn NaN into a number. 24 elements, so the
    values land in the vector loop."""
    z = torch.tensor([math.nan, math.inf, -math.inf, 0.05, -0.3, 2.0, math.nan, 0.0] * 3, dtype=dtype)
    grad = torch.ones_like(z)
    want = reference.surrogate_grad_ref(z.double(), surrogate, 4.0)
    if surrogate == "triangle":  # the compiled kernels' max(1 - alpha |z|, 0) is fmax: 0 wins over NaN
        want = torch.where(z.isnan(), 0.0, want)
    got = torch.ops.ottt_cuda.lif_step_bwd(grad, z, None, 2.0, 1.0, False, surrogate, 4.0)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6, equal_nan=True)
