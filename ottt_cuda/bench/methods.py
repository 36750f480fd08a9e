"""The models and training methods the benchmarks compare, all on the same
architecture, weights and input. The one definition of each model and of each
SpikingJelly peer: the main job and the scripts in benchmarks/ build them here.

Ours (ottt_cuda.train_step): ottt_a, ottt_o, ottt_a_chunk (K = 4), sltt, bptt
(fused multi-step LIF kernel, one backward over the whole sequence).
Peers, when SpikingJelly is installed (PEERS_OF says which model has which):
- sj_ottt: SpikingJelly's OTTT (OTTTLIFNode + OTTTSequential), backward at
  every step, one optimizer step at the end (OTTT_A, as its example;
  sj_ottt_step). On vgg11_ws its spiking_vggws_ottt (the paper's VGG-11 sWS),
  on mlp784 OTTTSequential(Flatten, Linear, OTTTLIFNode, Linear) (sj_mlp784).
- sj_bptt: the same VGG built with SpikingJelly's multi-step LIFNode
  (step_mode 'm', soft reset, detached reset, tau 2, sigmoid(4) surrogate);
  SpikingJelly 2 picks its LIF implementation itself (its torch kernel on CPU,
  native CUDA / Triton on GPU; SJ_LIF_CUDA_IMPLEMENTATION overrides).
- sj_bptt_memopt: sj_bptt with SpikingJelly 2's memory optimizer
  (memopt.optimize_memory: level 1 = gradient checkpointing of every layer,
  whose spike input is stored in 1 bit; level 4 on CUDA adds its searches over
  temporal splits and unwrapping, which measure CUDA peak memory and so need
  CUDA). Exact BPTT, so before it is timed its gradients are checked against
  plain sj_bptt's on the same weights and input (check_gradients).
"""
import importlib.util

import torch

from .. import models as _models
from ..training import step_loss, train_step

OURS = ("ottt_a", "ottt_o", "ottt_a_chunk", "sltt", "bptt")
PEERS = ("sj_ottt", "sj_bptt", "sj_bptt_memopt")
ALL_METHODS = OURS + PEERS
CHUNK = 4
LOSS_ALPHA = 0.05  # the paper's CE/MSE mix



def mlp784(num_classes=10):
    """784-400-10 without a recurrent synapse: Flatten, Linear(784, 400) (no trace: its input
    is the image, the same at every step), LIF, Linear(400, classes)."""
    from .. import nn as onn

    return torch.nn.Sequential(torch.nn.Flatten(1), onn.Linear(784, 400, trace=False), onn.LIF(tau=2.0),
                               onn.Linear(400, num_classes))


# name -> (factory(num_classes), input shape, classes)
MODELS = {
    "vgg11_ws": (lambda c: _models.vgg11_ws(num_classes=c), (3, 32, 32), 10),
    "r400": (lambda c: _models.r400(num_classes=c), (1, 28, 28), 10),
    # VGG-11 without sWS: plain convolutions, so the saved bytes are activations only
    "vgg11": (lambda c: _models.VGGWS(num_classes=c, ws=False), (3, 32, 32), 10),
    "vgg11f_ws": (lambda c: _models.vgg11f_ws(num_classes=c), (3, 32, 32), 10),
    "nf_resnet34": (lambda c: _models.nf_resnet34(num_classes=c), (3, 32, 32), 10),
    "mlp784": (mlp784, (1, 28, 28), 10),
}
# The SpikingJelly peers each model has (SpikingJelly's OTTT layers cannot express R400's recurrent
# synapse or VGG-11F's feedback; its VGG is the paper's sWS one).
PEERS_OF = {"vgg11_ws": PEERS, "mlp784": ("sj_ottt",)}


def spikingjelly_available():
    return importlib.util.find_spec("spikingjelly") is not None


def memopt_available():
    """SpikingJelly >= 2.0 ships activation_based.memopt; older releases do not."""
    if not spikingjelly_available():
        return False
    try:
        return importlib.util.find_spec("spikingjelly.activation_based.memopt") is not None
    except ImportError:
        return False


def available_methods(model_name):
    """Methods that can run on this model here (peers need SpikingJelly and a
    model it has, sj_bptt_memopt its memopt package; chunking needs a model
    without feedback between steps)."""
    out = [m for m in OURS if not (m == "ottt_a_chunk" and model_name == "vgg11f_ws")]
    if spikingjelly_available():
        out += [m for m in PEERS_OF.get(model_name, ()) if m != "sj_bptt_memopt" or memopt_available()]
    return out


