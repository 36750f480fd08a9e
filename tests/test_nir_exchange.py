"""from_nir / to_nir (docs/nir.md): snnTorch's exported graphs run the same in ottt_cuda, the round trips
ottt_cuda -> NIR -> ottt_cuda and ottt_cuda -> NIR -> snnTorch compute the same, an imported model trains
with the gradients of the same model built by hand, and every construct without an exact counterpart is
refused with an error naming it."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

nir = pytest.importorskip("nir", reason="from_nir/to_nir need the NIR library: pip install nir nirtorch")

import ottt_cuda  # noqa: E402
from ottt_cuda import nn as onn  # noqa: E402
from ottt_cuda.convert import IF_TAU  # noqa: E402 (convert()'s IF: an LIF whose leak is 0 in float64)
from ottt_cuda.nir_exchange import NIRConversionError  # noqa: E402

DT = 1e-4  # snnTorch's export/import time step
T = 12


def _snn():
    return pytest.importorskip("snntorch", reason="the snnTorch exchange tests need snntorch")


def _leaky(snn, shape, beta):
    # per-neuron arrays: snnTorch's export of a scalar beta gives NIR shape () that nir's type check refuses.
    # reset_mechanism="zero" is the reset the exported NIR node states (v_reset = 0); reset_delay=False applies
    # it in the same step, so snnTorch's stored membrane is ottt_cuda's LIF.v
    return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape), init_hidden=True,
                     reset_mechanism="zero", reset_delay=False)


def _run(net, x_seq, membranes):
    """net's outputs over x_seq, and after each step a copy of the membranes that `membranes()` returns."""
    outs, mems = [], []
    with torch.no_grad():
        for x in x_seq:
            outs.append(net(x))
            mems.append([v.clone() for v in membranes()])
    return torch.stack(outs), mems


def _run_stateful(net, x_seq):
    """The outputs over x_seq of a graph module called as net(x, state) -> (y, state) (nirtorch's, and the
    importers built on it)."""
    outs, state = [], None
    with torch.no_grad():
        for x in x_seq:
            y, state = net(x, state)
            outs.append(y)
    return torch.stack(outs)


def _run_snn(net, leakies, x_seq):
    from snntorch import utils
    utils.reset(net)
    return _run(net, x_seq, lambda: [lk.mem for lk in leakies])


def _run_ottt(model, x_seq):
    ottt_cuda.reset(model)
    lifs = [m for m in model.modules() if isinstance(m, onn.LIF)]
    return _run(model, x_seq, lambda: [lif.v for lif in lifs])


def _linear_net(snn):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 30), _leaky(snn, (30,), 0.8), nn.Linear(30, 5), _leaky(snn, (5,), 0.9))


def _conv_net(snn):
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), _leaky(snn, (4, 6, 6), 0.8), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(36, 5), _leaky(snn, (5,), 0.9))


def _export(snn, net, sample):
    from snntorch.export_nir import export_to_nir
    return export_to_nir(net, sample, ignore_dims=[0])


