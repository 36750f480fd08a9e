"""The paper's models: structure, initialization, and that every training mode runs."""
import math

import pytest
import torch

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.models import VGGFWS, VGGWS, nf_resnet34, r400, vgg11_ws, vgg11f_ws
from test_equivalence_reference import rel_err


def test_vgg11_ws_structure_and_init():
    torch.manual_seed(0)
    m = vgg11_ws(num_classes=10)
    syn = [x for x in m.modules() if isinstance(x, (onn.Conv2d, onn.Linear))]
    assert [s.out_channels for s in syn[:-1]] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert not syn[0].trace and all(s.trace for s in syn[1:])
    assert all(isinstance(s, onn.WSConv2d) for s in syn[:-1]) and type(syn[-1]) is onn.Linear
    assert sum(isinstance(x, torch.nn.AvgPool2d) for x in m.modules()) == 3
    assert all(s.c == 2.74 for s in m.modules() if isinstance(s, onn.Scale))
    w = syn[1].weight  # kaiming normal, fan_out, relu: std = sqrt(2 / (out * 9))
    assert w.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.05)
    assert syn[-1].weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert all((s.bias == 0).all() for s in syn) and all((s.gain == 1).all() for s in syn[:-1])
    assert m.classifier[2].in_features == 512


def test_vgg11f_feedback_conv_zero_init_then_trained():
    torch.manual_seed(0)
    m = VGGFWS([8, "A", 16], num_classes=4).double()
    assert m.fb_conv.in_channels == 16 and m.fb_conv.out_channels == 8 and (m.fb_conv.weight == 0).all()
    torch.manual_seed(0)
    plain = VGGWS([8, "A", 16], num_classes=4).double()
    x = 3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([1, 2])
    # Zero feedback weights: the forward equals the plain VGG's.
    _, o1 = ottt_cuda.train_step(m, x, y, None, T=3)
    _, o2 = ottt_cuda.train_step(plain, x, y, None, T=3)
    assert rel_err(o1, o2) <= 1e-12
    assert m.fb_conv.weight.grad.abs().max() > 0  # the feedback synapse learns from its trace
    m.zero_grad()
    ottt_cuda.train_step(m, x, y, None, T=3, mode="bptt")  # step-by-step BPTT through the feedback
    assert m.fb_conv.weight.grad.abs().max() > 0
    with pytest.raises(ValueError, match="chunk"):
        ottt_cuda.train_step(m, x, y, None, T=3, chunk=2)
    with torch.no_grad():
        m.fb_conv.weight.normal_(0, 0.3)
    _, o3 = ottt_cuda.train_step(m, x, y, None, T=3)
    assert rel_err(o3, o2) > 1e-6
    assert vgg11f_ws().fb_conv.in_channels == 512


@pytest.mark.parametrize("mode", ["ottt_a", "ottt_o", "sltt", "sltt_k", "bptt"])
def test_r400_runs_every_mode(mode):
    torch.manual_seed(0)
    m = r400()
    assert isinstance(m.rnn.input, onn.WSLinear) and m.rnn.recurrent.weight.shape == (400, 400)
    assert m.dropout.p == 0.2
    x = torch.rand(2, 1, 28, 28)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss, out = ottt_cuda.train_step(m, x, torch.tensor([1, 2]), opt, T=2, mode=mode,
                                     k=1 if mode == "sltt_k" else None)
    assert torch.isfinite(loss) and out.shape == (2, 10)


def test_nf_resnet34_structure_and_a_training_step():
    torch.manual_seed(0)
    m = nf_resnet34(num_classes=10)
    blocks = list(m.blocks)
    assert len(blocks) == 16 and sum(b.shortcut is not None for b in blocks) == 3  # stage 1 keeps identity skips
    # beta from the expected variance: 1 at the start, +alpha^2 per block, reset after transitions.
    assert blocks[0].beta == 1.0
    assert blocks[1].beta == pytest.approx(math.sqrt(1 + 0.04))
    assert blocks[2].beta == pytest.approx(math.sqrt(1 + 0.08))
    assert blocks[3].beta == pytest.approx(math.sqrt(1 + 0.12))  # first block of stage 2
    assert blocks[4].beta == pytest.approx(math.sqrt(1 + 0.04))
    assert not m.stem.trace
    n_params = sum(p.numel() for p in m.parameters())
    assert 21e6 < n_params < 22.5e6
    x = torch.randn(1, 3, 32, 32)
    loss, out = ottt_cuda.train_step(m, x, torch.tensor([3]), None, T=1)
    assert torch.isfinite(loss) and out.shape == (1, 10)
    assert m.stem.weight.grad is not None and m.head[3].weight.grad is not None
