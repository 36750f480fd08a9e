"""Drop-in conversion of an ordinary spiking model to ottt_cuda layers.

nn.Linear / nn.Conv2d (and subclasses such as SpikingJelly's layer.Linear,
layer.Conv2d, WSLinear, WSConv2d) become ottt_cuda's synapses with the same
weights; the first synapse in module order (the one after the input) is
untraced, as in the paper. Spiking neurons become ottt_cuda.nn.LIF:
SpikingJelly's LIFNode / OTTTLIFNode / IFNode and snnTorch's Leaky
(init_hidden=True; reset_mechanism 'zero', or 'subtract' with beta=1 and
reset_delay=True: the combinations ottt_cuda's LIF computes exactly, see
_snn_reset). Any other module that looks like a
spiking neuron raises an error naming it. The converted model is run one step
per call, with ottt_cuda.reset between sequences.
"""
import copy
import math

import torch
import torch.nn as nn

from . import nn as onn

# IF has no leak; the LIF kernels take a finite tau: 1e30 makes lambda = 1 - 1e-30,
# which rounds to exactly 1 in float32/float64 arithmetic. IF_TAU, ottt_synapse and
# synapse_trace_decay are shared with nir_exchange, which builds the same layers from NIR.
IF_TAU = 1e30

_SJ_SURROGATES = {"Sigmoid": "sigmoid", "ATan": "atan", "PiecewiseQuadratic": None, "Rect": "rectangle"}
_SNN_SURROGATES = {"ATan": "atan", "atan": "atan", "Sigmoid": "sigmoid", "sigmoid": "sigmoid",
                   "Triangular": "triangle", "triangular": "triangle"}


def _qualname(m):
    return f"{type(m).__module__}.{type(m).__name__}"


def _sj_surrogate(fn, name):
    kind = type(fn).__name__
    mapped = _SJ_SURROGATES.get(kind)
    if mapped is None:
        raise TypeError(f"convert: module {name!r} uses SpikingJelly surrogate {kind}, which ottt_cuda does not have "
                        f"(supported: Sigmoid, ATan, Rect)")
    return mapped, float(fn.alpha)


def _from_spikingjelly(m, name, tau):
    cls = type(m).__name__
    surrogate, alpha = _sj_surrogate(m.surrogate_function, name)
    v_reset = None if m.v_reset is None else float(m.v_reset)
    # SpikingJelly's flag is carried over (its LIFNode defaults to False): mode
    # "bptt" then back-propagates through the reset as SpikingJelly does; OTTT
    # and SLTT detach it by definition (ottt_cuda.nn.LIF says so with a warning).
    detach_reset = bool(getattr(m, "detach_reset", False))
    if cls == "IFNode":
        return onn.LIF(tau=IF_TAU, v_th=float(m.v_threshold), v_reset=v_reset, decay_input=False,
                       surrogate=surrogate, alpha=alpha, detach_reset=detach_reset)
    return onn.LIF(tau=float(tau if tau is not None else m.tau), v_th=float(m.v_threshold), v_reset=v_reset,
                   decay_input=bool(m.decay_input), surrogate=surrogate, alpha=alpha, detach_reset=detach_reset)


def _snn_reset(m, name, beta, v_th):
    """ottt_cuda's (v_reset, detach_reset) for an snnTorch Leaky's reset_mechanism x reset_delay, or a
    TypeError where no ottt_cuda LIF computes the same spikes. snnTorch (1.0), per step, with U the stored
    membrane and r = H(U[t-1] - thr) detached:
      zero,     delay=True:  h = beta*(1-r)*U[t-1] + I; s = H(h - thr); U = h. Since r = s[t-1], this is the
                             hard reset to 0 (reset detached).
      zero,     delay=False: the same, then U = h - (s - r)*h. With thr >= 0, r is always 0 (U[t-1] is 0 or
                             an h that did not fire), so U = h*(1 - s): the hard reset to 0 with the gradient
                             through the (undetached) spike, i.e. detach_reset=False.
      subtract, delay=True:  U = beta*U[t-1] + I - r*thr: the reset is not decayed, ottt_cuda's is (the
                             same only for beta = 1).
      subtract, delay=False: U = beta*U[t-1] + I - s*thr but s = H(beta*U[t-1] + I - r*thr - thr): a membrane
                             still above thr after a reset needs 2*thr to fire again (no "double reset");
                             ottt_cuda's soft reset fires on h > thr alone.
      none:                  no reset at all."""
    mech, delay = m.reset_mechanism, bool(m.reset_delay)
    where = f"convert: snnTorch Leaky {name!r} has reset_mechanism={mech!r}, reset_delay={delay}"
    if mech == "zero":
        if delay:
            return 0.0, True
        if v_th >= 0.0:
            return 0.0, False
        raise TypeError(f"{where} and threshold={v_th} < 0: its resting membrane 0 is above threshold, so snnTorch "
                        "skips resets that ottt_cuda's LIF applies; use a threshold >= 0 or reset_delay=True")
    if mech == "subtract":
        if delay and beta == 1.0:
            return None, True
        if delay:
            raise TypeError(f"{where}: snnTorch subtracts the threshold one step late and undecayed, which "
                            "ottt_cuda's soft reset (decayed with the membrane) equals only for beta=1; use "
                            "reset_mechanism='zero' (exact), or ottt_cuda.nn.LIF(v_reset=None) in place of the "
                            "Leaky (a different neuron)")
        raise TypeError(f"{where}: snnTorch does not fire a neuron whose membrane is still above threshold after "
                        "a reset (it avoids a double reset), ottt_cuda's soft-reset LIF does; use "
                        "reset_mechanism='zero' (exact), or ottt_cuda.nn.LIF(v_reset=None) in place of the Leaky "
                        "(a different neuron)")
    raise TypeError(f"{where}: ottt_cuda's LIF always resets; use reset_mechanism='zero' (exact), or "
                    "'subtract' with beta=1 and reset_delay=True")