def _assert_same(a_out, a_mem, b_out, b_mem, atol=1e-5):
    assert a_out.abs().sum() > 0, "nothing fired: the comparison would be empty"
    assert torch.equal(a_out, b_out.to(a_out.dtype))
    for ma, mb in zip(a_mem, b_mem):
        for x, y in zip(ma, mb):
            torch.testing.assert_close(x, y.to(x.dtype), atol=atol, rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_snntorch_export_runs_the_same_in_ottt_cuda(kind):
    snn = _snn()
    net = _linear_net(snn) if kind == "linear" else _conv_net(snn)
    shape = (20,) if kind == "linear" else (2, 6, 6)
    graph = _export(snn, net, torch.randn(1, *shape))
    model = ottt_cuda.from_nir(graph, dt=DT)
    lifs = [m for m in model if isinstance(m, onn.LIF)]
    assert [lif.v_reset for lif in lifs] == [0.0, 0.0] and not any(lif.decay_input for lif in lifs)
    torch.testing.assert_close([lif.decay for lif in lifs], [0.8, 0.9], rtol=1e-6, atol=0)
    # the trace decays follow the neuron after each synapse; the first synapse is untraced (as convert())
    syn = [m for m in model if isinstance(m, (onn.Linear, onn.Conv2d))]
    assert not syn[0].trace and syn[1].trace
    assert syn[0].trace_decay == lifs[0].decay and syn[1].trace_decay == lifs[1].decay
    torch.manual_seed(2)
    x_seq = torch.rand(T, 3, *shape) * 2.0
    leakies = [m for m in net if isinstance(m, snn.Leaky)]
    s_out, s_mem = _run_snn(net, leakies, x_seq)
    o_out, o_mem = _run_ottt(model, x_seq)
    _assert_same(o_out, o_mem, s_out, s_mem)


def test_from_nir_reads_a_nir_file(tmp_path):
    snn = _snn()
    graph = _export(snn, _linear_net(snn), torch.randn(1, 20))
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    a, b = ottt_cuda.from_nir(graph, dt=DT), ottt_cuda.from_nir(str(path), dt=DT)
    x_seq = torch.rand(T, 3, 20) * 2
    assert torch.equal(_run_ottt(a, x_seq)[0], _run_ottt(b, x_seq)[0])


def _hand_model(dtype=torch.float64, v_reset=0.0, decay_input=False):
    torch.manual_seed(3)
    return nn.Sequential(
        onn.Conv2d(2, 4, 3, padding=1, trace=False, trace_decay=0.75, dtype=dtype),
        onn.LIF(tau=4.0, v_th=0.7, v_reset=v_reset, decay_input=decay_input), onn.Scale(1.5),
        nn.AvgPool2d(2), nn.Flatten(),
        onn.Linear(36, 8, trace_decay=0.5, dtype=dtype), onn.LIF(tau=2.0, v_th=1.0, v_reset=v_reset),
        onn.Linear(8, 3, trace_decay=0.5, dtype=dtype))


@pytest.mark.parametrize("decay_input", [False, True])
def test_round_trip_ottt_nir_ottt_is_identical(tmp_path, decay_input):
    model = _hand_model(decay_input=decay_input)
    path = tmp_path / "m.nir"
    nir.write(path, ottt_cuda.to_nir(model, dt=DT, input_shape=(2, 6, 6)))
    back = ottt_cuda.from_nir(path, dt=DT, dtype=torch.float64)
    assert [type(m) for m in back] == [type(m) for m in model]
    for a, b in zip(model, back):
        if isinstance(a, onn.LIF):
            assert (a.tau, a.v_th, a.v_reset, a.decay_input) == pytest.approx((b.tau, b.v_th, b.v_reset, b.decay_input),
                                                                              rel=1e-12)
        if isinstance(a, (onn.Linear, onn.Conv2d)):
            assert torch.equal(a.weight, b.weight) and (a.trace, a.trace_decay) == (b.trace, b.trace_decay)
    x_seq = torch.rand(T, 3, 2, 6, 6, dtype=torch.float64) * 2
    a_out, a_mem = _run_ottt(model, x_seq)
    b_out, b_mem = _run_ottt(back, x_seq)
    assert a_out.abs().sum() > 0
    torch.testing.assert_close(a_out, b_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a_mem, b_mem, rtol=1e-12, atol=1e-12)


def _ottt_linear(dtype=torch.float32):
    torch.manual_seed(4)
    return nn.Sequential(onn.Linear(10, 16, trace=False, trace_decay=0.75, dtype=dtype),
                         onn.LIF(tau=4.0, v_reset=0.0), onn.Linear(16, 6, trace_decay=0.5, dtype=dtype),
                         onn.LIF(tau=2.0, v_th=0.5, v_reset=0.0))


def test_ottt_to_nir_to_snntorch_computes_the_same():
    _snn()
    from snntorch.import_nir import import_from_nir
    model = _ottt_linear()
    net = import_from_nir(ottt_cuda.to_nir(model, dt=DT, input_shape=(10,)))
    leakies = [m for m in net.modules() if type(m).__name__ == "Leaky"]
    assert len(leakies) == 2
    x_seq = torch.rand(T, 3, 10) * 2
    outs, mems = [], []
    with torch.no_grad():
        for x in x_seq:
            outs.append(net(x)[0])
            mems.append([lk.mem.clone() for lk in leakies])
    o_out, o_mem = _run_ottt(model, x_seq)
    _assert_same(o_out, o_mem, torch.stack(outs), mems)


def test_ottt_conv_to_nir_to_snntorch_computes_the_same():
    _snn()
    from snntorch.import_nir import import_from_nir
    model = _hand_model(torch.float32)
    model[2] = nn.Identity()  # snnTorch's import has no Scale
    net = import_from_nir(ottt_cuda.to_nir(model, dt=DT, input_shape=(2, 6, 6)))
    leakies = [m for m in net.modules() if type(m).__name__ == "Leaky"]
    x_seq = torch.rand(T, 1, 2, 6, 6) * 2
    outs = []
    with torch.no_grad():
        for x in x_seq:  # snnTorch's importer reads NIR's (batch-free) Flatten dims as torch's: unbatched input
            outs.append(net(x[0])[0].unsqueeze(0))
    assert len(leakies) == 2
    o_out, _ = _run_ottt(model, x_seq)
    assert torch.equal(o_out, torch.stack(outs))
    assert o_out.abs().sum() > 0


def _trainable(kind):
    """(model, one sample's shape): the conv chain with either reset, or a recurrent layer and a readout, built as
    from_nir builds them (the first synapse untraced, each trace decaying with the neuron after it)."""
    if kind != "recurrent":
        return _hand_model(v_reset=0.0 if kind == "hard_reset" else None), (2, 6, 6)
    torch.manual_seed(13)
    return nn.Sequential(onn.RecurrentLIF(10, 8, input_trace=False, tau=2.0, v_th=0.5),
                         onn.Linear(8, 3, trace_decay=0.5)).double(), (10,)


@pytest.mark.parametrize("kind", ["hard_reset", "soft_reset", "recurrent"])
@pytest.mark.parametrize("mode", ["ottt_a", "bptt"])
def test_imported_model_trains_with_the_gradients_of_the_hand_built_one(mode, kind):
    hand, shape = _trainable(kind)
    imported = ottt_cuda.from_nir(ottt_cuda.to_nir(hand, dt=DT, input_shape=shape), dt=DT, dtype=torch.float64)
    synapses = lambda m: [s for s in m.modules() if isinstance(s, (onn.Linear, onn.Conv2d))]  # noqa: E731
    assert [(a.trace, a.trace_decay) for a in synapses(hand)] == [(b.trace, b.trace_decay) for b in synapses(imported)]
    torch.manual_seed(5)
    x = torch.rand(4, *shape, dtype=torch.float64) * 2
    y = torch.tensor([0, 1, 2, 1])
    grads = []
    for m in (hand, imported):
        m.zero_grad(set_to_none=True)
        loss, out = ottt_cuda.train_step(m, x, y, None, T=6, mode=mode)
        grads.append(([p.grad for n, p in m.named_parameters() if p.grad is not None], loss, out))
    (ga, la, oa), (gb, lb, ob) = grads
    assert len(ga) == len(gb) >= 4 and any(g.abs().sum() > 0 for g in ga)
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(oa, ob, rtol=1e-12, atol=1e-12)
    weights_a = [p.grad for n, p in hand.named_parameters()]
    weights_b = [p.grad for n, p in imported.named_parameters()]
    torch.testing.assert_close(weights_a, weights_b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["ottt_o", "sltt"])
def test_imported_model_runs_under_the_other_modes(mode):
    snn = _snn()
    model = ottt_cuda.from_nir(_export(snn, _conv_net(snn), torch.randn(1, 2, 6, 6)), dt=DT)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss, _ = ottt_cuda.train_step(model, torch.rand(4, 2, 6, 6) * 2, torch.tensor([0, 1, 2, 3]), opt, T=4,
                                   mode=mode)
    assert torch.isfinite(loss)


def test_to_nir_exports_a_trained_ws_vgg_with_standardized_weights():
    from ottt_cuda.models.vgg import VGGWS
    torch.manual_seed(6)
    model = VGGWS([8, "A", 8], num_classes=4, in_channels=2, neuron_kwargs=dict(v_reset=0.0)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ottt_cuda.train_step(model, torch.rand(4, 2, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3]), opt, T=3)
    graph = ottt_cuda.to_nir(model, dt=DT, input_shape=(2, 8, 8))
    conv = graph.nodes["features_0"]
    w_hat = model.features[0].standardized_without_graph()[0]
    assert np.array_equal(conv.weight, w_hat.detach().numpy())
    assert not np.allclose(conv.weight, model.features[0].weight.detach().numpy())
    assert isinstance(graph.nodes["classifier_0"], nir.AvgPool2d)  # the adaptive pool of a 4x4 map to 1x1
    back = ottt_cuda.from_nir(graph, dt=DT, dtype=torch.float64)
    model.eval()
    x_seq = torch.rand(T, 2, 2, 8, 8, dtype=torch.float64) * 3
    a, _ = _run_ottt(model, x_seq)
    b, _ = _run_ottt(back, x_seq)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_to_nir_exports_a_converted_snntorch_model():
    snn = _snn()
    net = nn.Sequential(nn.Linear(10, 12), snn.Leaky(beta=0.75, init_hidden=True, reset_mechanism="zero"),
                        nn.Linear(12, 3))
    model = ottt_cuda.convert(net)
    back = ottt_cuda.from_nir(ottt_cuda.to_nir(model, dt=DT, input_shape=(10,)), dt=DT)
    x_seq = torch.rand(T, 3, 10) * 2
    torch.testing.assert_close(_run_ottt(model, x_seq)[0], _run_ottt(back, x_seq)[0], rtol=1e-6, atol=1e-6)


# ------------------------------------------------- the subtractive reset and recurrence, through NIR's own nodes
class _EulerLI(nn.Module):
    """NIR's LI, tau du/dt = (v_leak - u) + r I, one forward-Euler step of dt per call (nirtorch's state)."""

    def __init__(self, node, dt):
        super().__init__()
        self.tau, self.r, self.v_leak, self.dt = (torch.as_tensor(np.asarray(v), dtype=torch.float64)
                                                  for v in (node.tau, node.r, node.v_leak, dt))

    def forward(self, x, state=None):
        u = torch.zeros_like(x) if state is None else state
        u = u + self.dt / self.tau * (self.v_leak - u + self.r * x)
        return u, u


class _EulerI(nn.Module):
    """NIR's I, du/dt = r I."""

    def __init__(self, node, dt):
        super().__init__()
        self.r, self.dt = torch.as_tensor(np.asarray(node.r), dtype=torch.float64), dt

    def forward(self, x, state=None):
        u = (torch.zeros_like(x) if state is None else state) + self.dt * self.r * x
        return u, u


class _Map(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _nirtorch_executor(graph, dt):
    """The graph run by nirtorch's interpreter (which feeds a cycle's edge one step late) with NIR's node
    definitions written out here: an executor that shares no code with ottt_cuda."""
    nirtorch = pytest.importorskip("nirtorch", reason="the executor check needs nirtorch")
    f64 = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float64)  # noqa: E731

    def affine(n):
        w, b = f64(n.weight), f64(n.bias) if isinstance(n, nir.Affine) else 0.0
        return _Map(lambda x: x @ w.T + b)

    node_map = {nir.LI: lambda n: _EulerLI(n, dt), nir.I: lambda n: _EulerI(n, dt), nir.Affine: affine,
                nir.Linear: affine, nir.Threshold: lambda n: _Map(lambda x: (x > f64(n.threshold)).to(x.dtype)),
                nir.Scale: lambda n: _Map(lambda x: x * f64(n.scale)),
                nir.Flatten: lambda n: nn.Flatten(n.start_dim + 1, n.end_dim + 1 if n.end_dim >= 0 else n.end_dim)}
    return nirtorch.nir_to_torch(graph, node_map, dtype=torch.float64)


def _soft_chain(v_reset=None):
    torch.manual_seed(8)
    return nn.Sequential(onn.Linear(8, 12, trace=False, dtype=torch.float64),
                         onn.LIF(tau=3.0, v_th=0.8, v_reset=v_reset, decay_input=True),
                         onn.Linear(12, 10, dtype=torch.float64), onn.LIF(tau=IF_TAU, v_th=1.5, v_reset=v_reset),
                         onn.Linear(10, 4, dtype=torch.float64), onn.LIF(tau=2.0, v_th=0.2, v_reset=v_reset),
                         onn.Linear(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["soft_chain", "r400"])
def test_soft_reset_and_recurrence_run_the_same_on_an_independent_nir_executor(kind):
    if kind == "soft_chain":
        model, shape = _soft_chain(), (8,)
    else:
        torch.manual_seed(9)
        model, shape = ottt_cuda.models.r400(in_features=20, hidden=30).double(), (20,)
    model.eval()
    graph = ottt_cuda.to_nir(model, dt=1e-3, input_shape=shape)
    subgraphs = [n for n in graph.nodes.values() if isinstance(n, nir.NIRGraph)]
    assert subgraphs and all(any(isinstance(m, nir.Threshold) for m in g.nodes.values()) for g in subgraphs)
    executor = _nirtorch_executor(graph, 1e-3)
    x_seq = torch.rand(T, 3, *shape, dtype=torch.float64) * 3
    ours, _ = _run_ottt(model, x_seq)
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, _run_stateful(executor, x_seq), rtol=1e-12, atol=1e-12)
    if kind == "soft_chain":  # the reset to 0 computes something else on the same input: the check can fail
        assert not torch.allclose(_run_ottt(_soft_chain(v_reset=0.0), x_seq)[0], ours)


@pytest.mark.parametrize("peer", ["snntorch", "spikingjelly"])
def test_the_peers_importers_refuse_the_soft_reset_subgraph_rather_than_misread_it(peer):
    graph = ottt_cuda.to_nir(_soft_chain(), dt=DT, input_shape=(8,))
    if peer == "snntorch":
        _snn()
        from snntorch.import_nir import import_from_nir
        read = import_from_nir
    else:
        read = lambda g: _sj().import_from_nir(g, dt=DT)  # noqa: E731
    with pytest.raises(ValueError, match="LI"):
        read(graph)


def _spike_counts(model, x_seq):
    counts = []
    hooks = [m.register_forward_hook(lambda m, i, o: counts.append(float(o.sum()))) for m in model.modules()
             if isinstance(m, (onn.LIF, onn.RecurrentLIF))]
    out, _ = _run_ottt(model, x_seq)
    for h in hooks:
        h.remove()
    return out, sum(counts)


@pytest.mark.parametrize("name", ["vgg11_ws", "r400"])
def test_the_paper_models_export_and_come_back_the_same(tmp_path, name):
    torch.manual_seed(10)
    model = getattr(ottt_cuda.models, name)().double().eval()
    shape = (3, 32, 32) if name == "vgg11_ws" else (1, 28, 28)
    nir.write(tmp_path / "m.nir", ottt_cuda.to_nir(model, dt=DT, input_shape=shape))
    back = ottt_cuda.from_nir(tmp_path / "m.nir", dt=DT, dtype=torch.float64).eval()
    ours = [m for m in model.modules() if isinstance(m, onn.LIF)]
    theirs = [m for m in back.modules() if isinstance(m, onn.LIF)]
    assert len(ours) == len(theirs) and all(m.v_reset is None for m in theirs)
    assert [(m.tau, m.v_th, m.decay_input) for m in ours] == [(m.tau, m.v_th, m.decay_input) for m in theirs]
    assert any(isinstance(m, onn.RecurrentLIF) for m in back.modules()) == (name == "r400")
    x_seq = torch.rand(4, 2, *shape, dtype=torch.float64) * 4
    a, fired = _spike_counts(model, x_seq)
    b, _ = _spike_counts(back, x_seq)
    assert fired > 0
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _rleaky_net(snn):
    torch.manual_seed(11)
    return nn.Sequential(nn.Linear(5, 6), snn.RLeaky(beta=torch.full((6,), 0.8), threshold=torch.ones(6),
                                                     linear_features=6, init_hidden=True, reset_mechanism="zero",
                                                     reset_delay=False), nn.Linear(6, 3))


def test_snntorch_rleaky_export_runs_the_same_in_ottt_cuda():
    snn = _snn()
    from snntorch import utils
    net = _rleaky_net(snn)
    graph = _export(snn, net, torch.rand(1, 5))
    assert not any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values())  # snnTorch writes the cycle flat
    model = ottt_cuda.from_nir(graph, dt=DT)
    assert isinstance(model[0], onn.RecurrentLIF) and model[0].neuron.v_reset == 0.0
    x_seq = torch.rand(T, 2, 5) * 2
    utils.reset(net)
    with torch.no_grad():
        theirs = torch.stack([net(x) for x in x_seq])
    ours, _ = _run_ottt(model, x_seq)
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_ottt_recurrent_to_nir_to_snntorch_computes_the_same():
    _snn()
    from snntorch.import_nir import import_from_nir
    torch.manual_seed(12)
    model = nn.Sequential(onn.RecurrentLIF(5, 7, input_trace=False, tau=4.0, v_th=0.6, v_reset=0.0),
                          onn.Linear(7, 3, trace_decay=0.75))
    net = import_from_nir(ottt_cuda.to_nir(model, dt=DT, input_shape=(5,)))
    x_seq = torch.rand(T, 2, 5) * 2
    ours, _ = _run_ottt(model, x_seq)
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, _run_stateful(net, x_seq), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- what is refused, one test each
def _arr(v, n=4):
    return np.full((n,), v, dtype=np.float64)


