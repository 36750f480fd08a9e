"""Linear and Conv2d synapses that own the presynaptic trace of their input.

Forward runs ONE matmul/convolution on the input itself. The weight gradient
uses the trace a_hat[t] = trace_decay * a_hat[t-1] + x[t] (mode "ottt"), the
input x[t] (mode "sltt", or trace=False: the paper's real-valued input layer),
or plain autograd (mode "bptt"). The input gradient is always W^T g.

Because the trace is a linear time-invariant filter, tracing what the synapse
receives equals the paper's code, which carries a trace through every
parameter-free module (average pooling, scaling, flattening). After a
NON-linear module such as max-pooling the two differ: the synapse here traces
the max-pooled spikes it actually receives, whereas the paper's code would
max-pool the trace of the spikes. The paper's models use average pooling.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import _validation
from . import _fast, _handoff
from ._autograd import Conv2dTrace, LinearTrace
from ._state import Stateful, set_state


class _Synapse(Stateful):
    """Trace bookkeeping shared by Linear and Conv2d."""

    def _init_trace(self, trace, trace_decay):
        if not isinstance(trace, bool):
            raise TypeError(f"trace must be a bool, got {type(trace).__name__}")
        self.trace = trace
        self.trace_decay = _validation.decay(trace_decay, "trace_decay")
        self.a_hat = None
        # a_hat * _a_scale is the trace of this synapse's input: 1 when the synapse updates it,
        # c when an LIF hands over the trace of its spikes s and the input is c * s (_handoff).
        self._a_scale = 1.0
        self._decay = None  # trace_decay, checked once per sequence (_checked_decay)
        self._deferred = None  # a _deferred.DeferredWeightGrad inside online_steps(defer_weight_grads=True)

    def reset_state(self):
        set_state(self, "a_hat", None)
        set_state(self, "_a_scale", 1.0)
        set_state(self, "_decay", None)

    def _checked_decay(self):
        # Checked at the first step of a sequence (it may have been reassigned since
        # construction); a change in the middle of a sequence applies from the next one.
        if self._decay is None:
            self._decay = _validation.decay(self.trace_decay, "trace_decay")
        return self._decay

    def _grad_source(self, x, fast=False, inplace=False):
        """(a, c): the weight gradient at this step uses c * a (updates the trace). In place
        only where no graph still holds the previous trace (nn.online_steps)."""
        if self.mode == "sltt" or not self.trace:
            return x.detach(), 1.0
        handed = _handoff.claim(self, x) if self.step_mode == "s" else None
        if handed is not None:  # the LIF feeding this synapse has updated the trace (_handoff)
            set_state(self, "a_hat", handed[0])
            set_state(self, "_a_scale", handed[1])
            return handed
        a = self.a_hat
        if a is not None and self._a_scale != 1.0:
            # the trace was handed over in other units and this step's was not: back to x's units
            a = a * self._a_scale
            set_state(self, "_a_scale", 1.0)
            inplace = False
        if a is not None and (a.shape != x.shape or a.dtype != x.dtype or a.device != x.device):
            raise ValueError(f"{type(self).__name__} trace has shape {tuple(a.shape)} / {a.dtype} / {a.device} but "
                             f"the input is {tuple(x.shape)} / {x.dtype} / {x.device}; call ottt_cuda.reset(model) "
                             "between sequences")
        if a is not None and inplace:
            _fast.trace_update_(a, x.detach(), self._checked_decay(), fast)
        else:
            set_state(self, "a_hat", _fast.trace_update(a, x.detach(), self._checked_decay(), fast))
        return self.a_hat, 1.0

    def _weights(self):
        return self.weight, self.bias

    def _plain(self, x, w, b):  # pragma: no cover
        raise NotImplementedError

    def _traced(self, x, a, w, b, fast=False, a_scale=1.0):  # pragma: no cover
        raise NotImplementedError

    def _check_input(self, x, lead):
        """x must be a float tensor whose trailing dims fit the weights; `lead` leading dims
        (batch, or time and batch) come first. Caught here, a wrong shape names the layer
        instead of failing inside a GEMM or convolution."""
        _validation.tensor(x, "x")
        want, exact = self._feature_dims()
        n = len(want)
        ok = (x.dim() == lead + n if exact else x.dim() >= lead + n) and all(
            w is None or x.shape[x.dim() - n + i] == w for i, w in enumerate(want))
        if not ok:
            dims = ", ".join("*" if w is None else str(w) for w in want)
            front = ("T, " if lead == 2 else "") + ("B" if exact else "B, ...")
            raise ValueError(f"{self._short()}: input x must have shape [{front}, {dims}], got {tuple(x.shape)}")

    def _short(self):
        return f"{type(self).__name__}({self.extra_repr().split(', trace=')[0]})"

    def step(self, x):
        self._check_input(x, 1)
        w, b = self._weights()
        if self.mode == "bptt":
            return self._plain(x, w, b)
        fast = _fast.compiled(x)
        a, a_scale = self._grad_source(x, fast, inplace=self._online)
        if not torch.is_grad_enabled():
            return self._plain(x, w, b)
        return self._traced(x, a, w, b, fast, a_scale)

    def multi(self, x_seq):
        self._check_input(x_seq, 2)
        w, b = self._weights()
        T = x_seq.shape[0]
        flat = x_seq.flatten(0, 1)
        if self.mode == "bptt":
            return self._plain(flat, w, b).unflatten(0, (T, -1))
        # The traces of all T steps, then one GEMM/conv for the forward and one
        # for the weight gradient over T*B rows: the sum over t is in the GEMM.
        handed = _handoff.claim(self, x_seq) if self.mode == "ottt" and self.trace else None
        if handed is not None:  # stacked by the LIF feeding this synapse (_handoff)
            traces, a_scale = handed
            # the last step's trace as the state, copied: a view would keep all T alive between chunks
            set_state(self, "a_hat", traces[-1].clone())
            set_state(self, "_a_scale", a_scale)
            a = traces.flatten(0, 1)
        else:
            a, a_scale = torch.stack([self._grad_source(x)[0] for x in x_seq.unbind(0)]).flatten(0, 1), 1.0
        out = self._plain(flat, w, b) if not torch.is_grad_enabled() else self._traced(flat, a, w, b, False, a_scale)
        return out.unflatten(0, (T, -1))


class Linear(_Synapse):
    """torch.nn.Linear with OTTT's trace-based weight gradient. Parameters
    `weight` [out, in] and `bias` [out] as torch.nn.Linear."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, trace=True,
                 trace_decay=0.5, step_mode="s"):
        super().__init__(step_mode)
        _validation.positive_int(in_features, "in_features")
        _validation.positive_int(out_features, "out_features")
        _validation.boolean(bias, "bias")
        ref = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = ref.weight
        self.bias = ref.bias
        self._init_trace(trace, trace_decay)

    def _feature_dims(self):
        return (self.in_features,), False  # any leading dims, as torch.nn.Linear

    def _plain(self, x, w, b):
        return F.linear(x, w, b)

    def _traced(self, x, a, w, b, fast=False, a_scale=1.0):
        return LinearTrace.apply(x, a, w, b, self._online, fast, self._deferred, a_scale)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"trace={self.trace}, trace_decay={self.trace_decay}, mode={self.mode!r}")


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return v


