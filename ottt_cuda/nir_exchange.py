"""Models in and out of NIR, the Neuromorphic Intermediate Representation (docs/nir.md).

    from_nir(graph_or_path, *, dt)          a NIR graph (or a .nir file) -> nn.Sequential of ottt_cuda layers
    to_nir(model, *, dt, input_shape)       an ottt_cuda chain -> nir.NIRGraph (nir.write it to a file)

The `nir` package is imported here, lazily: `import ottt_cuda` never needs it.

Discretization (the conventions matched)
----------------------------------------
NIR's neurons are continuous ODEs; ottt_cuda's LIF is a discrete step. With the
time step `dt`, forward Euler, input current I[t] and the reset of NIR (to v_reset):

  NIR LIF      tau dv/dt = (v_leak - v) + r I     v[t] = (1 - dt/tau) v + (dt/tau) v_leak + (dt r/tau) I[t]
  ottt_cuda    decay_input=False                  h = (1 - 1/tau') v + v_reset/tau' + x
               decay_input=True                   h = v + (x - (v - v_reset))/tau'
  hence        tau' = tau/dt, and the input coefficient dt r/tau must be 1 (decay_input=False) or r = 1 (then it
               is 1/tau': decay_input=True); ottt_cuda's hard-reset LIF leaks towards v_reset, so v_leak must equal
               v_reset. Spike z = H(v - v_threshold), then v = v_reset (NIR's hard reset; NIR has no subtractive
               reset, so an ottt_cuda LIF with v_reset=None cannot be exported). NIR fires on v > v_threshold,
               ottt_cuda on h >= v_th: they differ only for a membrane exactly at threshold.
  NIR IF       dv/dt = r I                        v[t] = v + dt r I[t]: dt r must be 1 (convert()'s IF: no leak).
  NIR CubaLIF  tau_syn dI/dt = -I + w_in S, then the LIF above on I (the new I, as snnTorch's Synaptic): exact only
               with no synaptic memory, tau_syn = dt and w_in = 1 (I[t] = S[t]); otherwise the current is a second
               state ottt_cuda's LIF does not have.
  snnTorch     export_to_nir writes a Leaky(beta, threshold) as LIF(tau = dt/(1 - beta), r = tau/dt, v_leak = 0,
               v_reset = 0) with dt = 1e-4 (snntorch/export_nir.py), whatever its reset_mechanism (the NIR node always
               means the reset to 0: build the Leaky with reset_mechanism="zero" for the same network);
               import_from_nir reads beta = 1 - dt/tau, dt = 1e-4, reset_mechanism="zero". So pass dt=1e-4 for
               graphs from or for snnTorch: tau' = 1/(1 - beta).

A graph is accepted when it is a chain (Input -> nodes -> Output, one edge in and one out per node) of the nodes
in docs/nir.md's table, each expressible exactly; anything else raises NIRConversionError naming the node, its type
and why. Parameters given per neuron must be equal across the layer (ottt_cuda's neurons take scalars).
"""
import copy
import math
import os

import numpy as np
import torch
import torch.nn as nn

from . import nn as onn
from .convert import IF_TAU, ottt_synapse, synapse_trace_decay

_RTOL = 1e-6  # the parameters' own float32 rounding (snnTorch writes float32 arrays); nothing is approximated


class NIRConversionError(TypeError):
    """A NIR node (or an ottt_cuda layer) the other side cannot express exactly, or a graph that is not a chain."""


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - the tests skip without nir
        raise ImportError("ottt_cuda.from_nir / to_nir need the NIR library: pip install nir") from e
    return nir


def _fail(name, node, why):
    raise NIRConversionError(f"NIR node {name!r} ({type(node).__name__}): {why}")


def _scalar(name, node, field, value):
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if a.size == 0:
        _fail(name, node, f"{field} is empty")
    if not np.all(a == a[0]):
        _fail(name, node, f"{field} differs between neurons ({a.min()} .. {a.max()}); ottt_cuda's neurons take one "
                          "value per layer")
    return float(a[0])


