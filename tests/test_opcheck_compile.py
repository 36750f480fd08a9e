"""torch.library.opcheck on every compiled op (schema, fake kernel, autograd
registration, AOT dispatch) and torch.compile over the public ops."""
import pytest
import torch

import ottt_cuda
from conftest import using_backend

pytestmark = pytest.mark.skipif(not ottt_cuda.build_info()["cpu_compiled"], reason="compiled extension not built")

SAMPLE_NAMES = ["lif_step_fwd", "lif_step_fwd_hard", "lif_step_bwd", "lif_multistep_fwd", "lif_multistep_bwd",
                "trace_update", "trace_update_none", "trace_update_", "outer_accumulate_small",
                "outer_accumulate_gemm"]


def _samples():
    """(name, op, args) of every sample. Built inside the test, not at collection:
    without the extension torch.ops.ottt_cuda has no ops to look up."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    v = torch.rand(4, 6, generator=g, dtype=torch.float64)
    tr = torch.rand(4, 6, generator=g, dtype=torch.float64)
    m = (torch.rand(4, 6, generator=g) > 0.2).double()
    xs = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    z = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    ops = torch.ops.ottt_cuda
    return [
        ("lif_step_fwd", ops.lif_step_fwd, (x.clone().requires_grad_(), v, tr, m, 2.0, 1.0, None, False, 0.5,
                                            "sigmoid", 4.0, True)),
        ("lif_step_fwd_hard", ops.lif_step_fwd, (x, None, None, None, 3.0, 0.9, 0.0, True, 0.0, "atan", 2.0, False)),
        ("lif_step_bwd", ops.lif_step_bwd, (x, v, m, 2.0, 1.0, False, "triangle", 1.0)),
        ("lif_multistep_fwd", ops.lif_multistep_fwd, (xs.clone().requires_grad_(), v.clone().requires_grad_(), 2.0,
                                                      1.0, None, False, "sigmoid", 4.0, True)),
        ("lif_multistep_bwd", ops.lif_multistep_bwd, (xs, v, z, 2.0, 1.0, -0.1, True, "rectangle", 1.0)),
        ("trace_update", ops.trace_update, (tr.clone().requires_grad_(), x.clone().requires_grad_(), 0.5)),
        ("trace_update_none", ops.trace_update, (None, x, 0.5)),
        ("trace_update_", ops.trace_update_, (tr.clone(), x, 0.5)),
        ("outer_accumulate_small", ops.outer_accumulate_, (torch.zeros(6, 5, dtype=torch.float64), x[:3],
                                                           torch.randn(3, 5, dtype=torch.float64), 1.0)),
        ("outer_accumulate_gemm", ops.outer_accumulate_, (torch.zeros(6, 5, dtype=torch.float64),
                                                          torch.randn(20, 6, dtype=torch.float64),
                                                          torch.randn(20, 5, dtype=torch.float64), 0.5)),
    ]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_opcheck(name):
    samples = {s[0]: s for s in _samples()}
    assert sorted(samples) == sorted(SAMPLE_NAMES)
    _, op, args = samples[name]
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_matches_eager():
    """A compiled OTTT step (neuron + trace + weight-gradient accumulation) gives the eager results."""
    def step(x, v, tr, w_grad, g):
        s, v2, tr2 = ottt_cuda.ops.lif_step(x, v, trace=tr, trace_decay=0.5)
        ottt_cuda.ops.outer_accumulate_(w_grad, g, tr2)
        return s * 2.0, v2, tr2

    gen = torch.Generator().manual_seed(1)
    args = [torch.randn(5, 7, generator=gen), torch.rand(5, 7, generator=gen), torch.rand(5, 7, generator=gen)]
    g = torch.randn(5, 3, generator=gen)
    with using_backend("cpu"):
        w_eager, w_comp = torch.zeros(3, 7), torch.zeros(3, 7)
        eager = step(*args, w_eager, g)
        compiled = torch.compile(step, backend="aot_eager", fullgraph=True)(*args, w_comp, g)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(w_comp, w_eager)


def test_torch_compile_backward_through_multistep():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 5, generator=gen)

    def loss(xx):
        s, v = ottt_cuda.ops.lif_multistep(xx, surrogate="atan")
        return (s * torch.arange(5.0)).sum() + v.sum()

    with using_backend("cpu"):
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        loss(xe).backward()
        torch.compile(loss, backend="aot_eager", fullgraph=True)(xc).backward()
    torch.testing.assert_close(xc.grad, xe.grad)
