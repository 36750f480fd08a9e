"""convert(): SpikingJelly and snnTorch models give the same forward outputs
after conversion; unsupported neurons are named in the error."""
import pytest
import torch
import torch.nn as nn

import ottt_cuda
from ottt_cuda import nn as onn
from _firing import fires

T = 4


def run_steps(model, x_seq, reset):
    reset(model)
    with torch.no_grad():
        return torch.stack([model(x) for x in x_seq])


def run_steps_per_layer(model, x_seq, reset, layers):
    """run_steps, plus the outputs [T, ...] of model[i] for i in `layers`: a difference in a hidden spiking
    layer need not reach the output (a few flipped spikes may leave the next layer's spikes unchanged)."""
    seen = {i: [] for i in layers}
    hooks = [model[i].register_forward_hook(lambda m, a, out, i=i: seen[i].append(
        (out[0] if isinstance(out, (tuple, list)) else out).detach().clone())) for i in layers]
    try:
        out = run_steps(model, x_seq, reset)
    finally:
        for h in hooks:
            h.remove()
    return [out] + [torch.stack(seen[i]) for i in layers]


def test_convert_plain_torch_layers_keeps_weights_and_first_untraced():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 16, 3))
    c = ottt_cuda.convert(m)
    assert isinstance(c[0], onn.Conv2d) and not c[0].trace
    assert isinstance(c[2], onn.Linear) and c[2].trace
    assert torch.equal(c[0].weight, m[0].weight) and torch.equal(c[2].bias, m[2].bias)
    assert isinstance(m[0], nn.Conv2d) and not isinstance(m[0], onn.Conv2d)  # original untouched
    x = torch.randn(2, 2, 4, 4)
    torch.testing.assert_close(c(x), m(x))


def test_convert_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        ottt_cuda.convert("not a model")
    with pytest.raises(ValueError, match="tau"):
        ottt_cuda.convert(nn.Linear(2, 2), tau=-1.0)



def _spikingjelly():
    return pytest.importorskip("spikingjelly.activation_based", reason="spikingjelly is not installed")


# LIFNode-hard-decay (v_reset = 0.1): SpikingJelly's hard-reset membrane starts at v_reset, so must ottt_cuda's.
@pytest.mark.parametrize("kind", ["LIFNode", "OTTTLIFNode", "IFNode", "LIFNode-hard0-decay", "ATan",
                                  "LIFNode-hard-decay"])
def test_convert_spikingjelly_same_forward(kind):
    _spikingjelly()
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    def make():
        if kind == "LIFNode":
            return neuron.LIFNode(tau=3.0, decay_input=False, v_threshold=0.8)
        if kind == "OTTTLIFNode":
            return neuron.OTTTLIFNode(tau=2.0)
        if kind == "IFNode":
            return neuron.IFNode(v_threshold=1.2, v_reset=None)
        if kind == "ATan":
            return neuron.LIFNode(tau=2.0, decay_input=False, surrogate_function=surrogate.ATan(alpha=3.0))
        return neuron.LIFNode(tau=1.5, decay_input=True, v_reset=0.0 if kind == "LIFNode-hard0-decay" else 0.1)

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 6, 3, padding=1), make(), layer.AvgPool2d(2), layer.Flatten(1),
                        layer.WSLinear(6 * 16, 8), make(), nn.Linear(8, 3)).double()
    with torch.no_grad():  # weights that make both spiking layers fire (default init leaves the second silent)
        net[0].weight.normal_(0, 0.6)
        net[0].bias.fill_(1.2)
        net[4].gain.fill_(4.0)
        net[4].bias.fill_(1.0)
    conv = ottt_cuda.convert(net)
    assert sum(isinstance(m, onn.LIF) for m in conv.modules()) == 2
    assert isinstance(conv[4], onn.WSLinear)
    x_seq = 2.0 * torch.rand(T, 3, 2, 8, 8, dtype=torch.float64)
    # SpikingJelly's OTTT neuron returns [spike, trace] in training mode; compare in eval mode.
    net.eval()
    conv.eval()
    expected = run_steps_per_layer(net, x_seq, functional.reset_net, (1, 5))
    got = fires(conv, lambda: run_steps_per_layer(conv, x_seq, ottt_cuda.reset, (1, 5)))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_convert_spikingjelly_vgg_keeps_gradients_untraced_input():
    _spikingjelly()
    from spikingjelly.activation_based.model import spiking_vggws_ottt as sv

    net = sv.ottt_spiking_vggws(num_classes=4)
    conv = ottt_cuda.convert(net)
    synapses = [m for m in conv.modules() if isinstance(m, onn.Conv2d | onn.Linear)]
    assert not synapses[0].trace and all(s.trace for s in synapses[1:])
    assert all(isinstance(s, onn.WSConv2d) for s in synapses[:-1])


def test_convert_unsupported_spikingjelly_neuron_is_named():
    _spikingjelly()
    from spikingjelly.activation_based import neuron

    net = nn.Sequential(nn.Linear(3, 3), neuron.ParametricLIFNode())
    with pytest.raises(TypeError, match=r"ParametricLIFNode.*'1'"):
        ottt_cuda.convert(net)


# The (reset_mechanism, reset_delay) combinations ottt_cuda's LIF computes exactly (convert._snn_reset derives
# them from snnTorch's Leaky.forward): reset to zero either way, subtraction only without leak (beta = 1).
_SNN_EXACT = [("zero", True, 0.7, 0.5), ("zero", False, 0.7, 0.5), ("subtract", True, 1.0, 1.0)]


