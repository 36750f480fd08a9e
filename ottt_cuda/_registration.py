"""Fake (meta) kernels and autograd formulas for the compiled ops in
torch.ops.ottt_cuda (and the same ops of the emulated CUDA device,
torch.ops.ottt_cuda_emu), so that torch.library.opcheck, torch.compile and
autograd work on them. Registered once per library that is loaded.

The backward formulas live in `backward_*` functions that the Triton backend's
autograd.Function reuses, so both paths differentiate the same way.
"""
import torch


def _empty(x):
    return x.new_empty((0,))


# ---- shared backward formulas (impl: an object with the *_bwd functions) ----

def backward_lif_step(impl, grad_spike, h, mask, tau, v_th, decay_input, surrogate, alpha):
    if grad_spike is None:
        return None
    return impl.lif_step_bwd(grad_spike, h, mask, tau, v_th, decay_input, surrogate, alpha)


def backward_lif_multistep(impl, grad_spike_seq, grad_v_last, h_seq, tau, v_th, v_reset, decay_input,
                           surrogate, alpha, detach_reset=True):
    if grad_spike_seq is None:
        grad_spike_seq = torch.zeros_like(h_seq)
    return impl.lif_multistep_bwd(grad_spike_seq, grad_v_last, h_seq, tau, v_th, v_reset, decay_input,
                                  surrogate, alpha, detach_reset=detach_reset)


def register(namespace="ottt_cuda"):
    ops = getattr(torch.ops, namespace)
    _LIB = namespace + "::"

    @torch.library.register_fake(_LIB + "lif_step_fwd")
    def _(x, v, trace, mask, tau, v_th, v_reset, decay_input, trace_decay, surrogate, alpha, save_h):
        return (torch.empty_like(x), torch.empty_like(x), torch.empty_like(x) if save_h else _empty(x),
                torch.empty_like(x) if trace is not None else _empty(x))

    @torch.library.register_fake(_LIB + "lif_step_bwd")
    def _(grad_spike, h, mask, tau, v_th, decay_input, surrogate, alpha):
        return torch.empty_like(h)

    # detach_reset defaults to True here as in the schema (csrc/op_schemas.h).
    @torch.library.register_fake(_LIB + "lif_multistep_fwd")
    def _(x_seq, v0, tau, v_th, v_reset, decay_input, surrogate, alpha, save_h, detach_reset=True):
        return (torch.empty_like(x_seq), x_seq.new_empty(x_seq.shape[1:]),
                torch.empty_like(x_seq) if save_h else _empty(x_seq))

    @torch.library.register_fake(_LIB + "lif_multistep_bwd")
    def _(grad_spike_seq, grad_v_last, h_seq, tau, v_th, v_reset, decay_input, surrogate, alpha, detach_reset=True):
        return torch.empty_like(h_seq), h_seq.new_empty(h_seq.shape[1:])

    @torch.library.register_fake(_LIB + "trace_update")
    def _(trace, s, decay):
        return torch.empty_like(s)

    @torch.library.register_fake(_LIB + "trace_update_")
    def _(trace, s, decay):
        return None

    @torch.library.register_fake(_LIB + "outer_accumulate_")
    def _(grad_w, g, a, alpha):
        return None

    # ---- autograd ----
    def lif_step_setup(ctx, inputs, output):
        x, v, trace, mask, tau, v_th, v_reset, decay_input, trace_decay, surrogate, alpha, save_h = inputs
        ctx.save_for_backward(output[2], mask)
        ctx.args = (tau, v_th, decay_input, surrogate, alpha)
        ctx.has = (v is not None, trace is not None, mask is not None)
        # Only the spike carries a gradient (membrane, h and trace are detached by the method): let autograd
        # pass None for the other outputs instead of materializing three zero tensors per call.
        ctx.set_materialize_grads(False)

    def lif_step_backward(ctx, grad_spike, _gv, _gh, _gt):
        h, mask = ctx.saved_tensors
        if h.numel() == 0 and grad_spike is not None and grad_spike.numel() != 0:
            raise RuntimeError("lif_step_fwd was called with save_h=False, so it cannot be differentiated")
        grad_x = backward_lif_step(ops, grad_spike, h, mask, *ctx.args)
        return (grad_x,) + (None,) * 11

    torch.library.register_autograd(_LIB + "lif_step_fwd", lif_step_backward, setup_context=lif_step_setup)

    def multistep_setup(ctx, inputs, output):
        x_seq, v0, tau, v_th, v_reset, decay_input, surrogate, alpha, save_h = inputs[:9]
        ctx.save_for_backward(output[2])
        ctx.args = (tau, v_th, v_reset, decay_input, surrogate, alpha, inputs[9] if len(inputs) > 9 else True)
        ctx.has_v0 = v0 is not None
        ctx.n_inputs = len(inputs)

    def multistep_backward(ctx, grad_spike_seq, grad_v_last, _gh):
        (h_seq,) = ctx.saved_tensors
        if h_seq.dim() == 1 and h_seq.numel() == 0 and grad_spike_seq is not None and grad_spike_seq.dim() > 1:
            raise RuntimeError("lif_multistep_fwd was called with save_h=False, so it cannot be differentiated")
        grad_x, grad_v0 = backward_lif_multistep(ops, grad_spike_seq, grad_v_last, h_seq, *ctx.args)
        return (grad_x, grad_v0 if ctx.has_v0 else None) + (None,) * (ctx.n_inputs - 2)

    torch.library.register_autograd(_LIB + "lif_multistep_fwd", multistep_backward, setup_context=multistep_setup)

    def trace_setup(ctx, inputs, output):
        trace, s, decay = inputs
        ctx.decay, ctx.has_trace = decay, trace is not None

    def trace_backward(ctx, grad):
        return (grad * ctx.decay if ctx.has_trace else None), grad, None

    torch.library.register_autograd(_LIB + "trace_update", trace_backward, setup_context=trace_setup)
