"""Small float64 chains (nn.Sequential of ottt_cuda Linear / LIF and Flatten / Identity) and their inputs,
shared by the tests of the autograd-free step (test_chain_step.py) and of the CUDA-graph step
(test_cuda_graph_step.py). Firing is not forced: the inputs (scaled normal) make every LIF fire at
some steps and not at others, which the equality tests need to mean anything."""
import torch
import torch.nn as tnn

from ottt_cuda import nn as onn


def mlp(seed=0):
    torch.manual_seed(seed)
    # The paper's real-valued input layer (no trace), the LIF handing its trace to the readout.
    return tnn.Sequential(tnn.Flatten(1), onn.Linear(12, 9, trace=False), onn.LIF(tau=2.0),
                          onn.Linear(9, 4)).double()


def deep(seed=0, v_reset=0.0):
    torch.manual_seed(seed)
    # Traced input layer, hard reset, other surrogates, decay_input, Identity and Flatten between
    # an LIF and its synapse, a Linear without bias.
    return tnn.Sequential(onn.Linear(8, 7), onn.LIF(tau=3.0, v_reset=v_reset, surrogate="rectangle", v_th=0.6),
                          onn.Linear(7, 6), onn.LIF(decay_input=True, surrogate="atan", alpha=2.0, v_th=0.4),
                          tnn.Identity(), tnn.Flatten(1), onn.Linear(6, 3, bias=False)).double()


def lif_first(seed=0):
    torch.manual_seed(seed)
    # The input is a current into an LIF: no gradient below the first Linear.
    return tnn.Sequential(onn.LIF(v_th=0.5), onn.Linear(8, 5), onn.LIF(surrogate="triangle", v_th=0.3),
                          onn.Linear(5, 3)).double()


def r400_small(seed=0, feedback=True, dropout=0.2):
    # models.R400 at a small size (36 -> 24 recurrent -> 3): sWS input synapse, recurrent synapse,
    # the per-sequence dropout mask inside the recurrent layer (feedback) or after it. Livelier weights
    # than the paper's N(0, 0.01), so that every path carries gradient.
    from ottt_cuda.models import r400

    torch.manual_seed(seed)
    m = r400(num_classes=3, in_features=36, hidden=24, dropout=dropout, feedback_dropout=feedback).double()
    with torch.no_grad():
        m.rnn.recurrent.weight.normal_(0, 0.5)
        m.readout.weight.normal_(0, 0.3)
        m.rnn.input.bias.fill_(0.5)
    return m


def ws_mlp(seed=0):
    torch.manual_seed(seed)
    # An sWS input synapse and a per-sequence Dropout between the LIF and the readout.
    return tnn.Sequential(tnn.Flatten(1), onn.WSLinear(12, 9), onn.LIF(tau=2.0), onn.Dropout(0.3),
                          onn.Linear(9, 4)).double()


def vgg_small(seed=0, dropout=0.0, fc_hw=1):
    # models.VGGWS at a small size (2x8x8 input; 4, pool, 6, 6, pool, 8 channels -> 3 classes): sWS
    # convolutions, the untraced first one, LIF -> Scale(2.74) -> conv hand-overs, average pooling, the
    # adaptive pool, the readout. Gains 3 and biases 0.3 so that every layer fires.
    from ottt_cuda.models.vgg import VGGWS

    torch.manual_seed(seed)
    m = VGGWS([4, "A", 6, 6, "A", 8], num_classes=3, in_channels=2, fc_hw=fc_hw, dropout=dropout).double()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gain"):
                p.fill_(3.0)
            elif name.endswith("bias"):
                p.fill_(0.3)
            else:
                p.normal_(0, 0.5)
    return m


def make_input(shape, T, B, seed=1, sequence=True, device="cpu", dtype=torch.float64):
    """x [T, B, *shape] (or [B, *shape] when not a sequence) and class targets in 0..2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((T, B, *shape) if sequence else (B, *shape), generator=g, dtype=torch.float64) * 1.5
    y = torch.randint(0, 3, (B,), generator=g)
    return x.to(device, dtype), y.to(device)


def states(model):
    """Clones of every module's membrane, trace, previous spikes and dropout mask (None where it has none).
    A synapse's trace is a_hat * _a_scale: a trace handed over by an LIF through Scale(c) is kept as the
    trace of the spikes with _a_scale = c (nn._handoff), the CUDA-graph step keeps that of c * spikes."""
    def value(m, n):
        t = getattr(m, n, None)
        if t is None:
            return None
        return t * m._a_scale if n == "a_hat" else t.clone()
    return [value(m, n) for m in model.modules() for n in ("v", "a_hat", "s_prev", "mask")]