def _from_snntorch(m, name, tau):
    if not getattr(m, "init_hidden", False) or getattr(m, "output", False):
        raise TypeError(f"convert: snnTorch Leaky {name!r} must have init_hidden=True and output=False (it then "
                        "returns only spikes, as ottt_cuda.nn.LIF does)")
    if getattr(m, "learn_beta", False) or getattr(m, "learn_threshold", False):
        raise TypeError(f"convert: snnTorch Leaky {name!r} learns beta/threshold; ottt_cuda's LIF has fixed ones")
    for option, plain in (("inhibition", False), ("state_quant", False)):
        if getattr(m, option, plain) is not plain:
            raise TypeError(f"convert: snnTorch Leaky {name!r} has {option} set; ottt_cuda's LIF has no such "
                            f"option: build it with {option}={plain}")
    gsf = torch.as_tensor(m.graded_spikes_factor)
    if gsf.numel() != 1 or float(gsf) != 1.0:
        raise TypeError(f"convert: snnTorch Leaky {name!r} has graded_spikes_factor != 1; ottt_cuda's LIF emits "
                        "0/1 spikes: build it with graded_spikes_factor=1.0")
    if torch.as_tensor(m.beta).numel() != 1 or torch.as_tensor(m.threshold).numel() != 1:
        raise TypeError(f"convert: snnTorch Leaky {name!r} has a per-neuron beta or threshold; only scalars are "
                        "supported")
    beta = min(max(float(torch.as_tensor(m.beta).reshape(-1)[0]), 0.0), 1.0)  # snnTorch clamps beta to [0, 1]
    v_th = float(torch.as_tensor(m.threshold).reshape(-1)[0])
    v_reset, detach_reset = _snn_reset(m, name, beta, v_th)
    grad_name = getattr(m.spike_grad, "__qualname__", None) or getattr(m.spike_grad, "__name__", "")
    surrogate = next((v for k, v in _SNN_SURROGATES.items() if k in str(grad_name)), None)
    if surrogate is None:
        raise TypeError(f"convert: snnTorch Leaky {name!r} uses surrogate {grad_name!r}; supported: atan, sigmoid, "
                        "triangular")
    alpha = _snn_alpha(m.spike_grad, surrogate)
    tau_v = float(tau) if tau is not None else (IF_TAU if beta >= 1.0 else 1.0 / (1.0 - beta))
    return onn.LIF(tau=tau_v, v_th=v_th, v_reset=v_reset, decay_input=False, surrogate=surrogate, alpha=alpha,
                   detach_reset=detach_reset)


def _snn_alpha(spike_grad, surrogate):
    # snnTorch surrogates are closures over their slope; read it from the closure.
    cells = getattr(spike_grad, "__closure__", None) or ()
    for c in cells:
        try:
            v = c.cell_contents
        except ValueError:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return {"atan": 2.0, "sigmoid": 25.0, "triangle": 1.0}[surrogate]


def _neuron(m, name, tau):
    mod = type(m).__module__
    cls = type(m).__name__
    if mod.startswith("spikingjelly") and cls in ("LIFNode", "OTTTLIFNode", "IFNode"):
        return _from_spikingjelly(m, name, tau)
    if mod.startswith("snntorch") and cls == "Leaky":
        return _from_snntorch(m, name, tau)
    looks_spiking = mod.startswith(("spikingjelly", "snntorch", "norse", "lava")) and (
        "Node" in cls or "neuron" in mod or cls in ("Synaptic", "Alpha", "Lapicque", "RLeaky", "RSynaptic"))
    if looks_spiking:
        raise TypeError(f"convert: unsupported spiking neuron {_qualname(m)} at {name!r}; supported: SpikingJelly "
                        "LIFNode/OTTTLIFNode/IFNode and snnTorch Leaky")
    return None