def _chain(*nodes, n=4):
    names = ["input"] + [f"n{i}" for i in range(len(nodes))] + ["output"]
    all_nodes = dict(zip(names, [nir.Input(input_type=np.array([n])), *nodes, nir.Output(output_type=np.array([n]))]))
    return nir.NIRGraph(nodes=all_nodes, edges=list(zip(names[:-1], names[1:])), type_check=False)


def _lif(tau=DT * 2, r=2.0, v_leak=0.0, v_th=1.0, v_reset=0.0):
    return nir.LIF(tau=_arr(tau), r=_arr(r), v_leak=_arr(v_leak), v_threshold=_arr(v_th), v_reset=_arr(v_reset))


def _aff():
    return nir.Affine(weight=np.eye(4), bias=np.zeros(4))


REFUSED = {
    "LI": (lambda: nir.LI(tau=_arr(DT * 2), r=_arr(2.0), v_leak=_arr(0.0)), "non-spiking leaky integrator"),
    "CubaLIF_tau_syn": (lambda: nir.CubaLIF(tau_syn=_arr(DT * 3), tau_mem=_arr(DT * 2), r=_arr(2.0), v_leak=_arr(0.0),
                                            v_threshold=_arr(1.0), w_in=3.0), "second state"),
    "CubaLIF_w_in": (lambda: nir.CubaLIF(tau_syn=_arr(DT), tau_mem=_arr(DT * 2), r=_arr(2.0), v_leak=_arr(0.0),
                                         v_threshold=_arr(1.0), w_in=2.0), "w_in = 2.0"),
    "LIF_input_coefficient": (lambda: _lif(r=3.0), "input enters as"),
    "LIF_v_leak": (lambda: _lif(v_leak=0.5), "v_leak = 0.5 differs from v_reset"),
    "LIF_per_neuron": (lambda: nir.LIF(tau=np.array([2e-4, 3e-4, 2e-4, 2e-4]), r=_arr(2.0), v_leak=_arr(0.0),
                                       v_threshold=_arr(1.0), v_reset=_arr(0.0)), "differs between neurons"),
    "LIF_tau_below_dt": (lambda: _lif(tau=DT / 2, r=0.5), "below the time step"),
    "IF_r": (lambda: nir.IF(r=_arr(2.0), v_threshold=_arr(1.0)), "dt*r"),
    "Threshold": (lambda: nir.Threshold(threshold=_arr(1.0)), "bare threshold"),
    "Delay": (lambda: nir.Delay(delay=_arr(1.0)), "delay"),
    "I": (lambda: nir.I(r=_arr(1.0)), "non-spiking integrator"),
    "Scale_per_element": (lambda: nir.Scale(scale=np.array([1.0, 2.0, 1.0, 1.0])), "differs between neurons"),
    "Conv1d": (lambda: nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 1)), stride=1, padding=0, dilation=1,
                                  groups=1, bias=np.zeros(1)), "1-d convolution"),
    "AvgPool2d_padding": (lambda: nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                                padding=np.array([1, 1])), "padding"),
}


