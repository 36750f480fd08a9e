"""from_nir: a NIR graph -> an nn.Sequential of ottt_cuda layers (the conventions: the package docstring)."""
import os

import numpy as np
import torch
import torch.nn as nn

from .. import nn as onn
from ..convert import IF_TAU, ottt_synapse, synapse_trace_decay
from .common import NIRConversionError, check_dt, close, fail, nir_module, scalar


def _lif_from(name, node, tau, r, v_leak, v_th, v_reset, dt, kw):
    if tau < dt and not close(tau, dt):
        fail(name, node, f"tau = {tau} is below the time step dt = {dt}: the Euler leak 1 - dt/tau would be negative")
    coeff = dt * r / tau
    if close(coeff, 1.0):
        decay_input = False
    elif close(r, 1.0):
        decay_input = True
    else:
        fail(name, node, f"the input enters as (dt*r/tau) * I = {coeff} * I; ottt_cuda's LIF takes it with 1 "
                          "(r = tau/dt) or 1/tau' (r = 1, decay_input=True)")
    if not close(v_leak, v_reset) and not (v_leak == 0.0 == v_reset):
        fail(name, node, f"v_leak = {v_leak} differs from v_reset = {v_reset}; ottt_cuda's hard-reset LIF leaks "
                          "towards v_reset")
    tau_o = 1.0 if close(tau, dt) else tau / dt
    return onn.LIF(tau=tau_o, v_th=v_th, v_reset=v_reset, decay_input=decay_input, **kw)


def _neuron(name, node, nir, dt, kw):
    s = lambda field: scalar(name, node, field, getattr(node, field))  # noqa: E731
    if isinstance(node, nir.LIF):
        return _lif_from(name, node, s("tau"), s("r"), s("v_leak"), s("v_threshold"), s("v_reset"), dt, kw)
    if isinstance(node, nir.CubaLIF):
        tau_syn, w_in = s("tau_syn"), s("w_in")
        if not close(tau_syn, dt):
            fail(name, node, f"tau_syn = {tau_syn} != dt = {dt}: the synaptic current decays by 1 - dt/tau_syn = "
                              f"{1 - dt / tau_syn} per step, a second state ottt_cuda's LIF does not have")
        if not close(w_in, 1.0):
            fail(name, node, f"w_in = {w_in} != 1: with tau_syn = dt the current is w_in * S, which ottt_cuda's LIF "
                              "takes only with w_in = 1 (scale the weights before)")
        return _lif_from(name, node, s("tau_mem"), s("r"), s("v_leak"), s("v_threshold"), s("v_reset"), dt, kw)
    if isinstance(node, nir.IF):
        r = s("r")
        if not close(dt * r, 1.0):
            fail(name, node, f"the input enters as dt*r * I = {dt * r} * I; ottt_cuda's IF (an LIF without leak) "
                              "takes it with 1 (r = 1/dt)")
        return onn.LIF(tau=IF_TAU, v_th=s("v_threshold"), v_reset=s("v_reset"), decay_input=False, **kw)
    return None


_WHY_NOT = {
    "LI": "a non-spiking leaky integrator (its output is the membrane); ottt_cuda's neurons emit spikes",
    "CubaLI": "a non-spiking current-based integrator; ottt_cuda's neurons emit spikes",
    "I": "a non-spiking integrator; ottt_cuda's neurons emit spikes",
    "Threshold": "a bare threshold without a membrane; ottt_cuda's neurons integrate",
    "Delay": "a delay line; ottt_cuda has no delay layer",
    "Conv1d": "a 1-d convolution; ottt_cuda has Conv2d only",
}


