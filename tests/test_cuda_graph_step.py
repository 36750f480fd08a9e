"""train_step(..., cuda_graph=True) (nn/_graph.py).

On the CPU the captured step's body (nn._graph.StaticStep: fixed buffers, states updated in place,
gradients added per step into .grad) runs eagerly: train_step(cuda_graph=True) with the device check
lifted and capture off is compared in float64 with the ordinary train_step on copies of one model
(loss, summed output, every .grad, the weights after SGD, the layers' states), over two calls. The
errors are checked as a user meets them. The tests marked cuda capture and replay the graph on a GPU
and compare it with the eager path there.
"""
import copy
import functools

import pytest
import torch
import torch.nn as tnn

from ottt_cuda import _backend
from ottt_cuda import nn as onn
from ottt_cuda.nn import _graph
from ottt_cuda.training import train_step
from _chain_models import deep, lif_first as _lif_first, make_input as _input, mlp as _mlp, r400_small as _r400
from _chain_models import states as _states, vgg_small as _vgg, ws_mlp as _ws_mlp
from conftest import cuda_only

_deep = functools.partial(deep, v_reset=0.5)  # a nonzero rest value for the fixed membranes

needs_compiled_cpu = pytest.mark.skipif(not _backend.runs_on("cpu", "cpu"),
                                        reason="the step runs the compiled CPU kernels (ottt_cuda._C)")


@pytest.fixture
def eager_graph(monkeypatch):
    """cuda_graph=True on the CPU: the device check lifted, the step run without capture."""
    check, train = _graph.check_request, _graph.train

    def check_without_device(model, x, *args):
        return check(model, _CudaLike(), *args)

    monkeypatch.setattr(_graph, "check_request", check_without_device)
    monkeypatch.setattr(_graph, "train", lambda *a, capture: train(*a, capture=False))


class _CudaLike:
    """Stands for x in check_request's device test only."""
    device = torch.device("cuda")


def _train(model, x, y, T, graph, sequence, mode, calls=2, optimizer=True):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer else None
    outs = []
    for _ in range(calls):
        loss, out = train_step(model, x, y, opt, T=T, mode=mode, sequence=sequence, cuda_graph=graph)
        assert not loss.requires_grad and not out.requires_grad  # detached, as train_step documents
        outs.append((loss.clone(), out.clone()))
    # cuda_graph=True gives every parameter a .grad: zeros where the eager path has none (a recurrent
    # weight at T = 1 is never used).
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    return outs, grads, [p.detach().clone() for p in model.parameters()], \
        _states(model)


def _same(a, b, tol):
    def close(p, q, what):
        if p is None or q is None:
            assert p is None and q is None, what
            return
        assert p.shape == q.shape and torch.allclose(p.double(), q.double(), rtol=tol,
                                                     atol=tol * max(1.0, q.abs().max().item())), what
    for i, ((la, oa), (lb, ob)) in enumerate(zip(a[0], b[0])):
        close(la, lb, f"loss {i}")
        close(oa, ob, f"output sum {i}")
    for what, xs, ys in (("grad", a[1], b[1]), ("parameter", a[2], b[2]), ("state", a[3], b[3])):
        for i, (p, q) in enumerate(zip(xs, ys)):
            close(p, q, f"{what} {i}")


def _compare(make, shape, T, B, mode="ottt_a", sequence=True, device="cpu", dtype=torch.float64, tol=1e-10,
             optimizer=True, calls=2):
    model = make().to(device, dtype)
    other = copy.deepcopy(model)
    x, y = _input(shape, T, B, sequence=sequence, device=device, dtype=dtype)
    torch.manual_seed(1234)  # the same dropout masks in both runs
    got = _train(model, x, y, T, True, sequence, mode, calls, optimizer)
    torch.manual_seed(1234)
    want = _train(other, x, y, T, False, sequence, mode, calls, optimizer)
    _same(got, want, tol)
    return model