class Conv2d(_Synapse):
    """torch.nn.Conv2d with OTTT's trace-based weight gradient (zero padding
    only). Parameters `weight` [out, in/groups, kh, kw] and `bias` [out]."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None, *, trace=True, trace_decay=0.5, step_mode="s"):
        super().__init__(step_mode)
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for ottt_cuda.nn.Conv2d, got {padding_mode!r}")
        _validation.positive_int(in_channels, "in_channels")
        _validation.positive_int(out_channels, "out_channels")
        _validation.int_pair(kernel_size, "kernel_size")
        _validation.int_pair(stride, "stride")
        _validation.int_pair(dilation, "dilation")
        if not isinstance(padding, str):
            _validation.int_pair(padding, "padding", low=0)
        elif padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid', an int or a pair of ints, got {padding!r}")
        _validation.positive_int(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups ({groups}) must divide in_channels ({in_channels}) and out_channels "
                             f"({out_channels})")
        _validation.boolean(bias, "bias")
        ref = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        padding_mode, device=device, dtype=dtype)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = ref.kernel_size, ref.stride, ref.dilation
        self.padding = self._int_padding(ref.padding)
        self.weight, self.bias = ref.weight, ref.bias
        self._init_trace(trace, trace_decay)

    def _int_padding(self, padding):
        # The backward kernel takes integer padding: resolve torch's strings.
        if padding == "valid":
            return (0, 0)
        if padding == "same":
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if any(t % 2 for t in total):
                raise ValueError("padding='same' needs an odd effective kernel size in ottt_cuda.nn.Conv2d; "
                                 "give padding as integers")
            return tuple(t // 2 for t in total)
        return _pair(padding, "padding")

    def _feature_dims(self):
        return (self.in_channels, None, None), True

    def _plain(self, x, w, b):
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def _traced(self, x, a, w, b, fast=False, a_scale=1.0):
        return Conv2dTrace.apply(x, a, w, b, self.stride, self.padding, self.dilation, self.groups, self._online,
                                 a_scale)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}, trace={self.trace}, "
                f"trace_decay={self.trace_decay}, mode={self.mode!r}")