def _soft_neuron(name, graph, integ, thr, fb, dt, kw):
    """The LIF with the subtractive reset that an LI (or I) -> Threshold -> Scale -> back subgraph computes, read
    with the feedback one step late (the delay every discrete NIR executor gives a cycle): u[t] = lam u[t-1] +
    k (I[t] + c s[t-1]) is ottt_cuda's h[t] = lam (h[t-1] - v_th s[t-1]) + k I[t] exactly when c = -lam v_th / k."""
    nir = nir_module()
    s = lambda node, field: scalar(name, graph, field, getattr(node, field))  # noqa: E731
    theta = s(thr, "threshold")
    if isinstance(integ, nir.I):
        if not close(dt * s(integ, "r"), 1.0):
            fail(name, graph, f"its I node takes the input as dt*r * I = {dt * s(integ, 'r')} * I; ottt_cuda's IF "
                               "takes it with 1 (r = 1/dt)")
        tau_o, decay_input, lam, k = IF_TAU, False, 1.0, 1.0
    else:
        tau, r, v_leak = s(integ, "tau"), s(integ, "r"), s(integ, "v_leak")
        if tau < dt and not close(tau, dt):
            fail(name, graph, f"its LI node has tau = {tau} below the time step dt = {dt}")
        if v_leak != 0.0:
            fail(name, graph, f"its LI node has v_leak = {v_leak}; the subtractive reset's membrane leaks towards 0")
        tau_o = 1.0 if close(tau, dt) else tau / dt
        if close(dt * r / tau, 1.0):
            decay_input, k = False, 1.0
        elif close(r, 1.0):
            decay_input, k = True, 1.0 / tau_o
        else:
            fail(name, graph, f"its LI node takes the input as (dt*r/tau) * I = {dt * r / tau} * I; ottt_cuda's LIF "
                               "takes it with 1 (r = tau/dt) or 1/tau' (r = 1, decay_input=True)")
        lam = 1.0 - 1.0 / tau_o
    c, want = s(fb, "scale"), -lam * theta / k
    if not (close(c, want) or c == want):
        fail(name, graph, f"its reset Scale is {c}; the subtractive reset by v_threshold = {theta} feeds back "
                           f"-(1 - dt/tau) * v_threshold / (input coefficient) = {want}")
    return onn.LIF(tau=tau_o, v_th=theta, v_reset=None, decay_input=decay_input, **kw)


def _neuron_graph(name, graph, dt, kw):
    """(LIF, recurrent weight node or None) for a neuron subgraph: Input -> neuron -> Output, the neuron a LIF /
    IF / CubaLIF (reset to v_reset) or LI / I -> Threshold -> Scale -> back (the subtractive reset), optionally with
    an Affine / Linear from the spikes back to the neuron (a recurrent layer, snnTorch's RLeaky layout)."""
    nir = nir_module()
    kinds = {"input": nir.Input, "output": nir.Output, "hard": (nir.LIF, nir.IF, nir.CubaLIF),
             "integ": (nir.LI, nir.I), "thr": nir.Threshold, "fb": nir.Scale, "w": (nir.Affine, nir.Linear)}
    got = {k: [] for k in kinds}
    for key, node in graph.nodes.items():
        kind = next((k for k, c in kinds.items() if isinstance(node, c)), None)
        if kind is None:
            fail(name, graph, f"holds {key!r} ({type(node).__name__}); a subgraph is imported only as a neuron "
                               "layer: LIF / IF / CubaLIF, or LI / I -> Threshold -> Scale (the subtractive reset), "
                               "with an optional Affine / Linear recurrence")
        got[kind].append(key)
    n = {k: len(v) for k, v in got.items()}
    if n["input"] != 1 or n["output"] != 1 or n["w"] > 1:
        fail(name, graph, f"has {n['input']} Input, {n['output']} Output and {n['w']} Affine/Linear nodes; a "
                           "neuron subgraph has one Input, one Output and at most one recurrent weight")
    (inp,), (out,) = got["input"], got["output"]
    if n["hard"] == 1 and n["integ"] == n["thr"] == n["fb"] == 0:
        entry = spikes = got["hard"][0]
        neuron = _neuron(name, graph.nodes[entry], nir, dt, kw)
        want = {(inp, entry), (entry, out)}
    elif n["hard"] == 0 and n["integ"] == n["thr"] == n["fb"] == 1:
        (entry,), (spikes,), (fb,) = got["integ"], got["thr"], got["fb"]
        neuron = _soft_neuron(name, graph, graph.nodes[entry], graph.nodes[spikes], graph.nodes[fb], dt, kw)
        want = {(inp, entry), (entry, spikes), (spikes, fb), (fb, entry), (spikes, out)}
    else:
        fail(name, graph, "is not a neuron subgraph: it needs one LIF / IF / CubaLIF, or one LI / I, one Threshold "
                           "and one Scale (the subtractive reset)")
    if got["w"]:
        want |= {(spikes, got["w"][0]), (got["w"][0], entry)}
    edges = [tuple(e) for e in graph.edges]
    if len(edges) != len(want) or set(edges) != want:
        fail(name, graph, f"has the edges {sorted(edges)}; that neuron subgraph is exactly {sorted(want)}")
    return neuron, (graph.nodes[got["w"][0]] if got["w"] else None)


