"""The models and training methods the benchmark compares, all on the same
architecture, weights and input.

Ours (ottt_cuda.train_step): ottt_a, ottt_o, ottt_a_chunk (K = 4), sltt, bptt
(fused multi-step LIF kernel, one backward over the whole sequence).
Peers, when SpikingJelly is installed (vgg11_ws only: its
spiking_vggws_ottt is the paper's VGG-11 sWS):
- sj_ottt: SpikingJelly's OTTT (OTTTLIFNode + OTTTSequential), backward at
  every step, one optimizer step at the end (OTTT_A, as its example).
- sj_bptt: the same VGG built with SpikingJelly's multi-step LIFNode
  (step_mode 'm', soft reset, detached reset, tau 2, sigmoid(4) surrogate);
  SpikingJelly 2 picks its LIF implementation itself (its torch kernel on CPU,
  native CUDA / Triton on GPU; SJ_LIF_CUDA_IMPLEMENTATION overrides).
"""
import importlib.util

import torch

from .. import models as _models
from ..training import step_loss, train_step

OURS = ("ottt_a", "ottt_o", "ottt_a_chunk", "sltt", "bptt")
PEERS = ("sj_ottt", "sj_bptt")
ALL_METHODS = OURS + PEERS
CHUNK = 4
LOSS_ALPHA = 0.05  # the paper's CE/MSE mix

# name -> (factory(num_classes), input shape, classes, SpikingJelly peer available)
MODELS = {
    "vgg11_ws": (lambda c: _models.vgg11_ws(num_classes=c), (3, 32, 32), 10, True),
    "r400": (lambda c: _models.r400(num_classes=c), (1, 28, 28), 10, False),
    # VGG-11 without sWS: plain convolutions, so the saved bytes are activations only
    "vgg11": (lambda c: _models.VGGWS(num_classes=c, ws=False), (3, 32, 32), 10, False),
    "vgg11f_ws": (lambda c: _models.vgg11f_ws(num_classes=c), (3, 32, 32), 10, False),
    "nf_resnet34": (lambda c: _models.nf_resnet34(num_classes=c), (3, 32, 32), 10, False),
}


def spikingjelly_available():
    return importlib.util.find_spec("spikingjelly") is not None


def available_methods(model_name):
    """Methods that can run on this model here (peers need SpikingJelly and a
    model it has; chunking needs a model without feedback between steps)."""
    out = [m for m in OURS if not (m == "ottt_a_chunk" and model_name == "vgg11f_ws")]
    if MODELS[model_name][3] and spikingjelly_available():
        out += list(PEERS)
    return out


def make_input(model_name, batch, device, seed=0):
    _, shape, classes, _ = MODELS[model_name]
    g = torch.Generator().manual_seed(seed)
    # Normalized-image-like values: random data, no data set needed.
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    return x, y


def _sj_neuron_kwargs():
    from spikingjelly.activation_based import surrogate

    # The paper's neuron (DESIGN.md section 1): tau 2, soft reset, decay_input
    # False, reset detached, sigmoid surrogate with alpha 4.
    return dict(tau=2.0, decay_input=False, v_reset=None, detach_reset=True,
                surrogate_function=surrogate.Sigmoid(alpha=4.0))


def build(method, model_name, device, seed=0):
    """(model, step(x, y, optimizer, T) -> loss tensor). The peers get our
    model's initial weights (same parameter names)."""
    factory, _, classes, _ = MODELS[model_name]
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
    if model_name != "vgg11_ws":
        raise ValueError(f"{method} runs only on vgg11_ws (SpikingJelly's spiking_vggws_ottt)")
    from spikingjelly.activation_based import functional, neuron
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
        def step(x, y, opt, T):
            # SpikingJelly's OTTT example: backward at every step, step the optimizer once.
            functional.reset_net(net)
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), device=x.device)
            for _ in range(T):
                out = net(x)
                loss = step_loss(out, y, T, LOSS_ALPHA)
                loss.backward()
                total += loss.detach()
            opt.step()
            return total
    else:
        def step(x, y, opt, T):
            functional.reset_net(net)
            opt.zero_grad(set_to_none=True)
            out = net(x.unsqueeze(0).expand(T, *x.shape).contiguous())  # [T, B, classes]
            loss = sum(step_loss(out[t], y, T, LOSS_ALPHA) for t in range(T))
            loss.backward()
            opt.step()
            return loss.detach()
    return net, step


def make_optimizer(model):
    # The paper's optimizer (SGD, momentum 0.9); its state is created in the warm-up step.
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