@pytest.mark.parametrize("construct", sorted(REFUSED))
def test_from_nir_refuses_inexact_nodes(construct):
    make, why = REFUSED[construct]
    node = make()
    with pytest.raises(NIRConversionError) as e:
        ottt_cuda.from_nir(_chain(_aff(), node), dt=DT)
    msg = str(e.value)
    assert "'n1'" in msg and type(node).__name__ in msg and why in msg, msg


def test_from_nir_refuses_a_branch():
    nodes = {"input": nir.Input(input_type=np.array([4])), "a": _aff(), "b": _aff(), "c": _lif(),
             "output": nir.Output(output_type=np.array([4]))}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "a"), ("a", "b"), ("a", "c"), ("b", "output"), ("c", "output")],
                     type_check=False)
    with pytest.raises(NIRConversionError, match=r"'a' \(Affine\): has 2 outputs .* only chains"):
        ottt_cuda.from_nir(g, dt=DT)


def test_from_nir_refuses_a_cycle_with_two_ways_in():
    nodes = {"input": nir.Input(input_type=np.array([4])), "a": _aff(), "b": _aff(), "lif": _lif(), "rec": _aff(),
             "output": nir.Output(output_type=np.array([4]))}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "a"), ("a", "lif"), ("a", "rec"), ("lif", "rec"), ("rec", "lif"),
                                         ("lif", "output")], type_check=False)
    with pytest.raises(NIRConversionError, match=r"'a' \(Affine\): has 2 outputs .* only chains"):
        ottt_cuda.from_nir(g, dt=DT)