@needs_compiled_cpu
@pytest.mark.parametrize("mode", ["ottt_a", "sltt"])
@pytest.mark.parametrize("make,shape", [(_mlp, (3, 4)), (_deep, (8,)), (_lif_first, (8,))],
                         ids=["mlp", "deep", "lif_first"])
@pytest.mark.parametrize("B", [1, 5])
def test_fixed_buffer_step_matches_eager(eager_graph, make, shape, B, mode):
    _compare(make, shape, 4, B, mode)


@needs_compiled_cpu
@pytest.mark.parametrize("mode", ["ottt_a", "sltt"])
@pytest.mark.parametrize("feedback", [True, False], ids=["feedback_dropout", "readout_dropout"])
@pytest.mark.parametrize("B,T", [(1, 4), (3, 1), (2, 3)])
def test_r400_on_fixed_buffers_matches_eager(eager_graph, feedback, mode, B, T):
    # sWS input weight refreshed per call and its gradient settled after the steps; the recurrent
    # synapse from zero previous spikes; the sequence's dropout mask drawn per call, as the eager path
    # draws it (the same generator calls: both runs start from one seed).
    _compare(lambda: _r400(feedback=feedback), (1, 6, 6), T, B, mode, calls=3)


@needs_compiled_cpu
@pytest.mark.parametrize("mode", ["ottt_a", "sltt"])
def test_ws_linear_and_dropout_on_fixed_buffers_match_eager(eager_graph, mode):
    _compare(_ws_mlp, (3, 4), 4, 3, mode)


@needs_compiled_cpu
@pytest.mark.parametrize("mode", ["ottt_a", "sltt"])
@pytest.mark.parametrize("dropout,fc_hw", [(0.0, 1), (0.2, 2)])
@pytest.mark.parametrize("B", [1, 3])
def test_vgg_on_fixed_buffers_matches_eager(eager_graph, mode, dropout, fc_hw, B):
    # sWS convolutions (each its own trace of 2.74 s where the eager path keeps the trace of s and
    # scales the gradient), average and adaptive pooling, the readout; three calls.
    _compare(lambda: _vgg(dropout=dropout, fc_hw=fc_hw), (2, 8, 8), 3, B, mode, calls=3)


@needs_compiled_cpu
def test_r400_in_eval_mode_matches_eager(eager_graph):
    _compare(lambda: _r400().eval(), (1, 6, 6), 3, 2)


@needs_compiled_cpu
def test_static_input_and_gradient_accumulation_without_optimizer(eager_graph):
    # optimizer=None: .grad accumulates over calls, as the eager path does.
    _compare(_deep, (8,), 3, 2, sequence=False, optimizer=False, calls=3)


@needs_compiled_cpu
def test_unfused_model_matches(eager_graph):
    def make():
        m = _deep()
        onn.fuse_traces(m, False)
        return m
    _compare(make, (8,), 5, 3)


def _latest(model):
    """The step train_step used last (the model keeps up to _graph._KEEP, most recent last)."""
    return _graph.kept_steps(model)[-1]


@needs_compiled_cpu
def test_the_step_is_kept_and_rebuilt_when_it_must_be(eager_graph):
    model = _mlp()
    x, y = _input((3, 4), 3, 2)
    train_step(model, x, y, None, T=3, sequence=True, cuda_graph=True)
    first = _latest(model)
    train_step(model, x, y, None, T=3, sequence=True, cuda_graph=True)
    assert _latest(model) is first  # same shapes, settings and tensors: reused
    model[2].tau = 3.0
    train_step(model, x, y, None, T=3, sequence=True, cuda_graph=True)
    assert _latest(model) is not first  # a changed setting: built again
    second = _latest(model)
    train_step(model, x[:, :1], y[:1], None, T=3, sequence=True, cuda_graph=True)
    assert _latest(model) is not second  # another batch size
    third = _latest(model)
    old = model[1].weight.grad
    model[1].weight.grad = old.clone()  # another tensor at another address (the old one still alive)
    train_step(model, x[:, :1], y[:1], None, T=3, sequence=True, cuda_graph=True)
    assert _latest(model) is not third  # the graph would write the old .grad