def _module(name, node, nir, dt, dtype, device, kw):
    """(module, is_synapse) for one node; a plain torch Linear/Conv2d stands for a synapse until its decay is known."""
    neuron = _neuron(name, node, nir, dt, kw)
    if neuron is not None:
        return neuron.to(device), False
    f = dict(dtype=dtype, device=device)
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.as_tensor(np.asarray(node.weight), **f)
        if w.dim() != 2:
            fail(name, node, f"weight has shape {tuple(w.shape)}, not [out, in]")
        m = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine), **f)
        with torch.no_grad():
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.copy_(torch.as_tensor(np.asarray(node.bias), **f).reshape(-1))
        return m, True
    if isinstance(node, nir.Conv2d):
        w = torch.as_tensor(np.asarray(node.weight), **f)
        pad = node.padding
        pad = pad if isinstance(pad, str) else tuple(int(p) for p in np.broadcast_to(np.asarray(pad), (2,)))
        pair = lambda v: tuple(int(p) for p in np.broadcast_to(np.asarray(v), (2,)))  # noqa: E731
        try:
            m = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), pair(node.stride), pad,
                          pair(node.dilation), int(node.groups), bias=True, **f)
            onn.Conv2d(1, 1, tuple(w.shape[2:]), dilation=pair(node.dilation), padding=pad)  # 'same' it can run?
        except ValueError as e:
            fail(name, node, str(e))
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(torch.as_tensor(np.asarray(node.bias), **f).reshape(-1))
        return m, True
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        if np.any(np.asarray(node.padding) != 0):
            fail(name, node, f"padding {np.asarray(node.padding).tolist()}: NIR does not say whether the padding "
                              "counts in the average; only padding 0 is imported")
        k = tuple(int(v) for v in np.broadcast_to(np.asarray(node.kernel_size), (2,)))
        st = tuple(int(v) for v in np.broadcast_to(np.asarray(node.stride), (2,)))
        return nn.AvgPool2d(k, st, divisor_override=1 if isinstance(node, nir.SumPool2d) else None), False
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)  # NIR's dims have no batch dim
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end), False
    if isinstance(node, nir.Scale):
        return onn.Scale(scalar(name, node, "scale", node.scale)), False
    why = _WHY_NOT.get(type(node).__name__, "ottt_cuda has no layer for this node type")
    fail(name, node, why)