def _sub(nodes, edges, n=4):
    nodes = {"input": nir.Input(input_type=np.array([n])), **nodes, "output": nir.Output(output_type=np.array([n]))}
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _soft(reset=-0.5, v_leak=0.0, r=2.0, extra=(), rec=None):
    """The soft-reset neuron subgraph to_nir writes for LIF(tau=2, v_th=1, v_reset=None): LI -> Threshold -> Scale
    (-(1 - 1/2) * 1 = -0.5) -> back."""
    nodes = {"li": nir.LI(tau=_arr(DT * 2), r=_arr(r), v_leak=_arr(v_leak)), "thr": nir.Threshold(threshold=_arr(1.0)),
             "fb": nir.Scale(scale=_arr(reset))}
    edges = [("input", "li"), ("li", "thr"), ("thr", "fb"), ("fb", "li"), ("thr", "output"), *extra]
    if rec is not None:
        nodes["w"] = rec
        edges += [("thr", "w"), ("w", "li")]
    return _sub(nodes, edges)


SUBGRAPHS_REFUSED = {
    "not_a_neuron": (lambda: _sub({"a": _aff()}, [("input", "a"), ("a", "output")]), "is not a neuron subgraph"),
    "foreign_node": (lambda: _sub({"d": nir.Delay(delay=_arr(1.0))}, [("input", "d"), ("d", "output")]),
                     "holds 'd' (Delay)"),
    "reset_scale": (lambda: _soft(reset=-1.0), "reset Scale is -1.0"),
    "li_v_leak": (lambda: _soft(v_leak=0.25), "v_leak = 0.25"),
    "li_input_coefficient": (lambda: _soft(r=3.0), "input as (dt*r/tau)"),
    "edges": (lambda: _soft(extra=[("li", "output")]), "that neuron subgraph is exactly"),
    "two_recurrences": (lambda: _sub({"lif": _lif(), "w1": _aff(), "w2": _aff()},
                                     [("input", "lif"), ("lif", "w1"), ("w1", "lif"), ("lif", "w2"), ("w2", "lif"),
                                      ("lif", "output")]), "2 Affine/Linear nodes"),
    "recurrent_weight_shape": (lambda: _soft(rec=nir.Linear(weight=np.ones((4, 3)))), "must be [4, 4]"),
}