def make_input(model_name, batch, device, seed=0):
    _, shape, classes = MODELS[model_name]
    g = torch.Generator().manual_seed(seed)
    # Normalized-image-like values: random data, no data set needed.
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    return x, y


def _sj_neuron_kwargs():
    from spikingjelly.activation_based import surrogate

    # The neuron ottt_cuda's LIF implements, the paper's: membrane decay 1/tau with tau 2, the
    # input added undecayed (decay_input False), soft reset (subtract the threshold, v_reset None)
    # whose reset is kept out of the gradient (detach_reset), sigmoid surrogate with alpha 4.
    return dict(tau=2.0, decay_input=False, v_reset=None, detach_reset=True,
                surrogate_function=surrogate.Sigmoid(alpha=4.0))


def build(method, model_name, device, seed=0, example=None):
    """(model, step(x, y, optimizer, T) -> loss tensor). The peers get our
    model's initial weights (same parameter names). sj_bptt_memopt needs
    example=(x, T): memopt probes the model with one representative forward.
    step(x, y, None, T) computes the gradients without an optimizer step."""
    factory, _, classes = MODELS[model_name]
    torch.manual_seed(seed)
    ours = factory(classes).to(device)
    if method in OURS:
        mode = "ottt_a" if method == "ottt_a_chunk" else method
        chunk = CHUNK if method == "ottt_a_chunk" else None

        def step(x, y, opt, T):
            loss, _ = train_step(ours, x, y, opt, T=T, mode=mode, chunk=chunk, loss_alpha=LOSS_ALPHA)
            return loss

        return ours, step
    if method not in PEERS:
        raise ValueError(f"unknown method {method!r}; one of {ALL_METHODS}")
    if method not in PEERS_OF.get(model_name, ()):
        raise ValueError(f"{method} runs only on {' or '.join(m for m, p in PEERS_OF.items() if method in p)}")
    if method == "sj_bptt_memopt" and example is None:
        raise ValueError("sj_bptt_memopt needs example=(x, T): memopt probes the model with a representative input")
    from spikingjelly.activation_based import functional, neuron

    if model_name == "mlp784":
        net = sj_mlp784(ours)
    else:
        from spikingjelly.activation_based.model import spiking_vggws_ottt as sjv

        if method == "sj_ottt":
            net = sjv.ottt_spiking_vggws(num_classes=classes, **_sj_neuron_kwargs())
        else:
            net = sjv.ottt_spiking_vggws(spiking_neuron=neuron.LIFNode, num_classes=classes, **_sj_neuron_kwargs())
            functional.set_step_mode(net, "m")
        net.load_state_dict(ours.state_dict())
    net = net.to(device)
    del ours

    if method == "sj_ottt":
        return net, sj_ottt_step(net)

    def sequence_input(x, T):
        return x.unsqueeze(0).expand(T, *x.shape).contiguous()

    if method == "sj_bptt_memopt":
        _optimize_memory(net, sequence_input(example[0], example[1]), torch.device(device))

    def step(x, y, opt, T):
        functional.reset_net(net)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        out = net(sequence_input(x, T))  # [T, B, classes]
        loss = sum(step_loss(out[t], y, T, LOSS_ALPHA) for t in range(T))
        loss.backward()
        if opt is not None:
            opt.step()
        return loss.detach()
    return net, step


def sj_mlp784(ours):
    """SpikingJelly's OTTT version of mlp784 with the weights of `ours` (an mlp784):
    OTTTSequential(Flatten, Linear, OTTTLIFNode, Linear), the same parameter names."""
    from spikingjelly.activation_based import layer, neuron

    net = layer.OTTTSequential(torch.nn.Flatten(1), torch.nn.Linear(784, 400), neuron.OTTTLIFNode(**_sj_neuron_kwargs()),
                               torch.nn.Linear(400, ours[3].weight.shape[0]))
    net.load_state_dict(ours.state_dict())  # keys 1.weight, 1.bias, 3.weight, 3.bias
    return net.to(ours[1].weight.device)


def sj_ottt_step(net, loss_alpha=LOSS_ALPHA):
    """step(x, y, opt, T) of SpikingJelly's OTTT as its example trains: the network reset, then
    T forward passes on the same input, each followed by the backward of its loss (gradients
    accumulate over the steps), and one optimizer step at the end. Returns the summed loss.
    opt None: the gradients only."""
    from spikingjelly.activation_based import functional

    def step(x, y, opt, T):
        functional.reset_net(net)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=x.device)
        for _ in range(T):
            loss = step_loss(net(x), y, T, loss_alpha)
            loss.backward()
            total += loss.detach()
        if opt is not None:
            opt.step()
        return total
    return step