@needs_compiled_cpu
@pytest.mark.parametrize("make,shape", [(_r400, (1, 6, 6)), (_mlp, (3, 4))], ids=["r400", "sequential"])
def test_kept_steps_stay_off_the_model(eager_graph, make, shape):
    # A CUDA graph cannot be copied or pickled: the kept steps live beside the model, so a copy, a
    # pickle or torch.save of a trained model never meets one, and they go when the model goes.
    import gc
    import io
    import pickle
    model = make().double()
    x, y = _input(shape, 3, 2, dtype=torch.float64)
    train_step(model, x, y, None, T=3, sequence=True, cuda_graph=True)
    assert len(_graph.kept_steps(model)) == 1
    twin = copy.deepcopy(model)
    assert _graph.kept_steps(twin) == []
    assert _graph.kept_steps(pickle.loads(pickle.dumps(model))) == []
    torch.save(model, io.BytesIO())
    # the copy trains as the original does (its own step, built on its own parameters)
    for p in (*model.parameters(), *twin.parameters()):
        p.grad = None
    torch.manual_seed(3)
    got = train_step(twin, x, y, None, T=3, sequence=True, cuda_graph=True)
    torch.manual_seed(3)
    want = train_step(model, x, y, None, T=3, sequence=True, cuda_graph=True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for p, q in zip(twin.parameters(), model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12)
    kept = len(_graph._STEPS)
    del model, twin
    gc.collect()
    assert len(_graph._STEPS) == kept - 2  # nothing kept a model alive


@needs_compiled_cpu
def test_a_step_is_kept_per_batch_size(eager_graph, monkeypatch):
    # An epoch whose last batch is smaller alternates two shapes: each keeps its step (one capture
    # each on a GPU), and every call still equals the eager path.
    built = []
    init = _graph.StaticStep.__init__

    def counted(self, *args, **kwargs):
        built.append(args[2].shape[0])  # x0's batch
        init(self, *args, **kwargs)

    monkeypatch.setattr(_graph.StaticStep, "__init__", counted)
    model = _r400().double()
    other = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_other = torch.optim.SGD(other.parameters(), lr=0.05, momentum=0.9)
    x, y = _input((1, 6, 6), 3, 4, dtype=torch.float64)
    for i, b in enumerate([4, 3, 4, 3, 4]):
        torch.manual_seed(i)
        got = train_step(model, x[:, :b], y[:b], opt, T=3, sequence=True, cuda_graph=True)
        torch.manual_seed(i)
        want = train_step(other, x[:, :b], y[:b], opt_other, T=3, sequence=True)
        torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-12)
    assert built == [4, 3]
    for p, q in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    # more keys than are kept: the least recently used goes first
    for b in (2, 1, 4):
        train_step(model, x[:, :b], y[:b], opt, T=3, sequence=True, cuda_graph=True)
    assert built == [4, 3, 2, 1] and len(_graph.kept_steps(model)) == _graph._KEEP
    train_step(model, x[:, :3], y[:3], opt, T=3, sequence=True, cuda_graph=True)
    assert built == [4, 3, 2, 1]  # still kept
    train_step(model, x[:2, :1], y[:1], opt, T=2, sequence=True, cuda_graph=True)  # a fifth key
    assert built == [4, 3, 2, 1, 1] and len(_graph.kept_steps(model)) == _graph._KEEP
    train_step(model, x[:, :2], y[:2], opt, T=3, sequence=True, cuda_graph=True)
    assert built == [4, 3, 2, 1, 1, 2]  # batch 2 was the least recently used: built again