def _reach(edges, start):
    seen, todo = set(), [start]
    while todo:
        for b in edges.get(todo.pop(), ()):
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def _collapse_cycles(graph, nir):
    """`graph` with each cycle that is entered at one node and left at one node (a recurrent neuron layer written
    flat, as snnTorch's export_to_nir writes RLeaky) replaced by a subgraph of it, named by its members joined with
    "+"; a cycle with more ways in or out is left for _chain to refuse."""
    outs = {}
    for a, b in graph.edges:
        outs.setdefault(a, []).append(b)
    reach = {n: _reach(outs, n) for n in graph.nodes}
    nodes, edges, done = dict(graph.nodes), [tuple(e) for e in graph.edges], set()
    for n in graph.nodes:
        if n in done or n not in reach[n]:
            continue
        scc = {m for m in reach[n] if n in reach[m]}
        done |= scc
        into = [(a, b) for a, b in edges if b in scc and a not in scc]
        out_of = [(a, b) for a, b in edges if a in scc and b not in scc]
        if len(into) != 1 or len(out_of) != 1:
            continue
        (src, entry), (exit_, dst) = into[0], out_of[0]
        shape = getattr(graph.nodes[exit_], "output_type", None) or {"output": np.array([1])}
        shape = np.asarray(next(iter(shape.values())))
        sub_nodes = {"input": nir.Input(input_type=shape), **{m: graph.nodes[m] for m in scc},
                     "output": nir.Output(output_type=shape)}
        sub_edges = [("input", entry)] + [(a, b) for a, b in edges if a in scc and b in scc] + [(exit_, "output")]
        name = "+".join(sorted(scc))
        for m in scc:
            del nodes[m]
        nodes[name] = nir.NIRGraph(nodes=sub_nodes, edges=sub_edges, type_check=False)
        edges = [e for e in edges if e[0] not in scc and e[1] not in scc] + [(src, name), (name, dst)]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False) if done else graph


def _chain(graph, nir):
    """The node names of a chain Input -> ... -> Output, in order; NIRConversionError for any other graph."""
    nodes = graph.nodes
    outs, ins = {}, {}
    for a, b in graph.edges:
        outs.setdefault(a, []).append(b)
        ins.setdefault(b, []).append(a)
    for n, node in nodes.items():
        for kind, d in (("inputs", ins), ("outputs", outs)):
            if len(d.get(n, [])) > 1:
                fail(n, node, f"has {len(d[n])} {kind} ({', '.join(d[n])}); only chains are imported (no "
                               "branches, merges or recurrence)")
    starts = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    if len(starts) != 1:
        raise NIRConversionError(f"NIR graph has {len(starts)} Input nodes; a chain has one")
    order, seen = [starts[0]], {starts[0]}
    while outs.get(order[-1]):
        nxt = outs[order[-1]][0]
        if nxt in seen:
            fail(nxt, nodes[nxt], "is reached twice: the graph has a cycle (recurrence); only chains are imported")
        order.append(nxt)
        seen.add(nxt)
    if not isinstance(nodes[order[-1]], nir.Output):
        fail(order[-1], nodes[order[-1]], "ends the chain but is not an Output node")
    left = set(nodes) - seen
    if left:
        n = sorted(left)[0]
        fail(n, nodes[n], "is not on the chain from the Input to the Output")
    return order[1:-1]


