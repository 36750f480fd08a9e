"""SpikingJelly's own OTTT (spiking_vggws_ottt, OTTTLIFNode, OTTTSequential)
against ottt_cuda's vgg11_ws with the same weights: gradients after T steps
of OTTT_A in float64."""
import pytest
import torch

import ottt_cuda
from ottt_cuda.models import vgg11_ws
from _compare import rel_err

sj = pytest.importorskip("spikingjelly.activation_based.model.spiking_vggws_ottt",
                         reason="spikingjelly is not installed (pip install spikingjelly)")
from spikingjelly.activation_based import functional  # noqa: E402

T, B, CLASSES, ALPHA = 3, 2, 5, 0.05


def paper_loss(out, y):
    """The loss of SpikingJelly's OTTT example and of the paper (supplementary C.2.2), written
    here, not taken from ottt_cuda: ((1 - a) CE(out, y) + a MSE(out, onehot(y))) / T, with CE
    as the mean of -log softmax at the label and MSE as the mean over all B * C entries."""
    log_p = out - out.logsumexp(dim=1, keepdim=True)
    ce = -log_p[torch.arange(out.shape[0]), y].mean()
    onehot = torch.zeros_like(out)
    onehot[torch.arange(out.shape[0]), y] = 1.0
    mse = ((out - onehot) ** 2).mean()
    return ((1 - ALPHA) * ce + ALPHA * mse) / T


def sj_ottt_a(net, x, y):
    """OTTT_A as in SpikingJelly's example: backward at every step, summed output."""
    functional.reset_net(net)
    net.train()
    osum = 0
    for _ in range(T):
        out = net(x)
        loss = paper_loss(out, y)
        loss.backward()
        osum = osum + out.detach()
    return osum


def test_vgg11_ws_gradients_equal_spikingjelly(hw=8):
    torch.manual_seed(0)
    net = sj.ottt_spiking_vggws(num_classes=CLASSES).double()
    with torch.no_grad():  # gains of 2 keep the deep layers firing within T = 3 steps at this tiny size
        for name, p in net.named_parameters():
            if name.endswith("gain"):
                p.fill_(2.0)
    model = vgg11_ws(num_classes=CLASSES).double()
    model.load_state_dict(net.state_dict())
    g = torch.Generator().manual_seed(1)
    x = 3.0 * torch.randn(B, 3, hw, hw, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (B,), generator=g)

    ref_osum = sj_ottt_a(net, x, y)
    _, osum = ottt_cuda.train_step(model, x, y, None, T=T, mode="ottt_a", loss_alpha=ALPHA)
    assert osum.abs().max() > 0
    assert rel_err(osum, ref_osum) <= 1e-8
    sj_params = dict(net.named_parameters())
    errs = {n: rel_err(p.grad, sj_params[n].grad) for n, p in model.named_parameters()}
    assert all(sj_params[n].grad.abs().max() > 0 for n in errs)
    assert max(errs.values()) <= 1e-8, errs
