"""Every validation rule raises a clear error that names the offending argument."""
import pytest
import torch

import ottt_cuda
from ottt_cuda import ops
from conftest import backend_params, using_backend

x = torch.randn(3, 4)

CASES = [
    ("x", TypeError, lambda: ops.lif_step([1.0, 2.0])),
    ("x", TypeError, lambda: ops.lif_step(torch.ones(3, dtype=torch.int32))),
    ("v", ValueError, lambda: ops.lif_step(x, torch.zeros(4, 3))),
    ("v", TypeError, lambda: ops.lif_step(x, torch.zeros(3, 4, dtype=torch.float64))),
    ("tau", ValueError, lambda: ops.lif_step(x, tau=0.0)),
    ("tau", ValueError, lambda: ops.lif_step(x, tau=-2.0)),
    ("tau", ValueError, lambda: ops.lif_step(x, tau=float("nan"))),
    ("v_th", ValueError, lambda: ops.lif_step(x, v_th=float("inf"))),
    ("v_reset", TypeError, lambda: ops.lif_step(x, v_reset="zero")),
    ("decay_input", TypeError, lambda: ops.lif_step(x, decay_input=1)),
    ("surrogate", ValueError, lambda: ops.lif_step(x, surrogate="erf")),
    ("alpha", ValueError, lambda: ops.lif_step(x, alpha=0.0)),
    ("trace_decay", ValueError, lambda: ops.lif_step(x, trace=torch.zeros_like(x))),
    ("trace_decay", ValueError, lambda: ops.lif_step(x, trace_decay=1.5)),
    ("trace", ValueError, lambda: ops.lif_step(x, trace=torch.zeros(2), trace_decay=0.5)),
    ("mask", ValueError, lambda: ops.lif_step(x, mask=torch.ones(5))),
    ("mask", TypeError, lambda: ops.lif_step(x, mask=[1, 0])),
    ("x_seq", ValueError, lambda: ops.lif_multistep(torch.tensor(1.0))),
    ("v0", ValueError, lambda: ops.lif_multistep(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))),
    ("alpha", ValueError, lambda: ops.lif_multistep(torch.zeros(2, 3), alpha=-1.0)),
    ("trace", ValueError, lambda: ops.trace_update(torch.zeros(3), torch.zeros(4), 0.5)),
    ("decay", ValueError, lambda: ops.trace_update(None, torch.zeros(4), -0.1)),
    ("s", ValueError, lambda: ops.trace_update_(torch.zeros(3), torch.zeros(4), 0.5)),
    ("grad_w", ValueError, lambda: ops.outer_accumulate_(torch.zeros(3), torch.zeros(2, 3), torch.zeros(2, 3))),
    ("g", ValueError, lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 5), torch.zeros(2, 4))),
    ("a", ValueError, lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(2, 5))),
    ("leading", ValueError, lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(5, 4))),
    ("same dtype", TypeError,
     lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.float64))),
    ("grad_w", TypeError, lambda: ops.outer_accumulate_(
        torch.zeros(3, 4, dtype=torch.float16), torch.zeros(2, 3), torch.zeros(2, 4))),
    ("alpha", ValueError, lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(2, 4),
                                                       float("nan"))),
]


@pytest.mark.parametrize("bp", [p for p in backend_params() if p.values[0][0] == "cpu"])
@pytest.mark.parametrize("name,exc,call", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_argument_is_named(bp, name, exc, call):
    with using_backend(bp[1]):
        with pytest.raises(exc, match=name):
            call()


CPP_CASES = [
    ("tau", lambda o: o.lif_step_fwd(x, None, None, None, -1.0, 1.0, None, False, 0.5, "sigmoid", 4.0, False)),
    ("surrogate", lambda o: o.lif_step_fwd(x, None, None, None, 2.0, 1.0, None, False, 0.5, "erf", 4.0, False)),
    ("alpha", lambda o: o.lif_step_bwd(x, x, None, 2.0, 1.0, False, "sigmoid", 0.0)),
    ("v", lambda o: o.lif_step_fwd(x, torch.zeros(2), None, None, 2.0, 1.0, None, False, 0.5, "sigmoid", 4.0, False)),
    ("v0", lambda o: o.lif_multistep_fwd(x, torch.zeros(3), 2.0, 1.0, None, False, "sigmoid", 4.0, False)),
    ("trace", lambda o: o.trace_update(torch.zeros(2), x, 0.5)),
    ("grad_w", lambda o: o.outer_accumulate_(torch.zeros(3), x, x, 1.0)),
    ("leading", lambda o: o.outer_accumulate_(torch.zeros(4, 4), x, torch.zeros(2, 4), 1.0)),
]


@pytest.mark.skipif(not ottt_cuda.build_info()["cpu_compiled"], reason="compiled extension not built")
@pytest.mark.parametrize("name,call", CPP_CASES, ids=[c[0] for c in CPP_CASES])
def test_compiled_ops_check_their_arguments_too(name, call):
    """torch.ops.ottt_cuda.* called directly (bypassing ottt_cuda.ops) still refuse bad input."""
    with pytest.raises(RuntimeError, match=name):
        call(torch.ops.ottt_cuda)