def _close(a, b):
    return math.isclose(a, b, rel_tol=_RTOL, abs_tol=0.0)


def _check_dt(dt):
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0 or not math.isfinite(dt):
        raise ValueError(f"dt must be a positive finite number (NIR's time step), got {dt!r}")
    return float(dt)


def _lif_from(name, node, tau, r, v_leak, v_th, v_reset, dt, kw):
    if tau < dt and not _close(tau, dt):
        _fail(name, node, f"tau = {tau} is below the time step dt = {dt}: the Euler leak 1 - dt/tau would be negative")
    coeff = dt * r / tau
    if _close(coeff, 1.0):
        decay_input = False
    elif _close(r, 1.0):
        decay_input = True
    else:
        _fail(name, node, f"the input enters as (dt*r/tau) * I = {coeff} * I; ottt_cuda's LIF takes it with 1 "
                          "(r = tau/dt) or 1/tau' (r = 1, decay_input=True)")
    if not _close(v_leak, v_reset) and not (v_leak == 0.0 == v_reset):
        _fail(name, node, f"v_leak = {v_leak} differs from v_reset = {v_reset}; ottt_cuda's hard-reset LIF leaks "
                          "towards v_reset")
    tau_o = 1.0 if _close(tau, dt) else tau / dt
    return onn.LIF(tau=tau_o, v_th=v_th, v_reset=v_reset, decay_input=decay_input, **kw)


def _neuron(name, node, nir, dt, kw):
    s = lambda field: _scalar(name, node, field, getattr(node, field))  # noqa: E731
    if isinstance(node, nir.LIF):
        return _lif_from(name, node, s("tau"), s("r"), s("v_leak"), s("v_threshold"), s("v_reset"), dt, kw)
    if isinstance(node, nir.CubaLIF):
        tau_syn, w_in = s("tau_syn"), s("w_in")
        if not _close(tau_syn, dt):
            _fail(name, node, f"tau_syn = {tau_syn} != dt = {dt}: the synaptic current decays by 1 - dt/tau_syn = "
                              f"{1 - dt / tau_syn} per step, a second state ottt_cuda's LIF does not have")
        if not _close(w_in, 1.0):
            _fail(name, node, f"w_in = {w_in} != 1: with tau_syn = dt the current is w_in * S, which ottt_cuda's LIF "
                              "takes only with w_in = 1 (scale the weights before)")
        return _lif_from(name, node, s("tau_mem"), s("r"), s("v_leak"), s("v_threshold"), s("v_reset"), dt, kw)
    if isinstance(node, nir.IF):
        r = s("r")
        if not _close(dt * r, 1.0):
            _fail(name, node, f"the input enters as dt*r * I = {dt * r} * I; ottt_cuda's IF (an LIF without leak) "
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
    "NIRGraph": "a subgraph (e.g. a recurrent layer); only flat feed-forward chains are imported",
}


