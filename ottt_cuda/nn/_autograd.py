"""The synapses' autograd: one forward GEMM/convolution on the input spikes;
backward gives the input gradient W^T g and a weight gradient computed with
another tensor `a` (the presynaptic trace under OTTT, the input itself under
SLTT or for an untraced input layer), never a second forward pass.

Under autocast the forward runs in the autocast dtype; the weight gradient of
a Linear is accumulated straight into a buffer of the weight's dtype (float32
for fp16/bf16 operands: ops.outer_accumulate_), the convolution's comes from
the convolution weight-gradient kernel (cuDNN on GPU) and is cast up.

`direct` (the layer runs inside nn.online_steps): a weight or bias gradient is added
in place to the parameter's existing .grad instead of being returned, which would
cost a zero-filled buffer per step plus AccumulateGrad's read-add-write of .grad (for
the 784x400 weight at batch 1: ~170 us of ~50 us of arithmetic). Only for a leaf
without gradient hooks whose .grad is a plain dense tensor of its own shape and dtype;
anything else (the first step after zero_grad(set_to_none=True) included) takes the
ordinary route. `fast`: the compiled kernels are called without the public ops'
per-call checks (see _fast).
"""
import torch
import torch.nn.functional as F

from . import _fast


def _compute_dtype(x):
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _cast_free(x, weight, bias):
    """No autocast and one dtype: the forward runs as written, without casts or an autocast guard."""
    return (not torch.is_autocast_enabled(x.device.type) and weight.dtype == x.dtype
            and (bias is None or bias.dtype == x.dtype))


def _as(t, dtype):
    # Tensor.to is a dispatched op even when it returns t itself (~1.5 us): skip it then.
    return t if t.dtype == dtype else t.to(dtype)


def grad_fits(p, grad):
    """Whether `grad` may be added to in place as p's gradient: a plain dense contiguous tensor of
    p's shape and dtype, outside any graph."""
    return (grad.layout == torch.strided and grad.is_contiguous() and grad.dtype == p.dtype
            and grad.shape == p.shape and not grad.requires_grad)


def grad_to_accumulate_into(p):
    """p.grad when a gradient may be added to it in place rather than handed to
    AccumulateGrad (which would do the same addition, plus run p's hooks); else None."""
    if p is None or not p.is_leaf:
        return None
    grad = p.grad
    if grad is None or grad.device != p.device or not grad_fits(p, grad):
        return None
    return grad if _no_hooks(p) else None


def _no_hooks(p):
    """A leaf whose gradient nobody watches: it may be accumulated outside autograd."""
    return p.is_leaf and not (p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None))


def bias_grad(g2):
    """The bias gradient of rows g2 [rows, out]: their column sum, in float32 at least (float64 stays)."""
    return g2.sum(0, dtype=torch.float32 if g2.dtype != torch.float64 else g2.dtype)


def conv_grads(g, a, weight, has_bias, stride, padding, dilation, groups, need_x, need_w=True, need_b=None):
    """(grad_x, grad_w, grad_b) of a convolution in one convolution_backward call: the input gradient
    needs only a's shape, the weight gradient takes `a` (the trace, or the input) as the convolution's
    input. Shared by Conv2dTrace and the autograd-free steps (nn._chain, nn._graph)."""
    return torch.ops.aten.convolution_backward(
        g, a, weight, [weight.shape[0]] if has_bias else None, list(stride), list(padding), list(dilation), False,
        [0, 0], groups, [need_x, need_w, has_bias if need_b is None else need_b])


def _accumulate_or_return(p, grad_of_p, direct):
    """Add grad_of_p to p.grad in place (returning None) when allowed, else return it."""
    target = grad_to_accumulate_into(p) if direct else None
    if target is None:
        return grad_of_p
    target.add_(_as(grad_of_p, target.dtype))
    return None


