"""Every validation rule raises a clear error that names the offending argument."""
import pytest
import torch

import ottt_cuda
from ottt_cuda import ops
from conftest import backend_params, using_backend

x = torch.randn(3, 4)

# (pattern, exception, call): each pattern names the argument AND says what is wrong with it,
# so a message that merely contains the letter "v" or "a" somewhere does not pass.
POSITIVE = r"(> ?0|positive)"
CASES = [
    (r"\bx\b.*torch\.Tensor.*list", TypeError, lambda: ops.lif_step([1.0, 2.0])),
    (r"\bx\b.*(float|dtype).*int32", TypeError, lambda: ops.lif_step(torch.ones(3, dtype=torch.int32))),
    (r"\bv\b.*shape.*\(4, 3\)", ValueError, lambda: ops.lif_step(x, torch.zeros(4, 3))),
    (r"\bv\b.*dtype.*float64", TypeError, lambda: ops.lif_step(x, torch.zeros(3, 4, dtype=torch.float64))),
    (r"\btau\b.*" + POSITIVE, ValueError, lambda: ops.lif_step(x, tau=0.0)),
    (r"\btau\b.*" + POSITIVE + r".*-2", ValueError, lambda: ops.lif_step(x, tau=-2.0)),
    (r"\btau\b.*finite", ValueError, lambda: ops.lif_step(x, tau=float("nan"))),
    (r"\bv_th\b.*finite", ValueError, lambda: ops.lif_step(x, v_th=float("inf"))),
    (r"\bv_reset\b.*(number|float).*str", TypeError, lambda: ops.lif_step(x, v_reset="zero")),
    (r"\bdecay_input\b.*bool", TypeError, lambda: ops.lif_step(x, decay_input=1)),
    (r"\bsurrogate\b.*sigmoid.*erf", ValueError, lambda: ops.lif_step(x, surrogate="erf")),
    (r"\balpha\b.*" + POSITIVE, ValueError, lambda: ops.lif_step(x, alpha=0.0)),
    (r"\btrace_decay\b.*(given|required|needed)", ValueError, lambda: ops.lif_step(x, trace=torch.zeros_like(x))),
    (r"\btrace_decay\b.*(<= ?1|\[0, 1\]).*1\.5", ValueError, lambda: ops.lif_step(x, trace_decay=1.5)),
    (r"\btrace\b.*shape.*\(2,\)", ValueError, lambda: ops.lif_step(x, trace=torch.zeros(2), trace_decay=0.5)),
    (r"\bmask\b.*\(5,\).*broadcast", ValueError, lambda: ops.lif_step(x, mask=torch.ones(5))),
    (r"\bmask\b.*torch\.Tensor.*list", TypeError, lambda: ops.lif_step(x, mask=[1, 0])),
    (r"\bx_seq\b.*(time|dim)", ValueError, lambda: ops.lif_multistep(torch.tensor(1.0))),
    (r"\bv0\b.*shape.*\(2, 3, 4\)", ValueError, lambda: ops.lif_multistep(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))),
    (r"\balpha\b.*" + POSITIVE + r".*-1", ValueError, lambda: ops.lif_multistep(torch.zeros(2, 3), alpha=-1.0)),
    (r"\btrace\b.*shape.*\(3,\)", ValueError, lambda: ops.trace_update(torch.zeros(3), torch.zeros(4), 0.5)),
    (r"\bdecay\b.*(>= ?0|\[0, 1\]).*-0\.1", ValueError, lambda: ops.trace_update(None, torch.zeros(4), -0.1)),
    (r"\bs\b.*shape.*\(4,\)", ValueError, lambda: ops.trace_update_(torch.zeros(3), torch.zeros(4), 0.5)),
    (r"\bgrad_w\b.*2-D.*\(3,\)", ValueError,
     lambda: ops.outer_accumulate_(torch.zeros(3), torch.zeros(2, 3), torch.zeros(2, 3))),
    (r"\bg\b.*shape.*\(2, 5\)", ValueError,
     lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 5), torch.zeros(2, 4))),
    (r"\ba\b.*shape.*\(2, 5\)", ValueError,
     lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(2, 5))),
    (r"\bg\b.*\ba\b.*leading", ValueError,
     lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(5, 4))),
    (r"\bg\b.*\ba\b.*same dtype", TypeError,
     lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.float64))),
    (r"\bgrad_w\b.*dtype.*float16", TypeError, lambda: ops.outer_accumulate_(
        torch.zeros(3, 4, dtype=torch.float16), torch.zeros(2, 3), torch.zeros(2, 4))),
    (r"\balpha\b.*finite", ValueError, lambda: ops.outer_accumulate_(torch.zeros(3, 4), torch.zeros(2, 3),
                                                                     torch.zeros(2, 4), float("nan"))),
]


@pytest.mark.parametrize("bp", [p for p in backend_params() if p.values[0][0] == "cpu"])
@pytest.mark.parametrize("pattern,exc,call", CASES,
                         ids=[f"{i}-{c[0].split(chr(92) + 'b')[1]}" for i, c in enumerate(CASES)])
def test_bad_argument_is_named(bp, pattern, exc, call):
    with using_backend(bp[1]):
        with pytest.raises(exc, match=pattern):
            call()


CPP_CASES = [
    (ValueError, r"\btau\b.*" + POSITIVE,
     lambda o: o.lif_step_fwd(x, None, None, None, -1.0, 1.0, None, False, 0.5, "sigmoid", 4.0, False)),
    (ValueError, r"\bsurrogate\b.*sigmoid.*erf",
     lambda o: o.lif_step_fwd(x, None, None, None, 2.0, 1.0, None, False, 0.5, "erf", 4.0, False)),
    (ValueError, r"\balpha\b.*" + POSITIVE, lambda o: o.lif_step_bwd(x, x, None, 2.0, 1.0, False, "sigmoid", 0.0)),
    (ValueError, r"\bv\b.*shape.*\[?2\]?",
     lambda o: o.lif_step_fwd(x, torch.zeros(2), None, None, 2.0, 1.0, None, False, 0.5, "sigmoid", 4.0, False)),
    (ValueError, r"\bv0\b.*shape.*\[?3\]?",
     lambda o: o.lif_multistep_fwd(x, torch.zeros(3), 2.0, 1.0, None, False, "sigmoid", 4.0, False)),
    (ValueError, r"\btrace\b.*shape", lambda o: o.trace_update(torch.zeros(2), x, 0.5)),
    (ValueError, r"\bgrad_w\b.*2-D", lambda o: o.outer_accumulate_(torch.zeros(3), x, x, 1.0)),
    (ValueError, r"\bg\b.*\ba\b.*leading",
     lambda o: o.outer_accumulate_(torch.zeros(4, 4), x, torch.zeros(2, 4), 1.0)),
]


@pytest.mark.skipif(not ottt_cuda.build_info()["cpu_compiled"], reason="compiled extension not built")
@pytest.mark.parametrize("exc,pattern,call", CPP_CASES, ids=[c[1].split(chr(92) + "b")[1] for c in CPP_CASES])
def test_compiled_ops_check_their_arguments_too(exc, pattern, call):
    """torch.ops.ottt_cuda.* called directly (bypassing ottt_cuda.ops) still refuse bad input,
    with the exception type the Python checks raise (ottt_cuda.ops' fast path relies on them)."""
    with pytest.raises(exc, match=pattern):
        call(torch.ops.ottt_cuda)