def _module(name, node, nir, dt, dtype, device, kw):
    """(module, is_synapse) for one node; a plain torch Linear/Conv2d stands for a synapse until its decay is known."""
    neuron = _neuron(name, node, nir, dt, kw)
    if neuron is not None:
        return neuron.to(device), False
    f = dict(dtype=dtype, device=device)
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.as_tensor(np.asarray(node.weight), **f)
        if w.dim() != 2:
            _fail(name, node, f"weight has shape {tuple(w.shape)}, not [out, in]")
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
            _fail(name, node, str(e))
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(torch.as_tensor(np.asarray(node.bias), **f).reshape(-1))
        return m, True
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        if np.any(np.asarray(node.padding) != 0):
            _fail(name, node, f"padding {np.asarray(node.padding).tolist()}: NIR does not say whether the padding "
                              "counts in the average; only padding 0 is imported")
        k = tuple(int(v) for v in np.broadcast_to(np.asarray(node.kernel_size), (2,)))
        st = tuple(int(v) for v in np.broadcast_to(np.asarray(node.stride), (2,)))
        return nn.AvgPool2d(k, st, divisor_override=1 if isinstance(node, nir.SumPool2d) else None), False
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)  # NIR's dims have no batch dim
        return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end), False
    if isinstance(node, nir.Scale):
        return onn.Scale(_scalar(name, node, "scale", node.scale)), False
    why = _WHY_NOT.get(type(node).__name__, "ottt_cuda has no layer for this node type")
    _fail(name, node, why)


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
                _fail(n, node, f"has {len(d[n])} {kind} ({', '.join(d[n])}); only chains are imported (no "
                               "branches, merges or recurrence)")
    starts = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    if len(starts) != 1:
        raise NIRConversionError(f"NIR graph has {len(starts)} Input nodes; a chain has one")
    order, seen = [starts[0]], {starts[0]}
    while outs.get(order[-1]):
        nxt = outs[order[-1]][0]
        if nxt in seen:
            _fail(nxt, nodes[nxt], "is reached twice: the graph has a cycle (recurrence); only chains are imported")
        order.append(nxt)
        seen.add(nxt)
    if not isinstance(nodes[order[-1]], nir.Output):
        _fail(order[-1], nodes[order[-1]], "ends the chain but is not an Output node")
    left = set(nodes) - seen
    if left:
        n = sorted(left)[0]
        _fail(n, nodes[n], "is not on the chain from the Input to the Output")
    return order[1:-1]


def from_nir(graph_or_path, *, dt, dtype=torch.float32, device=None, surrogate="sigmoid", alpha=4.0):
    """An nn.Sequential of ottt_cuda layers computing the NIR graph `graph_or_path` (a nir.NIRGraph, or the
    path of a .nir file, read with nir.read) with time step `dt` (snnTorch's graphs: dt=1e-4).

    Node mapping (module docstring and docs/nir.md: the conventions): Affine/Linear -> nn.Linear, Conv2d ->
    nn.Conv2d, LIF / IF / CubaLIF (tau_syn = dt, w_in = 1) -> nn.LIF with the reset to v_reset, AvgPool2d /
    SumPool2d (padding 0) -> torch.nn.AvgPool2d (divisor_override=1 for the sum), Flatten -> torch.nn.Flatten
    (NIR's dims shifted past the batch dim), Scale (one factor) -> nn.Scale; Input/Output are the ends.
    Each synapse's trace decay is the leak of the neuron that follows it (the readout: of the last neuron
    before it), and the first synapse is untraced, as convert() does (the same helpers). NIR has no surrogate
    gradient: every neuron gets `surrogate` / `alpha`. The model is run one step per call (step_mode "s") with
    ottt_cuda.reset between sequences, under every train_step mode. A node that cannot be expressed exactly,
    or a graph that is not a chain, raises NIRConversionError (a TypeError) naming the node, its type and why."""
    nir = _nir()
    dt = _check_dt(dt)
    if isinstance(graph_or_path, (str, os.PathLike)):
        graph = nir.read(graph_or_path)
    else:
        graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir: expected a nir.NIRGraph or a path, got {type(graph).__name__}")
    kw = dict(surrogate=surrogate, alpha=alpha)
    mods, synapses, neurons = [], [], {}
    for name in _chain(graph, nir):
        m, is_syn = _module(name, graph.nodes[name], nir, dt, dtype, device, kw)
        if is_syn:
            synapses.append(len(mods))
        if isinstance(m, onn.LIF):
            neurons[len(mods)] = m
        mods.append(m)
    positions = list(range(len(mods)))
    for j, i in enumerate(synapses):
        mods[i] = ottt_synapse(mods[i], traced=j > 0, decay=synapse_trace_decay(positions, i, neurons))
    return nn.Sequential(*mods)