class LinearTrace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, weight, bias, direct=False, fast=False, deferred=None, a_scale=1.0):
        if _cast_free(x, weight, bias):
            cdt = x.dtype
            out = F.linear(x, weight, bias)
        else:
            cdt = _compute_dtype(x)
            with torch.autocast(x.device.type, enabled=False):
                out = F.linear(x.to(cdt), weight.to(cdt), None if bias is None else bias.to(cdt))
        ctx.save_for_backward(_as(a, cdt), weight, bias)
        ctx.x_dtype, ctx.has_bias, ctx.direct, ctx.fast = x.dtype, bias is not None, direct, fast
        ctx.deferred, ctx.a_scale = deferred, a_scale
        return out

    @staticmethod
    def backward(ctx, g):
        a, weight, bias = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _as(g.matmul(_as(weight, g.dtype)), ctx.x_dtype)
        if ctx.needs_input_grad[2]:
            wide = weight.dtype == torch.float32 and g.dtype in (torch.float16, torch.bfloat16)
            if not wide and g.dtype != weight.dtype:
                g, a = g.to(weight.dtype), a.to(weight.dtype)
            a = _as(a, g.dtype)
            c = ctx.a_scale  # the weight gradient is g^T (c a): see _handoff
            gw = grad_to_accumulate_into(weight) if ctx.direct else None
            if ctx.deferred is not None and not wide and _no_hooks(weight):
                # Summed into weight.grad later, one GEMM for many steps; the bias with it when it may be.
                defer_bias = ctx.has_bias and ctx.needs_input_grad[3] and _no_hooks(bias)
                ctx.deferred.add(weight, bias if defer_bias else None, g, a, c)
                if defer_bias:
                    return gx, None, None, None, None, None, None, None
                gw = None
            elif gw is not None:
                _fast.outer_accumulate_(gw, g, a, ctx.fast, c)
                gw = None  # already in weight.grad
            elif ctx.direct and not wide and g.dim() == 2:
                # First step of an online sequence (no .grad yet): one product into a new
                # buffer, which AccumulateGrad then adopts, instead of zero-fill + accumulate.
                gw = torch.mm(g.t(), a) if c == 1.0 else torch.addmm(a.new_zeros(()), g.t(), a, beta=0, alpha=c)
            else:
                gw = torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device)
                _fast.outer_accumulate_(gw, g, a, ctx.fast, c)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            g2 = g if g.dim() == 2 else g.reshape(-1, g.shape[-1])
            gb = bias_grad(g2)
            gb = _accumulate_or_return(bias, gb, ctx.direct)
        return gx, None, gw, gb, None, None, None, None


class Conv2dTrace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, weight, bias, stride, padding, dilation, groups, direct=False, a_scale=1.0):
        if _cast_free(x, weight, bias):
            cdt = x.dtype
            out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        else:
            cdt = _compute_dtype(x)
            with torch.autocast(x.device.type, enabled=False):
                out = F.conv2d(x.to(cdt), weight.to(cdt), None if bias is None else bias.to(cdt),
                               stride, padding, dilation, groups)
        ctx.save_for_backward(_as(a, cdt), weight, bias)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.x_dtype, ctx.has_bias, ctx.direct, ctx.a_scale = x.dtype, bias is not None, direct, a_scale
        return out

    @staticmethod
    def backward(ctx, g):
        a, weight, bias = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        need_b = ctx.has_bias and ctx.needs_input_grad[3]
        gx, gw, gb = conv_grads(g, _as(a, g.dtype), _as(weight, g.dtype), ctx.has_bias, stride, padding, dilation,
                                groups, need_x, need_w, need_b)
        if gx is not None:
            gx = _as(gx, ctx.x_dtype)
        if gw is not None:
            if ctx.a_scale != 1.0:  # the convolution ran on a, the trace is c a (_handoff)
                gw = gw.mul_(ctx.a_scale)
            gw = _accumulate_or_return(weight, _as(gw, weight.dtype), ctx.direct)
        if gb is not None:
            gb = _accumulate_or_return(bias, gb, ctx.direct)
        return gx, None, gw, gb, None, None, None, None, None, None