def test_cpu_input_is_refused():
    model = _mlp()
    x, y = _input((3, 4), 3, 2)
    with pytest.raises(ValueError, match="cuda_graph=True needs the input on a CUDA device; x is on cpu"):
        train_step(model, x, y, None, T=3, sequence=True, cuda_graph=True)


@pytest.mark.parametrize("kw,match", [
    ({"mode": "ottt_o"}, "supports mode 'ottt_a' or 'sltt', got mode 'ottt_o'"),
    ({"mode": "bptt"}, "got mode 'bptt'"),
    ({"amp": "bf16"}, "does not support amp"),
    ({"chunk": 2}, "chunk and k are not supported"),
])
def test_unsupported_settings_are_refused(kw, match):
    model = _mlp()
    x, y = _input((3, 4), 3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        train_step(model, x, y, opt, T=3, sequence=True, cuda_graph=True, **kw)


def test_cuda_graph_must_be_a_bool():
    model = _mlp()
    x, y = _input((3, 4), 3, 2)
    with pytest.raises(TypeError, match="cuda_graph must be a bool, got str"):
        train_step(model, x, y, None, T=3, sequence=True, cuda_graph="yes")


def _with_dropout():
    return tnn.Sequential(tnn.Flatten(1), onn.Linear(12, 9), onn.LIF(), tnn.Dropout(0.1), onn.Linear(9, 4)).double()


class _Wrapped(tnn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def _hooked():
    m = _mlp()
    m[3].register_forward_hook(lambda *a: None)
    return m


@needs_compiled_cpu
@pytest.mark.parametrize("make,shape,match", [
    (_with_dropout, (3, 4), r"module 3 \(Dropout\) is not one of ottt_cuda.nn.Linear / WSLinear / Conv2d / "
                            r"WSConv2d / LIF / RecurrentLIF / Dropout / Scale, nn.Flatten, nn.Identity"),
    (_hooked, (3, 4), r"module 3 \(Linear\) has forward or backward hooks"),
    (lambda: _Wrapped(_mlp()), (3, 4), r"the model is a _Wrapped, not a torch.nn.Sequential"),
    (lambda: tnn.Sequential(onn.Conv2d(1, 2, 3), onn.LIF(), tnn.MaxPool2d(2), tnn.Flatten(1), onn.Linear(2, 3)).double(),
     (1, 4, 4), r"module 2 \(MaxPool2d\) is not one of"),
])
def test_models_that_cannot_be_captured_are_named(eager_graph, make, shape, match):
    model = make()
    x, y = _input(shape, 2, 2)
    with pytest.raises(ValueError, match="cuda_graph=True cannot capture this model: " + match):
        train_step(model, x, y, None, T=2, sequence=True, cuda_graph=True)


@needs_compiled_cpu
def test_output_that_is_not_batch_by_classes_is_refused(eager_graph):
    torch.manual_seed(0)
    model = tnn.Sequential(onn.Linear(6, 5), onn.LIF(), onn.Linear(5, 3)).double()
    x = torch.randn(2, 4, 2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"got shape \(4, 2, 3\)"):
        train_step(model, x, torch.zeros(4, dtype=torch.long), None, T=2, sequence=True, cuda_graph=True)


@needs_compiled_cpu
def test_class_index_beyond_the_outputs_is_refused(eager_graph):
    model = _mlp()
    x, y = _input((3, 4), 2, 2)
    y[1] = 4
    with pytest.raises(ValueError, match="y holds class index 4 but the model has 4 outputs"):
        train_step(model, x, y, None, T=2, sequence=True, cuda_graph=True)


# ----------------------------------------------------------------------------------- on a GPU

_CAPTURED = {  # model, input shape per sample
    "mlp": (_mlp, (3, 4)),
    "deep": (_deep, (8,)),
    # the recurrent layer, the sWS weight refreshed per call, the sequence's dropout mask drawn outside
    # the graph (the capture's warm-up leaves the generators as they were)
    "r400_feedback_dropout": (lambda: _r400(feedback=True), (1, 6, 6)),
    "r400_readout_dropout": (lambda: _r400(feedback=False), (1, 6, 6)),
    # sWS convolutions, Scale, average and adaptive pooling
    "vgg": (lambda: _vgg(), (2, 8, 8)),
    "vgg_dropout_fc2": (lambda: _vgg(dropout=0.2, fc_hw=2), (2, 8, 8)),
}


@pytest.mark.cuda
@cuda_only
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("B", [1, 300])
@pytest.mark.parametrize("case", sorted(_CAPTURED))
def test_captured_step_matches_eager_on_cuda(case, B, dtype, tol, graph_replays):
    replays = graph_replays
    make, shape = _CAPTURED[case]
    for mode in ("ottt_a", "sltt"):
        before = replays[0]
        model = _compare(make, shape, 4, B, mode, device="cuda", dtype=dtype, tol=tol, calls=3)
        assert replays[0] - before == 3 * 4  # every step of every call replayed the graph
        assert _latest(model).graph is not None


@pytest.mark.cuda
@cuda_only
def test_recapture_after_a_setting_changes_on_cuda():
    model = _mlp().cuda()
    other = copy.deepcopy(model)
    x, y = _input((3, 4), 3, 4, device="cuda")
    for m in (model, other):
        m[2].tau = 4.0
    got = _train(model, x, y, 3, True, True, "ottt_a")
    want = _train(other, x, y, 3, False, True, "ottt_a")
    _same(got, want, 1e-10)
    first = _latest(model)
    for m in (model, other):
        m[2].v_th = 0.3
    got = _train(model, x, y, 3, True, True, "ottt_a")
    want = _train(other, x, y, 3, False, True, "ottt_a")
    assert _latest(model) is not first
    _same(got, want, 1e-10)


@needs_compiled_cpu
def test_graph_batch1_benchmark_logic_on_cpu(eager_graph, tmp_path):
    # benchmarks/graph_batch1.py as the GPU suite runs it, on the CPU with the capture lifted: the
    # correctness gate passes, every method is timed each round, x eager is the ratio of the medians.
    import importlib.util
    import json
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "graph_batch1.py")
    spec = importlib.util.spec_from_file_location("graph_batch1", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "g.json"
    assert mod.main(["--device", "cpu", "--models", "mlp784", "r400", "--batches", "1", "--rounds", "2",
                     "--target-s", "0.01", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [(c["model"], c["passed"]) for c in res["checks"]] == [("mlp784", True), ("r400", True)]
    assert all(max(c["max_rel_diffs"].values()) <= 1e-4 for c in res["checks"])
    for model in ("mlp784", "r400"):
        rows = {r["method"]: r for r in res["rows"] if r["model"] == model}
        assert {"ottt_a eager", "ottt_a cuda_graph"} <= set(rows)
        for r in rows.values():
            assert len(r["rounds"]) == 2 and r["s_per_call"] == __import__("statistics").median(r["rounds"])
            assert abs(r["x_eager"] - rows["ottt_a eager"]["s_per_call"] / r["s_per_call"]) < 1e-12
    diffs, ok = mod.check(torch.device("cpu"), 1, "vgg11_ws")  # VGG-11's gate (timing it here would be slow)
    assert ok and len(diffs) > 10


@needs_compiled_cpu
def test_graph_batch1_gate_stops_on_a_disagreement(eager_graph, monkeypatch, capsys):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "graph_batch1.py")
    spec = importlib.util.spec_from_file_location("graph_batch1", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(_graph.StaticStep, "settle", lambda self: None)  # the sWS weight's gradient lost
    assert mod.main(["--device", "cpu", "--models", "r400", "--batches", "1", "--rounds", "1"]) == 1
    assert "graph and eager disagree for r400 at batch 1" in capsys.readouterr().out