@pytest.mark.parametrize("construct", sorted(SUBGRAPHS_REFUSED))
def test_from_nir_refuses_a_subgraph_that_is_not_an_exact_neuron_layer(construct):
    make, why = SUBGRAPHS_REFUSED[construct]
    with pytest.raises(NIRConversionError) as e:
        ottt_cuda.from_nir(_chain(_aff(), make()), dt=DT)
    msg = str(e.value)
    assert "'n1' (NIRGraph)" in msg and why in msg, msg


def test_from_nir_refuses_a_recurrence_without_an_input_synapse():
    with pytest.raises(NIRConversionError, match=r"'n1' \(NIRGraph\): is a recurrent layer that does not follow an "
                                                 r"Affine / Linear"):
        ottt_cuda.from_nir(_chain(nir.Scale(scale=_arr(2.0)), _soft(rec=nir.Linear(weight=np.eye(4)))), dt=DT)


def test_from_nir_refuses_a_bad_dt():
    with pytest.raises(ValueError, match="dt must be"):
        ottt_cuda.from_nir(_chain(_aff()), dt=0)


def test_to_nir_refuses_max_pooling():
    model = nn.Sequential(onn.Conv2d(1, 2, 3), onn.LIF(v_reset=0.0), nn.MaxPool2d(2))
    with pytest.raises(NIRConversionError, match=r"'2' \(MaxPool2d\) has no exact NIR node"):
        ottt_cuda.to_nir(model, dt=DT, input_shape=(1, 6, 6))