def from_nir(graph_or_path, *, dt, dtype=torch.float32, device=None, surrogate="sigmoid", alpha=4.0):
    """An nn.Sequential of ottt_cuda layers computing the NIR graph `graph_or_path` (a nir.NIRGraph, or the
    path of a .nir file, read with nir.read) with time step `dt` (snnTorch's graphs: dt=1e-4).

    Node mapping (module docstring and docs/nir.md: the conventions): Affine/Linear -> nn.Linear, Conv2d ->
    nn.Conv2d, LIF / IF / CubaLIF (tau_syn = dt, w_in = 1) -> nn.LIF with the reset to v_reset, AvgPool2d /
    SumPool2d (padding 0) -> torch.nn.AvgPool2d (divisor_override=1 for the sum), Flatten -> torch.nn.Flatten
    (NIR's dims shifted past the batch dim), Scale (one factor) -> nn.Scale; Input/Output are the ends. A
    subgraph LI (or I) -> Threshold -> Scale -> back is nn.LIF with the subtractive reset (v_reset=None); a
    neuron with an Affine/Linear from its spikes back into it (nested as to_nir writes it, or flat as snnTorch's
    export_to_nir writes RLeaky) after an Affine/Linear is nn.RecurrentLIF (docs/nir.md).
    Each synapse's trace decay is the leak of the neuron that follows it (the readout: of the last neuron
    before it), and the first synapse is untraced, as convert() does (the same helpers). NIR has no surrogate
    gradient: every neuron gets `surrogate` / `alpha`. The model is run one step per call (step_mode "s") with
    ottt_cuda.reset between sequences, under every train_step mode. A node that cannot be expressed exactly,
    or a graph that is not a chain, raises NIRConversionError (a TypeError) naming the node, its type and why."""
    nir = nir_module()
    dt = check_dt(dt)
    if isinstance(graph_or_path, (str, os.PathLike)):
        graph = nir.read(graph_or_path)
    else:
        graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir: expected a nir.NIRGraph or a path, got {type(graph).__name__}")
    graph = _collapse_cycles(graph, nir)
    kw = dict(surrogate=surrogate, alpha=alpha)
    mods, synapses, neurons, recurrent = [], [], {}, {}
    for name in _chain(graph, nir):
        node = graph.nodes[name]
        if isinstance(node, nir.NIRGraph):
            m, w_rec = _neuron_graph(name, node, dt, kw)
            m, is_syn = m.to(device), False
            if w_rec is not None:
                if not mods or not isinstance(mods[-1], nn.Linear) or synapses[-1] != len(mods) - 1:
                    fail(name, node, "is a recurrent layer that does not follow an Affine / Linear node; ottt_cuda's "
                                      "RecurrentLIF takes its input through one")
                recurrent[len(mods) - 1] = (name, node, m, w_rec)  # the synapse before becomes the layer's input
                neurons[len(mods) - 1] = m
                continue
        else:
            m, is_syn = _module(name, node, nir, dt, dtype, device, kw)
        if is_syn:
            synapses.append(len(mods))
        if isinstance(m, onn.LIF):
            neurons[len(mods)] = m
        mods.append(m)
    positions = list(range(len(mods)))
    for j, i in enumerate(synapses):
        if i in recurrent:
            mods[i] = _recurrent_lif(mods[i], *recurrent[i], traced=j > 0, kw=kw)
        else:
            mods[i] = ottt_synapse(mods[i], traced=j > 0, decay=synapse_trace_decay(positions, i, neurons))
    return nn.Sequential(*mods)


def _recurrent_lif(synapse, name, graph, neuron, w_rec, traced, kw):
    """RecurrentLIF with `synapse`'s input weights, `neuron`'s parameters and `w_rec` on the previous spikes; an
    Affine recurrence's bias is the same current at every step (W 0 + b at the first), so it joins the input bias."""
    w = synapse.weight
    n = w.shape[0]
    rec = torch.as_tensor(np.asarray(w_rec.weight), dtype=w.dtype, device=w.device)
    if tuple(rec.shape) != (n, n):
        fail(name, graph, f"its recurrent weight has shape {tuple(rec.shape)}; the layer has {n} neurons, so it "
                           f"must be [{n}, {n}]")
    bias = synapse.bias.detach().clone() if synapse.bias is not None else None
    if isinstance(w_rec, nir_module().Affine):
        b = torch.as_tensor(np.asarray(w_rec.bias), dtype=w.dtype, device=w.device).reshape(-1)
        bias = b if bias is None else bias + b
    layer = onn.RecurrentLIF(w.shape[1], n, bias is not None, input_trace=traced, tau=neuron.tau, v_th=neuron.v_th,
                             v_reset=neuron.v_reset, decay_input=neuron.decay_input, **kw).to(w.device, w.dtype)
    with torch.no_grad():
        layer.input.weight.copy_(w)
        layer.recurrent.weight.copy_(rec)
        if bias is not None:
            layer.input.bias.copy_(bias)
    return layer