# ----------------------------------------------------------------------------------------------- export
def _leaves(model):
    """The modules a chain model runs, in order: nn.Sequential (nested), or a model whose forward is the composition
    of its `_ottt_chain` attributes (ottt_cuda.models)."""
    if isinstance(model, nn.Sequential):
        out = []
        for name, m in model.named_children():
            out += [(f"{name}.{n}" if n else name, x) for n, x in _leaves(m)]
        return out
    chain = getattr(type(model), "_ottt_chain", None)
    if chain and type(model).__dict__.get("_ottt_chain") is chain:
        out = []
        for name in chain:
            out += [(f"{name}.{n}" if n else name, x) for n, x in _leaves(getattr(model, name))]
        return out
    if not list(model.children()) or isinstance(model, (onn.Stateful, onn.WSLinear, onn.WSConv2d)):
        return [("", model)]
    raise NIRConversionError(f"to_nir: {type(model).__name__} is not a chain to_nir can export: an nn.Sequential of "
                             "layers, or a model with an _ottt_chain (ottt_cuda.models.vgg11_ws)")


def _np(t):
    return t.detach().cpu().numpy().copy()


def _shapes(model, input_shape):
    """Each leaf's (input shape, output shape) without the batch dim, from one zero step on a copy."""
    p = next(model.parameters(), None)
    x = torch.zeros((1, *input_shape), dtype=p.dtype if p is not None else torch.float32,
                    device=p.device if p is not None else None)
    dup = copy.deepcopy(model).eval()
    onn.reset(dup)
    shapes = {}
    with torch.no_grad():
        for name, m in _leaves(dup):
            y = m(x)
            shapes[name] = (tuple(x.shape[1:]), tuple(y.shape[1:]))
            x = y
    return shapes


def _lif_to(name, m, dt, shape, nir):
    if m.v_reset is None:
        raise NIRConversionError(f"to_nir: layer {name!r} (LIF) has v_reset=None, the subtractive (soft) reset; NIR's "
                                 "neurons reset to v_reset, so it cannot be written exactly (build it with "
                                 "v_reset=0.0)")
    full = lambda v: np.full(shape, v, dtype=np.float64)  # noqa: E731
    if m.tau >= IF_TAU:
        return nir.IF(r=full(1.0 / dt), v_threshold=full(m.v_th), v_reset=full(m.v_reset))
    tau = m.tau * dt
    r = 1.0 if m.decay_input else m.tau
    return nir.LIF(tau=full(tau), r=full(r), v_leak=full(m.v_reset), v_threshold=full(m.v_th),
                   v_reset=full(m.v_reset))


