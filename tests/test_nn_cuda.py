"""The layers and training modes on a CUDA device give the CPU's gradients
(float64, so that no spike flips between the two). Skipped without a GPU."""
import copy

import pytest
import torch

import ottt_cuda
from ottt_cuda.models import r400, vgg11_ws
from conftest import cuda_only
from _firing import fires

pytestmark = [pytest.mark.cuda, cuda_only]


def _grads(model, x, y, mode, **kw):
    ottt_cuda.train_step(model, x, y, None if mode != "ottt_o" else torch.optim.SGD(model.parameters(), lr=0.1),
                         T=3, mode=mode, **kw)
    return {n: (p.grad if mode != "ottt_o" else p.detach()).double().cpu() for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode,kw", [("ottt_a", {}), ("ottt_a", {"chunk": 2}), ("sltt", {}), ("bptt", {}),
                                     ("ottt_o", {})])
@pytest.mark.parametrize("make,shape", [(lambda: vgg11_ws(num_classes=10), (2, 3, 16, 16)),
                                        (lambda: r400(in_features=36, hidden=24, dropout=0.0), (2, 1, 6, 6))])  # no dropout: CPU and GPU draw masks differently
def test_cuda_matches_cpu(mode, kw, make, shape):
    torch.manual_seed(0)
    cpu = make().double()
    with torch.no_grad():
        for p in cpu.parameters():
            if p.dim() > 1:
                p.mul_(2.0)  # livelier weights so that every layer spikes at this small size
    gpu = copy.deepcopy(cpu).cuda()
    g = torch.Generator().manual_seed(1)
    x = 2.0 * torch.rand(shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (shape[0],), generator=g)
    want = fires(cpu, lambda: _grads(cpu, x, y, mode, **kw))  # every spiking layer fires (checked on the CPU)
    got = _grads(gpu, x.cuda(), y.cuda(), mode, **kw)
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=1e-9, atol=1e-11, msg=f"{mode} {name}")
