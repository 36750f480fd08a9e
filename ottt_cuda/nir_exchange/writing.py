"""to_nir: an ottt_cuda chain -> a nir.NIRGraph (the conventions: the package docstring)."""
import copy

import numpy as np
import torch
import torch.nn as nn

from .. import nn as onn
from ..convert import IF_TAU
from .common import NIRConversionError, check_dt, nir_module


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


def _lif_to(m, dt, shape, nir):
    """NIR's LIF (or IF) for an LIF with the reset to v_reset."""
    full = lambda v: np.full(shape, v, dtype=np.float64)  # noqa: E731
    if m.tau >= IF_TAU:
        return nir.IF(r=full(1.0 / dt), v_threshold=full(m.v_th), v_reset=full(m.v_reset))
    tau = m.tau * dt
    r = 1.0 if m.decay_input else m.tau
    return nir.LIF(tau=full(tau), r=full(r), v_leak=full(m.v_reset), v_threshold=full(m.v_th),
                   v_reset=full(m.v_reset))


def _soft_reset_nodes(m, dt, shape, nir):
    """The nodes and edges of an LIF with the subtractive reset (v_reset=None): "membrane" (LI, or I for the IF)
    -> "threshold" (the spikes) -> "reset" (Scale) -> back into "membrane". A discrete executor delays the cycle by
    one step, so the membrane takes lam*u[t-1] + k*(I[t] + c*s[t-1]): with c = -lam*v_th/k that is the LIF's
    h[t] = lam*(h[t-1] - v_th*s[t-1]) + k*I[t] (lam = 1 - 1/tau', k the input coefficient 1 or 1/tau')."""
    full = lambda v: np.full(shape, v, dtype=np.float64)  # noqa: E731
    if m.tau >= IF_TAU:
        membrane, lam, k = nir.I(r=full(1.0 / dt)), 1.0, 1.0
    else:
        membrane = nir.LI(tau=full(m.tau * dt), r=full(1.0 if m.decay_input else m.tau), v_leak=full(0.0))
        lam, k = 1.0 - 1.0 / m.tau, (1.0 / m.tau if m.decay_input else 1.0)
    nodes = {"membrane": membrane, "threshold": nir.Threshold(threshold=full(m.v_th)),
             "reset": nir.Scale(scale=full(-lam * m.v_th / k))}
    return nodes, [("membrane", "threshold"), ("threshold", "reset"), ("reset", "membrane")], "membrane", "threshold"


def _neuron_graph_to(m, dt, shape, nir, w_rec=None):
    """A neuron layer as a subgraph Input -> neuron -> Output, with the recurrent weight `w_rec` from the spikes back
    to the neuron (snnTorch's RLeaky layout: "lif" <-> "w_rec"); None: an LIF with a hard reset is one plain node."""
    if m.v_reset is None:
        nodes, edges, entry, spikes = _soft_reset_nodes(m, dt, shape, nir)
    elif w_rec is None:
        return None
    else:
        nodes, edges, entry, spikes = {"lif": _lif_to(m, dt, shape, nir)}, [], "lif", "lif"
    nodes = {"input": nir.Input(input_type=np.array(shape)), **nodes, "output": nir.Output(output_type=np.array(shape))}
    edges = [("input", entry), *edges, (spikes, "output")]
    if w_rec is not None:
        nodes["w_rec"] = nir.Linear(weight=w_rec)
        edges += [(spikes, "w_rec"), ("w_rec", entry)]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _synapse_weight(m):
    return _np(m.standardized_without_graph()[0] if isinstance(m, (onn.WSLinear, onn.WSConv2d)) else m.weight)


def _nodes_to(name, m, dt, shapes, nir):
    """[(key suffix, NIR node)] for one leaf: none for a layer that is the identity at inference, two for a
    RecurrentLIF (its input synapse, then its neuron subgraph)."""
    in_shape, out_shape = shapes[name]
    if isinstance(m, onn.RecurrentLIF):  # (its recurrent synapse has no bias; its dropout is off at inference)
        syn = _node_to(name, m.input, dt, in_shape, out_shape, nir)
        return [("_input", syn), ("", _neuron_graph_to(m.neuron, dt, out_shape, nir, _synapse_weight(m.recurrent)))]
    return [("", n) for n in [_node_to(name, m, dt, in_shape, out_shape, nir)] if n is not None]


def _node_to(name, m, dt, in_shape, out_shape, nir):
    """The NIR node for one leaf, or None for a layer that is the identity at inference."""
    if isinstance(m, onn.LIF):
        return _neuron_graph_to(m, dt, out_shape, nir) or _lif_to(m, dt, out_shape, nir)
    if isinstance(m, (onn.Linear, onn.Conv2d)):
        w = _synapse_weight(m)
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
                             "Conv2d, WSLinear, WSConv2d, LIF, RecurrentLIF, Scale, Flatten, AvgPool2d, "
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
    model's Scale node. Dropout is left out (the identity at inference). An LIF with v_reset=None (the subtractive
    reset) is a subgraph of NIR's LI (I for the IF), Threshold and a Scale fed back; a RecurrentLIF is its input
    synapse and a subgraph of its neuron with w_rec fed back (module docstring, docs/nir.md). Max-pooling or any
    other layer without an exact NIR node raises NIRConversionError naming it. Write the graph with
    nir.write(path, graph)."""
    nir = nir_module()
    dt = check_dt(dt)
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_nir: model must be a torch.nn.Module, got {type(model).__name__}")
    input_shape = tuple(int(s) for s in input_shape)
    leaves = _leaves(model)
    shapes = _shapes(model, input_shape)
    nodes, order = {"input": nir.Input(input_type=np.array(input_shape))}, ["input"]
    last = input_shape
    for name, m in leaves:
        last = shapes[name][1]
        for suffix, node in _nodes_to(name, m, dt, shapes, nir):
            key = name.replace(".", "_") + suffix
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