def _node_to(name, m, dt, shapes, nir):
    """The NIR node for one leaf, or None for a layer that is the identity at inference."""
    in_shape, out_shape = shapes[name]
    if isinstance(m, onn.LIF):
        return _lif_to(name, m, dt, out_shape, nir)
    if isinstance(m, (onn.Linear, onn.Conv2d)):
        w = m.standardized_without_graph()[0] if isinstance(m, (onn.WSLinear, onn.WSConv2d)) else m.weight
        w = _np(w)
        if isinstance(m, onn.Linear):
            return nir.Linear(weight=w) if m.bias is None else nir.Affine(weight=w, bias=_np(m.bias))
        bias = _np(m.bias) if m.bias is not None else np.zeros(w.shape[0], dtype=w.dtype)
        return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=w, stride=tuple(m.stride),
                          padding=tuple(m.padding), dilation=tuple(m.dilation), groups=m.groups, bias=bias)
    if isinstance(m, onn.Scale):
        return nir.Scale(scale=np.full(out_shape, m.c, dtype=np.float64))
    if isinstance(m, (onn.Dropout, nn.Dropout, nn.Identity)):
        return None  # the identity at inference (NIR describes the inference network)
    if isinstance(m, nn.Flatten):
        if m.start_dim == 0:
            raise NIRConversionError(f"to_nir: layer {name!r} (Flatten) flattens the batch dim")
        start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
        end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start, end_dim=end)
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or (m.padding not in (0, (0, 0))) or m.divisor_override not in (None, 1):
            raise NIRConversionError(f"to_nir: layer {name!r} (AvgPool2d) has padding, ceil_mode or a divisor other "
                                     "than 1: NIR's AvgPool2d/SumPool2d do not say how those count")
        pair = lambda v: np.array(v if isinstance(v, (tuple, list)) else (v, v))  # noqa: E731
        cls = nir.SumPool2d if m.divisor_override == 1 else nir.AvgPool2d
        return cls(kernel_size=pair(m.kernel_size), stride=pair(m.stride if m.stride is not None else m.kernel_size),
                   padding=np.array([0, 0]))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        (h, w), (oh, ow) = in_shape[-2:], out_shape[-2:]
        if h % oh or w % ow:
            raise NIRConversionError(f"to_nir: layer {name!r} (AdaptiveAvgPool2d) pools {h}x{w} to {oh}x{ow}, "
                                     "windows of unequal sizes that no AvgPool2d expresses")
        return nir.AvgPool2d(kernel_size=np.array([h // oh, w // ow]), stride=np.array([h // oh, w // ow]),
                             padding=np.array([0, 0]))
    raise NIRConversionError(f"to_nir: layer {name!r} ({type(m).__name__}) has no exact NIR node (supported: Linear, "
                             "Conv2d, WSLinear, WSConv2d, LIF with a hard reset, Scale, Flatten, AvgPool2d, "
                             "AdaptiveAvgPool2d to whole windows, Dropout/Identity)")


def to_nir(model, *, dt, input_shape):
    """A nir.NIRGraph (a chain Input -> ... -> Output) computing `model` at inference: an nn.Sequential of
    ottt_cuda layers (from_nir's, convert()'s) or a model whose forward is its `_ottt_chain` (ottt_cuda.models'
    VGG). `dt` is NIR's time step (from_nir's inverse: tau = dt * tau', r = tau' or 1 with decay_input, v_leak =
    v_reset; dt=1e-4 for snnTorch's import_from_nir); `input_shape` one sample's shape without the batch dim
    (C, H, W or features), from which every node's shape is found by one zero step on a copy of the model.

    Weight standardization: a WSLinear / WSConv2d is written as a plain Linear/Affine/Conv2d whose weight is the
    standardized one, gain * (W - mean_row) / sqrt(var_row * fan_in + eps) (its standardized_without_graph(), what
    the forward uses), so a trained sWS model exports the weights it computes with; the gamma after the neuron is the
    model's Scale node. Dropout is left out (the identity at inference). An LIF with v_reset=None (the soft reset),
    a recurrent layer, max-pooling, or any other layer without an exact NIR node raises NIRConversionError naming it.
    Write the graph with nir.write(path, graph)."""
    nir = _nir()
    dt = _check_dt(dt)
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_nir: model must be a torch.nn.Module, got {type(model).__name__}")
    input_shape = tuple(int(s) for s in input_shape)
    leaves = _leaves(model)
    for name, m in leaves:  # refuse before running anything
        if isinstance(m, onn.LIF) and m.v_reset is None:
            _lif_to(name, m, dt, (1,), nir)
    shapes = _shapes(model, input_shape)
    nodes, order = {"input": nir.Input(input_type=np.array(input_shape))}, ["input"]
    last = input_shape
    for name, m in leaves:
        node = _node_to(name, m, dt, shapes, nir)
        last = shapes[name][1]
        if node is None:
            continue
        key = name.replace(".", "_")
        nodes[key] = node
        order.append(key)
    nodes["output"] = nir.Output(output_type=np.array(last))
    order.append("output")
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)
    try:
        graph.infer_types()
    except Exception:  # noqa: BLE001 - type inference is a convenience for readers of the graph
        pass
    return graph
