"""The synapses' autograd: one forward GEMM/convolution on the input spikes;
backward gives the input gradient W^T g and a weight gradient computed with
another tensor `a` (the presynaptic trace under OTTT, the input itself under
SLTT or for an untraced input layer), never a second forward pass.

Under autocast the forward runs in the autocast dtype; the weight gradient of
a Linear is accumulated straight into a buffer of the weight's dtype (float32
for fp16/bf16 operands: ops.outer_accumulate_), the convolution's comes from
the convolution weight-gradient kernel (cuDNN on GPU) and is cast up.
"""
import torch
import torch.nn.functional as F

from .. import ops


def _compute_dtype(x):
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


class LinearTrace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, weight, bias):
        cdt = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(x.to(cdt), weight.to(cdt), None if bias is None else bias.to(cdt))
        ctx.save_for_backward(a.to(cdt), weight)
        ctx.x_dtype, ctx.has_bias = x.dtype, bias is not None
        return out

    @staticmethod
    def backward(ctx, g):
        a, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = g.matmul(weight.to(g.dtype)).to(ctx.x_dtype)
        if ctx.needs_input_grad[2]:
            wide = weight.dtype == torch.float32 and g.dtype in (torch.float16, torch.bfloat16)
            if not wide and g.dtype != weight.dtype:
                g, a = g.to(weight.dtype), a.to(weight.dtype)
            gw = torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device)
            ops.outer_accumulate_(gw, g, a.to(g.dtype))
        if ctx.has_bias and ctx.needs_input_grad[3]:
            gb = g.reshape(-1, g.shape[-1]).sum(0, dtype=torch.float32 if g.dtype != torch.float64 else g.dtype)
        return gx, None, gw, gb


class Conv2dTrace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, weight, bias, stride, padding, dilation, groups):
        cdt = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            out = F.conv2d(x.to(cdt), weight.to(cdt), None if bias is None else bias.to(cdt),
                           stride, padding, dilation, groups)
        ctx.save_for_backward(a.to(cdt), weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.x_dtype, ctx.has_bias = x.dtype, bias is not None
        return out

    @staticmethod
    def backward(ctx, g):
        a, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        need_b = ctx.has_bias and ctx.needs_input_grad[3]
        # One call: the input gradient needs only a's shape, the weight gradient
        # takes the trace `a` as the convolution's input.
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, a.to(g.dtype), weight.to(g.dtype), [weight.shape[0]] if ctx.has_bias else None,
            list(stride), list(padding), list(dilation), False, [0, 0], groups, [need_x, need_w, need_b])
        if gx is not None:
            gx = gx.to(ctx.x_dtype)
        if gw is not None:
            gw = gw.to(weight.dtype)
        return gx, None, gw, gb, None, None, None, None