class _AsDouble(nn.Module):
    def forward(self, x):
        return x.double()


@pytest.mark.filterwarnings("ignore:LIF\\(detach_reset=False\\) in mode")  # expected: forward in mode "ottt"
@pytest.mark.parametrize("reset,delay,beta1,beta2", _SNN_EXACT)
def test_convert_snntorch_same_forward(reset, delay, beta1, beta2):
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 12),
                        snn.Leaky(beta=beta1, threshold=0.9, init_hidden=True, reset_mechanism=reset,
                                  reset_delay=delay),
                        _AsDouble(),  # snnTorch's spikes are float32 whatever the membrane's dtype
                        nn.Linear(12, 5),
                        snn.Leaky(beta=beta2, init_hidden=True, reset_mechanism=reset, reset_delay=delay),
                        _AsDouble(),
                        nn.Linear(5, 3)).double()
    leak = beta1 < 1.0
    with torch.no_grad():  # weights that make both spiking layers fire (default init leaves the second silent)
        net[0].weight.normal_(0, 0.5)
        net[0].bias.fill_(0.5 if leak else -0.2)
        net[3].weight.normal_(0, 0.8)
        net[3].bias.fill_(0.6 if leak else 0.1)
    conv = ottt_cuda.convert(net)
    lifs = [m for m in conv.modules() if isinstance(m, onn.LIF)]
    assert len(lifs) == 2 and lifs[0].v_th == pytest.approx(0.9)
    assert [lif.v_reset for lif in lifs] == [0.0 if reset == "zero" else None] * 2
    # Without reset_delay snnTorch's reset term is the undetached spike; with it, the detached mem_reset.
    assert [lif.detach_reset for lif in lifs] == [delay] * 2
    # snnTorch's mem = beta * mem + input: the leak is beta.
    assert [lif.decay for lif in lifs] == pytest.approx([beta1, beta2])
    x_seq = 1.5 * torch.rand(2 * T, 4, 10, dtype=torch.float64)

    def reset_snn(model):
        for m in model.modules():
            if isinstance(m, snn.Leaky):
                m.reset_hidden()

    expected = run_steps_per_layer(net, x_seq, reset_snn, (2, 5))
    got = fires(conv, lambda: run_steps_per_layer(conv, x_seq, ottt_cuda.reset, (2, 5)))
    # Spikes equal exactly; the output up to the rounding of beta -> tau -> 1 - 1/tau.
    assert torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)


# The combinations it cannot express: convert names the module's path, the option and what to use instead.
@pytest.mark.parametrize("kw,option", [
    (dict(reset_mechanism="subtract", reset_delay=False), r"reset_mechanism='subtract', reset_delay=False"),
    (dict(reset_mechanism="subtract", reset_delay=True), r"reset_mechanism='subtract', reset_delay=True"),
    (dict(reset_mechanism="none", reset_delay=True), r"reset_mechanism='none'"),
    (dict(reset_mechanism="none", reset_delay=False), r"reset_mechanism='none'"),
    (dict(reset_mechanism="zero", reset_delay=False, threshold=-0.5), r"threshold=-0.5"),
    (dict(reset_mechanism="zero", reset_delay=True, graded_spikes_factor=2.0), r"graded_spikes_factor"),
    (dict(reset_mechanism="zero", reset_delay=True, inhibition=True), r"inhibition"),
])
def test_convert_snntorch_inexpressible_reset_is_named(kw, option):
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    net = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Identity(), snn.Leaky(beta=0.7, init_hidden=True, **kw)))
    with pytest.raises(TypeError, match=r"'1\.1'.*" + option + r".*(use|build it with) "):
        ottt_cuda.convert(net)


def test_convert_snntorch_subtract_without_delay_differs_from_soft_reset():
    """Why subtract/reset_delay=False is refused: snnTorch's Leaky does not fire a membrane still above threshold
    after a reset, the soft-reset LIF does (hand-computed: beta 0.5, threshold 1, input 3 then 0)."""
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    leaky = snn.Leaky(beta=0.5, threshold=1.0, init_hidden=True, reset_mechanism="subtract", reset_delay=False)
    lif = onn.LIF(tau=2.0, v_th=1.0)
    x = [torch.tensor([3.0]), torch.tensor([0.0])]
    # step 1: h = 3 fires, U = 2 (still above 1). step 2: snnTorch h = 1 + 0 - 1 = 0 -> 0; LIF h = 1.0 -> 0 ...
    # step 2 with input 0.6: snnTorch h = 1 + 0.6 - 1 = 0.6 -> 0; LIF h = 1.6 > 1 -> 1.
    x[1] = torch.tensor([0.6])
    assert [leaky(v).item() for v in x] == [1.0, 0.0]
    assert [lif(v).item() for v in x] == [1.0, 1.0]


def test_convert_snntorch_unsupported_configurations_are_named():
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed")
    with pytest.raises(TypeError, match=r"reset_delay.*|'1'"):
        ottt_cuda.convert(nn.Sequential(nn.Linear(3, 3), snn.Leaky(beta=0.5, init_hidden=True)))
    with pytest.raises(TypeError, match="'1'.*init_hidden"):
        ottt_cuda.convert(nn.Sequential(nn.Linear(3, 3), snn.Leaky(beta=0.5, reset_delay=False)))
    with pytest.raises(TypeError, match="Synaptic"):
        ottt_cuda.convert(nn.Sequential(nn.Linear(3, 3), snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True)))