def test_to_nir_refuses_a_model_that_is_not_a_chain():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = onn.Linear(4, 4), onn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) + self.b(x)

    with pytest.raises(NIRConversionError, match="Branchy is not a chain"):
        ottt_cuda.to_nir(Branchy(), dt=DT, input_shape=(4,))


def test_import_ottt_cuda_does_not_need_nir():
    code = ("import sys; sys.modules['nir'] = None\n"
            "import ottt_cuda\n"
            "try:\n    ottt_cuda.from_nir('x.nir', dt=1e-4)\n"
            "except ImportError as e:\n    assert 'pip install nir' in str(e), e\n    print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------- SpikingJelly 2.0's NIR exchange
def _sj():
    pytest.importorskip("spikingjelly", reason="the SpikingJelly exchange tests need spikingjelly")
    try:
        from spikingjelly.activation_based import nir_exchange
    except ImportError:
        pytest.skip("this SpikingJelly has no NIR exchange (spikingjelly.activation_based.nir_exchange, 2.0)")
    return nir_exchange


@pytest.mark.parametrize("decay_input", [False, True])
def test_spikingjelly_export_runs_the_same_in_ottt_cuda(decay_input):
    nir_exchange = _sj()
    from spikingjelly.activation_based import functional, layer, neuron
    torch.manual_seed(7)
    net = nn.Sequential(layer.Linear(20, 30), neuron.LIFNode(tau=2.0, v_reset=0.0, decay_input=decay_input),
                        layer.Linear(30, 5), neuron.LIFNode(tau=4.0, v_reset=0.0, v_threshold=0.5,
                                                            decay_input=decay_input)).double()
    with torch.no_grad():  # enough current for the output layer to fire
        net[2].weight.mul_(3.0 if decay_input else 1.0).add_(0.1)
    graph = nir_exchange.export_to_nir(net, torch.rand(3, 20, dtype=torch.float64), dt=DT)
    model = ottt_cuda.from_nir(graph, dt=DT, dtype=torch.float64)
    assert all(m.decay_input == decay_input for m in model if isinstance(m, onn.LIF))
    x_seq = torch.rand(T, 3, 20, dtype=torch.float64) * (4 if decay_input else 2)
    functional.reset_net(net)
    outs, mems = [], []
    with torch.no_grad():
        for x in x_seq:
            outs.append(net(x))
            mems.append([net[1].v.clone(), net[3].v.clone()])
    o_out, o_mem = _run_ottt(model, x_seq)
    _assert_same(o_out, o_mem, torch.stack(outs), mems, atol=1e-10)


def test_ottt_to_nir_to_spikingjelly_computes_the_same():
    nir_exchange = _sj()
    model = _hand_model()
    model[2] = nn.Identity()  # SpikingJelly's import has no Scale
    gm = nir_exchange.import_from_nir(ottt_cuda.to_nir(model, dt=DT, input_shape=(2, 6, 6)), dt=DT,
                                      dtype=torch.float64)
    x_seq = torch.rand(T, 3, 2, 6, 6, dtype=torch.float64) * 2
    o_out, _ = _run_ottt(model, x_seq)
    assert o_out.abs().sum() > 0
    torch.testing.assert_close(o_out, _run_stateful(gm, x_seq), rtol=1e-10, atol=1e-10)
