"""R400 (recurrent, sWS input weights, per-sequence dropout): ottt_cuda's OTTT_A,
OTTT_O, SLTT, chunked OTTT_A and BPTT equal a plain-autograd reference written
here (replace-for-grad on the traces, as the paper's code), in float64; with the
dropout on the readout path only, and (feedback_dropout=True) also on the spikes
fed back to the recurrent synapse."""
import pytest
import torch
import torch.nn.functional as F

import ottt_cuda
from ottt_cuda.models import r400
from _firing import ModelWatch
from _compare import rel_err
from _reference import Heaviside, ReplaceForGrad, ref_loss, ref_standardize

T, B, TOL, ALPHA = 3, 2, 1e-8, 0.05
HIDDEN, IN = 24, 36


watch = ModelWatch()


@pytest.fixture(autouse=True)
def _every_model_fires():
    """The recurrent layer of every model a test runs fires at each step (else its comparison is vacuous)."""
    with watch.active():
        yield


def model(seed=0, feedback=False):
    torch.manual_seed(seed)
    m = r400(in_features=IN, hidden=HIDDEN, feedback_dropout=feedback).double()
    with torch.no_grad():  # livelier than N(0, 0.01) so that every path carries gradient
        m.rnn.recurrent.weight.normal_(0, 0.5)
        m.readout.weight.normal_(0, 0.3)
        m.rnn.input.bias.fill_(0.5)  # else only 4% fire at t = 1
    return watch(m)


def data(seed=1, sequence=True):
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.rand((T, B, 1, 6, 6) if sequence else (B, 1, 6, 6), generator=g, dtype=torch.float64)
    return x, torch.randint(0, 10, (B,), generator=g)


class RefR400:
    def __init__(self, m, mode):
        self.mode = mode
        self.lam = 1 - 1 / m.rnn.neuron.tau
        self.v_th, self.alpha, self.eps = m.rnn.neuron.v_th, m.rnn.neuron.alpha, m.rnn.input.eps
        self.params = {n: torch.nn.Parameter(p.detach().clone()) for n, p in m.named_parameters()}
        # feedback_dropout: the recurrent layer holds the (only) mask and drops the fed-back spikes too.
        self.feedback = m.rnn.dropout.p > 0
        self.mask = m.rnn.dropout.mask if self.feedback else m.dropout.mask
        self.v = self.s_prev = self.x_hat = self.s_hat = self.d_hat = None

    def _syn(self, fn, spike, trace):
        if self.mode == "bptt":
            return fn(spike)
        with torch.no_grad():
            out = fn(spike)
        return ReplaceForGrad.apply(fn(ReplaceForGrad.apply(spike, trace)), out)

    def _tr(self, old, new):
        lam = 0.0 if self.mode == "sltt" else self.lam
        return new.detach() if old is None else lam * old + new.detach()

    def step(self, x):
        p = self.params
        x = x.flatten(1)
        w_in = ref_standardize(p["rnn.input.weight"], p["rnn.input.gain"], self.eps)
        self.x_hat = self._tr(self.x_hat, x)
        cur = self._syn(lambda z: F.linear(z, w_in, p["rnn.input.bias"]), x, self.x_hat)
        if self.s_prev is not None:
            self.s_hat = self._tr(self.s_hat, self.s_prev)
            cur = cur + self._syn(lambda z: F.linear(z, p["rnn.recurrent.weight"]), self.s_prev, self.s_hat)
        v = torch.zeros_like(cur) if self.v is None else self.v
        h = self.lam * (v if self.mode == "bptt" else v.detach()) + cur
        s = Heaviside.apply(h - self.v_th, self.alpha)
        self.v = h - self.v_th * s.detach()
        d = s * self.mask
        fed_back = d if self.feedback else s
        self.s_prev = fed_back if self.mode == "bptt" else fed_back.detach()
        self.d_hat = self._tr(self.d_hat, d)
        return self._syn(lambda z: F.linear(z, p["readout.weight"], p["readout.bias"]), d, self.d_hat)

    def run(self, x, y, optimizer=None):
        osum, total = 0, 0
        for t in range(T):
            if optimizer:
                optimizer.zero_grad()
            out = self.step(x[t])
            loss = ref_loss(out, y, T, ALPHA)
            total = total + loss
            if self.mode != "bptt":
                loss.backward()
            if optimizer:
                optimizer.step()
            osum = osum + out.detach()
        if self.mode == "bptt":
            total.backward()
        return osum


def compare(m, ref, grads=True):
    worst = 0.0
    for n, p in m.named_parameters():
        e = ref.params[n].grad if grads else ref.params[n].detach()
        a = p.grad if grads else p.detach()
        assert e.abs().max() > 0, n
        worst = max(worst, rel_err(a, e))
    assert worst <= TOL
    return worst


@pytest.mark.parametrize("feedback", [False, True], ids=["readout_dropout", "feedback_dropout"])
@pytest.mark.parametrize("mode", ["ottt_a", "sltt", "bptt"])
def test_r400_matches_reference(mode, feedback):
    m = model(feedback=feedback)
    x, y = data()
    _, osum = ottt_cuda.train_step(m, x, y, None, T=T, mode=mode)
    mask = m.rnn.dropout.mask if feedback else m.dropout.mask
    assert mask is not None and (mask == 0).any()
    assert (m.dropout.mask if feedback else m.rnn.dropout.mask) is None  # one mask, in one place
    ref = RefR400(m, {"ottt_a": "ottt"}.get(mode, mode))
    ref_osum = ref.run(x, y)
    assert rel_err(osum, ref_osum) <= TOL
    compare(m, ref)


@pytest.mark.parametrize("feedback", [False, True], ids=["readout_dropout", "feedback_dropout"])
def test_r400_ottt_o_parameters_match_reference(feedback):
    m = model(feedback=feedback)
    x, y = data()
    torch.manual_seed(3)
    ottt_cuda.train_step(m, x, y, torch.optim.SGD(m.parameters(), lr=0.2, momentum=0.9), T=T, mode="ottt_o")
    start = model(feedback=feedback)
    ref = RefR400(start, "ottt")
    ref.mask = m.rnn.dropout.mask if feedback else m.dropout.mask
    ref.run(x, y, torch.optim.SGD(list(ref.params.values()), lr=0.2, momentum=0.9))
    for n, p in m.named_parameters():
        p0 = dict(start.named_parameters())[n].detach()
        assert rel_err(p.detach() - p0, ref.params[n].detach() - p0) <= TOL, n


@pytest.mark.parametrize("chunk", [2, 3])
def test_r400_chunked_equals_online(chunk):
    x, y = data()
    a, b = model(), model()
    torch.manual_seed(4)
    _, o1 = ottt_cuda.train_step(a, x, y, None, T=T)
    torch.manual_seed(4)
    _, o2 = ottt_cuda.train_step(b, x, y, None, T=T, chunk=chunk)
    assert rel_err(o2, o1) <= TOL
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert rel_err(q.grad, p.grad) <= TOL, n