def ottt_synapse(m, traced, decay):
    """ottt_cuda's Linear/Conv2d (WS variants for SpikingJelly's WS layers) with m's weights."""
    ws = hasattr(m, "gain") and hasattr(m, "get_weight")  # SpikingJelly WSConv2d / WSLinear
    dev, dt = m.weight.device, m.weight.dtype
    if isinstance(m, nn.Linear):
        cls = onn.WSLinear if ws else onn.Linear
        kw = dict(gain=m.gain is not None, eps=m.eps) if ws else {}
        new = cls(m.in_features, m.out_features, m.bias is not None, dev, dt, trace=traced, trace_decay=decay, **kw)
    else:
        if m.padding_mode != "zeros":
            raise TypeError(f"convert: {_qualname(m)} with padding_mode={m.padding_mode!r} is not supported")
        cls = onn.WSConv2d if ws else onn.Conv2d
        kw = dict(gain=m.gain is not None, eps=m.eps) if ws else {}
        new = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                  m.bias is not None, m.padding_mode, dev, dt, trace=traced, trace_decay=decay, **kw)
    with torch.no_grad():
        new.weight.copy_(m.weight)
        if m.bias is not None:
            new.bias.copy_(m.bias)
        if ws and m.gain is not None:
            new.gain.copy_(m.gain.reshape(new.gain.shape))
    return new


def _trace_decay_for(neuron):
    """The trace decay of a synapse followed by `neuron`: its leak 1 - 1/tau; 1 (a running sum) for IF."""
    return neuron.decay if neuron.tau < IF_TAU else 1.0


def synapse_trace_decay(keys, idx, neurons):
    """The trace decay of the synapse at keys[idx] in a model's module order, `neurons` mapping keys to the
    new LIF layers: the leak of the first neuron after it; for a synapse with none after it (the readout)
    the leak of the last one before it, as the paper's code decays the readout's input trace; 0.5 when the
    model has no neuron at all."""
    follow = next((neurons[k] for k in keys[idx + 1:] if k in neurons), None)
    if follow is None:
        follow = next((neurons[k] for k in reversed(keys[:idx]) if k in neurons), None)
    return _trace_decay_for(follow) if follow is not None else 0.5


def convert(model, tau=None, *, inplace=False):
    """Return `model` with its synapses and spiking neurons replaced by
    ottt_cuda's (weights kept). `tau` overrides every neuron's time constant.
    A synapse's trace decay is the leak 1 - 1/tau of the neuron layer that
    follows it in module order. A synapse with no neuron after it (the readout)
    takes the leak of the last neuron before it, as the paper's code and
    ottt_cuda's own models decay the readout's input trace (0.5 when the model
    has no neuron at all). Each neuron keeps SpikingJelly's detach_reset (its
    LIFNode default is False), which changes the gradients of mode "bptt" only."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0
                            or not math.isfinite(tau)):
        raise ValueError(f"tau must be a positive finite number or None, got {tau!r}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    model = model if inplace else copy.deepcopy(model)

    # First pass: the new neurons, in module order (also fixes the decays).
    order = []  # (parent, child name, full name, module)
    for full, m in model.named_modules():
        for cname, child in m.named_children():
            order.append((m, cname, f"{full}.{cname}" if full else cname, child))
    neurons = {}
    for parent, cname, full, child in order:
        if isinstance(child, onn.Stateful) or isinstance(child, (nn.Linear, nn.Conv2d)):
            continue
        new = _neuron(child, full, tau)
        if new is not None:
            neurons[full] = new
    synapses = [s for s in order if isinstance(s[3], (nn.Linear, nn.Conv2d)) and not isinstance(s[3], onn.Stateful)]
    if any(isinstance(s[3], nn.Conv2d) and s[3].weight.dim() != 4 for s in synapses):
        raise TypeError("convert: only 2-d convolutions are supported")
    names = [f for _, _, f, _ in order]
    first = True
    for parent, cname, full, m in synapses:
        decay = synapse_trace_decay(names, names.index(full), neurons)
        setattr(parent, cname, ottt_synapse(m, traced=not first, decay=decay))
        first = False
    for parent, cname, full, m in order:
        if full in neurons:
            setattr(parent, cname, neurons[full])
    return model