def memopt_level(device):
    """Level 1 (checkpointing + 1-bit spikes) on the CPU: levels 2-4 search by
    measuring CUDA peak memory and raise without CUDA. Level 4 (all stages) on CUDA."""
    return 4 if torch.device(device).type == "cuda" else 1


def _optimize_memory(net, example_seq, device):
    """SpikingJelly's VGG is one flat Sequential; memopt checkpoints modules of
    a given type. Regroup it into one block per layer, from the previous LIF's
    spikes to this layer's LIF (scale, pool, conv, LIF), so that every block
    but the first has a binary input, which memopt stores in 1 bit. Parameters
    keep their order (check_gradients compares them in order)."""
    from spikingjelly.activation_based import functional, layer, memopt, neuron

    class SpikeInputBlock(torch.nn.Sequential):
        pass

    blocks, current = [], []
    for module in net.features:
        current.append(module)
        if isinstance(module, neuron.BaseNode):
            blocks.append(SpikeInputBlock(*current))
            current = []
    net.features = torch.nn.Sequential(*blocks, *current)

    def example_forward(model):
        functional.reset_net(model)
        return model(example_seq)

    # split_fn / can_chunk as SpikingJelly's own SEW-ResNet builder passes them (used from level 2 on):
    # a block splits into its layers; convolutions and neurons (state carried by the wrapper) chunk over T.
    memopt.optimize_memory(net, SpikeInputBlock, example_forward, level=memopt_level(device),
                           split_fn=lambda m: tuple(m) if isinstance(m, SpikeInputBlock) else (),
                           can_chunk=lambda m: isinstance(m, (layer.Conv2d, neuron.BaseNode)))
    functional.reset_net(net)


# method -> the method whose gradients it must reproduce exactly
REFERENCES = {"sj_bptt_memopt": "sj_bptt"}
# Per parameter tensor, max |g - g_ref| <= GRAD_RTOL * max |g_ref|. Recomputing the same
# float32 ops (checkpointing) and storing 0/1 spikes in 1 bit are exact; what may differ is
# summation order, ~1e-6 relative. A wrong gradient (a weight off by 1%, a dropped time step,
# a spike stored wrongly) moves gradients by 1e-2 relative or more.
GRAD_RTOL = 1e-4


class GradientMismatch(AssertionError):
    """A method's gradients differ from its reference's: its timings would be meaningless."""


def _gradients(model, step, x, y, T):
    model.zero_grad(set_to_none=True)
    step(x, y, None, T)
    grads = [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    return grads


def check_gradients(method, model, step, model_name, device, x, y, T, seed=0):
    """None for a method without a reference; else checks that `model`'s
    gradients equal the reference method's on the same weights (same seed) and
    input, raising GradientMismatch otherwise, and returns what was compared."""
    ref_method = REFERENCES.get(method)
    if ref_method is None:
        return None
    ref_model, ref_step = build(ref_method, model_name, device, seed=seed)
    ref_model.train()
    expected = _gradients(ref_model, ref_step, x, y, T)
    del ref_model, ref_step
    got = _gradients(model, step, x, y, T)
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        raise GradientMismatch(f"{method}: parameters differ from {ref_method}'s "
                               f"({[tuple(g.shape) for g in got]} vs {[tuple(e.shape) for e in expected]})")
    worst, worst_i = 0.0, 0
    for i, (g, e) in enumerate(zip(got, expected)):
        err = float((g - e).abs().max()) / max(float(e.abs().max()), 1e-30)
        err = err if err == err else float("inf")  # NaN counts as the worst
        if err > worst:
            worst, worst_i = err, i
    if not worst <= GRAD_RTOL:
        raise GradientMismatch(f"{method} T={T}: gradients differ from {ref_method}'s on the same weights and "
                               f"input: max |g - g_ref| / max |g_ref| = {worst:.3g} (parameter #{worst_i}) "
                               f"> {GRAD_RTOL:g}")
    return {"reference": ref_method, "max_rel_err": worst, "rtol": GRAD_RTOL, "passed": True}


def make_optimizer(model):
    # The paper's optimizer (SGD, momentum 0.9); its state is created in the warm-up step.
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
