"""One training step of a spiking network with OTTT, SLTT or BPTT, and evaluation.

Loss at each step on the last layer's output u[t] (it does not spike):
    L[t] = ((1 - a) * CE(u[t], y) + a * MSE(u[t], onehot(y))) / T
and the prediction uses sum_t u[t] (supplementary C.2.2).
"""
import contextlib
import math

import torch
import torch.nn.functional as F

from . import _loss, _validation
from . import memory_budget as _budget
from .nn import _state
from .nn import _chain, _graph, _handoff
from .nn.ws import hoisted

TRAIN_MODES = ("ottt_a", "ottt_o", "sltt", "sltt_k", "bptt")
_LAYER_MODE = {"ottt_a": "ottt", "ottt_o": "ottt", "sltt": "sltt", "sltt_k": "sltt", "bptt": "bptt"}
_AMP = {None: None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, torch.bfloat16: torch.bfloat16,
        "fp16": torch.float16, "float16": torch.float16, torch.float16: torch.float16}


class NonFiniteLossError(FloatingPointError):
    """train_step(check_finite=True) found a NaN/Inf loss or gradient before the optimizer step
    (so no parameter and no optimizer state was changed). `value` is the loss, `t` the time step
    (None when the whole step's loss was checked)."""

    def __init__(self, reason, value, t=None):
        super().__init__(f"non-finite training step: {reason}; the optimizer step was not taken (lower the learning "
                         "rate; with fp16 autocast use a GradScaler; check the input for NaN/Inf)")
        self.reason, self.value, self.t = reason, value, t


def _first_nonfinite_grad(model):
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named:
        return None
    # One device sync for all gradients; the name is looked up only when something is wrong.
    flags = torch.stack([torch.isfinite(g).all() for _, g in named])
    if bool(flags.all()):
        return None
    return named[int((~flags).nonzero()[0])][0]


def _check_finite(model, optimizer, loss, scaler, t):
    """Raise NonFiniteLossError if the loss, or (without a GradScaler, which handles
    overflowing gradients itself by skipping the step) a gradient, is NaN/Inf."""
    value = float(loss.detach())
    bad_grad = None if scaler is not None else _first_nonfinite_grad(model)
    ok = math.isfinite(value) and bad_grad is None
    # Data-parallel optimizers (ottt_cuda.train.distributed.GradSync) make every rank agree,
    # so that no rank waits forever in the gradient all-reduce of a rank that stopped.
    agree = getattr(optimizer, "all_ranks_ok", None)
    all_ok = agree(ok) if callable(agree) else ok
    if all_ok:
        return
    where = f" at time step {t}" if t is not None else ""
    if ok:
        what = "another data-parallel process had a non-finite loss or gradient"
    elif not math.isfinite(value):
        what = f"the loss is {value}{where}"
    else:
        what = f"the gradient of {bad_grad!r} is not finite{where} (loss {value:.6g})"
    raise NonFiniteLossError(what, value, t)


def step_loss(out, y, T, loss_alpha):
    """The per-step loss ((1-a) CE + a MSE(out, onehot)) / T, in at least float32."""
    out = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
    loss = (1.0 - loss_alpha) * F.cross_entropy(out, y)
    if loss_alpha:
        loss = loss + loss_alpha * F.mse_loss(out, F.one_hot(y, out.shape[-1]).to(out.dtype))
    return loss / T


def _sequence_getter(x, T, batch, sequence):
    """Decide whether x is static [B, ...] or a sequence [T, B, ...]; return
    (x_at(t), x_slice(t0, n) -> [n, B, ...])."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (inputs, spikes or frames), got {x.dtype}")
    if sequence is not None and not isinstance(sequence, bool):
        raise TypeError(f"sequence must be None, True or False, got {type(sequence).__name__}")
    if sequence is None:
        as_static = x.dim() >= 1 and (batch is None or x.shape[0] == batch)
        as_seq = x.dim() >= 2 and x.shape[0] == T and (batch is None or x.shape[1] == batch)
        if as_static and as_seq:
            raise ValueError(f"x of shape {tuple(x.shape)} could be a static batch or a [T, B, ...] sequence; "
                             "pass sequence=True or sequence=False")
        if not (as_static or as_seq):
            raise ValueError(f"x must be a static batch [B, ...] or a sequence [T={T}, B, ...]; got shape "
                             f"{tuple(x.shape)}" + (f" with B = {batch} (y's length)" if batch is not None else ""))
        sequence = as_seq
    if sequence:
        if x.dim() < 2 or x.shape[0] != T:
            raise ValueError(f"x must be [T={T}, B, ...] with sequence=True, got shape {tuple(x.shape)}")
        return (lambda t: x[t]), (lambda t0, n: x[t0:t0 + n])
    return (lambda t: x), (lambda t0, n: x.unsqueeze(0).expand(n, *x.shape))


def _check_common(model, x, amp):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if amp not in _AMP:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    param = next(model.parameters(), None)
    if isinstance(x, torch.Tensor) and param is not None and x.device != param.device:
        raise ValueError(f"x is on {x.device} but the model's parameters are on {param.device}; move one "
                         "(model.to(device) or x.to(device))")


def _check_targets(y, x, optimizer, scaler):
    if not isinstance(y, torch.Tensor) or y.dim() != 1:
        raise ValueError(f"y must be a 1-D tensor of class indices [B], got {getattr(y, 'shape', type(y))}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class indices (torch.long), got {y.dtype}")
    if isinstance(x, torch.Tensor) and y.device != x.device:
        raise ValueError(f"y is on {y.device} but x is on {x.device}; put both on the model's device")
    y_max = None
    if y.numel():
        lo, hi = (int(v) for v in torch.aminmax(y))  # one device sync for both bounds
        if lo < 0:
            raise ValueError(f"y must hold class indices >= 0, got {lo}")
        y_max = hi
    if optimizer is not None and not (callable(getattr(optimizer, "step", None))
                                      and callable(getattr(optimizer, "zero_grad", None))):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer (or None), got {type(optimizer).__name__}")
    if scaler is not None and not callable(getattr(scaler, "scale", None)):
        raise TypeError(f"scaler must be a torch.amp.GradScaler (or None), got {type(scaler).__name__}")
    return y_max


def _check_classes(out, y_max):
    """Once per call, on the first output: every class index must have an output unit."""
    if y_max is not None and out.dim() >= 1 and y_max >= out.shape[-1]:
        raise ValueError(f"y holds class index {y_max} but the model has {out.shape[-1]} outputs "
                         f"(classes 0..{out.shape[-1] - 1})")


def _sequential_only(model):
    # Models with feedback between time steps at the model level (VGG-F) must
    # run one step at a time; they say so with this attribute.
    return any(getattr(m, "sequential_only", False) for m in model.modules())


def _autocast(device, amp):
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp)


class _Runner:
    def __init__(self, model, y, T, loss_alpha, amp, scaler, device, y_max=None):
        self.model, self.y, self.T, self.a, self.y_max = model, y, T, loss_alpha, y_max
        self.amp, self.scaler, self.device = amp, scaler, device
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._pending = []  # detached outputs of steps whose loss value is not summed yet
        self._onehot = None
        self.out_sum = None
        self.checked = False

    @property
    def loss(self):
        """Sum of the per-step losses so far (float64, detached)."""
        if self._pending:
            self._loss_sum += _loss.step_losses(torch.stack(self._pending), self.y, self.T, self.a, self._onehot).sum()
            self._pending = []
        return self._loss_sum

    def _loss(self, out):
        if not self.checked:
            _check_classes(out, self.y_max)
            self.checked = True
        return out

    def _record(self, out, loss):
        o = out.detach().sum(0) if out.dim() == 3 else out.detach()
        o = o.float() if o.dtype in (torch.float16, torch.bfloat16) else o
        if loss is None:
            self._pending.append(o)
        else:
            self._loss_sum += loss.detach().to(self._loss_sum.dtype)
        if self.out_sum is None:
            self.out_sum = o.clone()
        else:
            self.out_sum.add_(o)

    def _closed_form(self, out):
        # The per-step loss's gradient written out (_loss_grad) replaces ~10 autograd nodes
        # per step; a GradScaler keeps the ordinary path (its scale is set up in scale()).
        return self.scaler is None and out.dim() == 2 and out.requires_grad

    def _loss_grad(self, out):
        """d step_loss / d out in closed form (_loss.loss_grad), computed in at least float32 (as
        step_loss) and returned in out's dtype."""
        u = out.detach()
        u = u.float() if u.dtype in (torch.float16, torch.bfloat16) else u
        if self._onehot is None or self._onehot.shape != u.shape or self._onehot.dtype != u.dtype:
            self._onehot = F.one_hot(self.y, u.shape[1]).to(u.dtype)
        g = _loss.loss_grad(u, self._onehot, self.T, self.a)
        return g if g.dtype == out.dtype else g.to(out.dtype)

    def step(self, x_t, backward=True, need_loss=True):
        """One time step (and its backward). Returns the step's loss, or None when
        need_loss is False and its value is summed later, for all steps at once (self.loss)."""
        with _autocast(self.device, self.amp):
            out = self._loss(self.model(x_t))
            closed = backward and self._closed_form(out)
            loss = None
            if need_loss or not closed:
                with torch.no_grad() if closed else contextlib.nullcontext():
                    loss = step_loss(out, self.y, self.T, self.a)
        if closed:
            out.backward(self._loss_grad(out))
        elif backward:
            self.backward(loss)
        self._record(out, loss)
        return loss

    def chain_step(self, chain, x_t):
        """One time step of an nn._chain.Chain: forward, the loss gradient, the chain's backward."""
        out = self._loss(chain.forward(x_t))
        _loss.check_step_output(out)
        chain.backward(self._loss_grad(out))
        self._record(out, None)

    def chunk(self, x_seq, backward=True):
        n, B = x_seq.shape[0], x_seq.shape[1]
        with _state.multistep(self.model, n), _autocast(self.device, self.amp):
            out = self._loss(self.model(x_seq.flatten(0, 1)).unflatten(0, (n, B)))
            losses = [step_loss(o, self.y, self.T, self.a) for o in out.unbind(0)]  # (unbind: see LIF.multi)
            loss = torch.stack(losses).sum()
        if backward:
            self.backward(loss)
        self._record(out, loss)
        return loss

    def backward(self, loss):
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()


def _optimizer_step(optimizer, scaler):
    if optimizer is None:
        return
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def train_step(model, x, y, optimizer, *, T, mode="ottt_a", loss_alpha=0.05, chunk=None, k=None, amp=None,
               scaler=None, sequence=None, check_finite=False, memory_budget=None, cuda_graph=False):
    """One training step on a batch; returns (loss, output_sum), both detached.

    mode: "ottt_a" (backward every step, one optimizer step at the end;
    optimizer=None only accumulates .grad), "ottt_o" (optimizer step after every
    time step), "sltt" (weight gradients with the current input), "sltt_k"
    (backward at k random steps, drawn first thing from torch's global RNG),
    "bptt" (whole sequence multi-step, one backward). chunk=K with "ottt_a" or
    "sltt": the online gradients K steps at a time (identical gradients).
    chunk="auto" with "ottt_a" and memory_budget=BYTES (a number, or a string like
    "6GB" / "512MiB"): the largest chunk whose step fits the budget (state + bytes
    saved for backward, measured on the first call per model, input shape and T,
    which runs chunks of 1; a budget below that minimum raises ValueError before
    the optimizer step); the choice is logged (logger "ottt_cuda.training", INFO) and kept in
    model.ottt_chunk_plan (a memory_budget.ChunkPlan: .chunk, .per_step_bytes, ...).
    x: static [B, ...] or sequence [T, B, ...] (`sequence` resolves ambiguity).
    amp: None, "bf16" or "fp16" autocast; `scaler` a torch.amp.GradScaler
    (recommended for fp16). The model's states are reset first.
    check_finite=True: before every optimizer step, raise NonFiniteLossError if the
    loss (or, without a scaler, any gradient) is NaN/Inf; nothing is stepped then
    (under "ottt_o", earlier time steps of the same call were already stepped).
    cuda_graph=True (input on a CUDA device, mode "ottt_a" or "sltt", no amp/chunk): one time step is
    captured as a CUDA graph on the first call per input shape and replayed T times per call (nn._graph;
    up to four captured steps kept per model); the model must be a chain nn._chain takes (an
    nn.Sequential of ottt_cuda.nn layers, models.R400, the paper's VGG: ValueError naming what is not).
    Gradients are zeroed in place there (zero_grad(set_to_none=False)).
    """
    if mode not in TRAIN_MODES:
        raise ValueError(f"mode must be one of {TRAIN_MODES}, got {mode!r}")
    if not isinstance(check_finite, bool):
        raise TypeError(f"check_finite must be a bool, got {type(check_finite).__name__}")
    T = _validation.positive_int(T, "T")
    _check_common(model, x, amp)
    if isinstance(loss_alpha, bool) or not isinstance(loss_alpha, (int, float)) or not 0.0 <= loss_alpha <= 1.0:
        raise ValueError(f"loss_alpha must be a number in [0, 1], got {loss_alpha!r}")
    y_max = _check_targets(y, x, optimizer, scaler)
    y = y.long()  # cross_entropy/one_hot take int64 (or uint8) targets only; any integer dtype is accepted here
    auto = isinstance(chunk, str) and chunk == "auto"
    if auto:
        if mode != "ottt_a":
            raise ValueError(f"chunk='auto' is supported with mode 'ottt_a' only, got mode {mode!r}")
        if memory_budget is None:
            raise ValueError("chunk='auto' needs memory_budget (bytes, or a string like '6GB')")
        memory_budget = _budget.parse_bytes(memory_budget, "memory_budget")
    elif memory_budget is not None:
        raise ValueError(f"memory_budget is only used with chunk='auto', got chunk={chunk!r}")
    if chunk is not None:
        if not auto:
            chunk = _validation.positive_int(chunk, "chunk")
        if mode not in ("ottt_a", "sltt"):
            raise ValueError(f"chunk is supported with mode 'ottt_a' or 'sltt', got mode {mode!r}")
        if _sequential_only(model):
            raise ValueError("chunk cannot be used with a model that has feedback between time steps "
                             "(sequential_only)")
    if mode == "sltt_k":
        if k is None:
            raise ValueError("k must be given with mode 'sltt_k'")
        k = _validation.positive_int(k, "k")
        if k > T:
            raise ValueError(f"k must be <= T ({T}), got {k}")
    elif k is not None:
        raise ValueError(f"k is only used with mode 'sltt_k', got mode {mode!r}")
    if not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be a bool, got {type(cuda_graph).__name__}")
    if cuda_graph:
        _graph.check_request(model, x, mode, amp, scaler, chunk, k)
    if mode == "ottt_o" and optimizer is None:
        raise ValueError("optimizer must be given with mode 'ottt_o' (it steps after every time step)")
    if amp not in _AMP:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    amp = _AMP[amp]
    x_at, x_slice = _sequence_getter(x, T, y.shape[0], sequence)
    # Drawn before anything else so a caller can reproduce it with the same seed.
    chosen = set(torch.randperm(T)[:k].tolist()) if mode == "sltt_k" else None

    _state.reset(model)
    _state.set_mode(model, _LAYER_MODE[mode])
    _handoff.ensure_fused(model)  # LIF kernels update the next synapse's trace (nn.fuse_traces)
    if cuda_graph:
        loss, out_sum = _graph.train(model, x_at, y, T, loss_alpha, y_max, optimizer, capture=True)
        if check_finite:
            _check_finite(model, optimizer, loss, scaler, None)
        _optimizer_step(optimizer, scaler)
        return loss, out_sum
    run = _Runner(model, y, T, loss_alpha, amp, scaler, x.device, y_max)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)

    if mode == "ottt_o":
        # A plain chain of ottt_cuda layers runs its steps without autograd here too (nn._chain);
        # a per-step loss for check_finite, amp and a GradScaler keep the autograd path.
        chain = _chain.plan(model, x_at(0), per_step=True) if amp is None and scaler is None and not check_finite \
            else None
        if chain is not None:
            _ottt_o_chain(run, model, chain, x_at, T, optimizer)
            return run.loss, run.out_sum
        with _state.online_steps(model):
            for t in range(T):
                if t:
                    optimizer.zero_grad(set_to_none=True)
                loss = run.step(x_at(t), need_loss=check_finite)
                if check_finite:
                    _check_finite(model, optimizer, loss, scaler, t)
                _optimizer_step(optimizer, scaler)
        return run.loss, run.out_sum

    budget_key = counter = None
    if auto:
        is_sequence = x_slice(0, 1).dim() == x.dim()  # a static x gains the time dimension here
        budget_key = _budget.cache_key(x, T, is_sequence, amp, model.training)
        if _budget.recall(model, budget_key) is None:
            # Runs until the WS weights' hoisting is undone (it saves tensors for the weights' backward).
            counter = _budget.StepMemoryCounter(model, held=(x,)).start()
    try:
        # Weights are constant during the step: standardize WS weights once.
        with hoisted(model):
            if mode == "bptt":
                if _sequential_only(model):
                    loss = sum(run.step(x_at(t), backward=False) for t in range(T))
                    run.backward(loss)
                else:
                    run.chunk(x_slice(0, T))
            elif auto:
                _auto_chunks(run, model, x_slice, T, memory_budget, budget_key, counter)
            elif chunk is not None:
                for t0 in range(0, T, chunk):
                    run.chunk(x_slice(t0, min(chunk, T - t0)))
            else:
                # One backward per step, before the next: the layers may work in place; nothing
                # reads .grad before the optimizer step, so Linear weight gradients are summed late.
                with _state.online_steps(model, defer_weight_grads=True):
                    # A plain chain of ottt_cuda layers runs its steps without autograd (nn._chain).
                    chain = _chain.plan(model, x_at(0)) if chosen is None and amp is None and scaler is None else None
                    for t in range(T):
                        if chain is not None:
                            run.chain_step(chain, x_at(t))
                        elif chosen is None or t in chosen:
                            run.step(x_at(t), need_loss=False)
                        else:
                            with torch.no_grad():
                                run.step(x_at(t), backward=False)
    finally:
        if counter is not None:
            counter.stop()
    if counter is not None:
        _budget.remember(model, budget_key, counter)
        # Raises (before any optimizer step) when even chunk = 1 exceeds the budget.
        _budget.announce(model, _budget.choose_chunk(*_budget.recall(model, budget_key), memory_budget, T))
    if check_finite:
        _check_finite(model, optimizer, run.loss, scaler, None)
    _optimizer_step(optimizer, scaler)
    return run.loss, run.out_sum


def _ottt_o_chain(run, model, chain, x_at, T, optimizer):
    """OTTT_O's time steps through nn._chain: per step the WS weights standardized from the current
    values, the chain's forward and backward, the step's weight gradients added to .grad (the deferred
    rows first, then through the standardization: the order train_step's OTTT_A loop exits in), and
    the optimizer step. The same arithmetic as the autograd path (float64 tests)."""
    with _state.online_steps(model, defer_weight_grads=True):
        pending = _state.deferred_weight_grads(model)
        for t in range(T):
            if t:
                optimizer.zero_grad(set_to_none=True)
            with hoisted(model):
                run.chain_step(chain, x_at(t))
                for d in pending:
                    d.flush()
            optimizer.step()


def _auto_chunks(run, model, x_slice, T, budget, key, counter):
    """OTTT_A with the largest chunk that fits `budget`. The first call per (model, input shape,
    T) (`counter` given) runs chunks of one time step, the least memory possible, while the
    counter measures them; the chunk is chosen after it (train_step). Any chunking gives the
    same gradients."""
    if counter is not None:
        counter.begin_steps()
        for t in range(T):
            run.chunk(x_slice(t, 1))
        counter.end_steps()
        return
    plan = _budget.choose_chunk(*_budget.recall(model, key), budget, T)
    _budget.announce(model, plan)
    for t0 in range(0, T, plan.chunk):
        run.chunk(x_slice(t0, min(plan.chunk, T - t0)))


def evaluate(model, x, T, *, sequence=None, amp=None):
    """sum_t of the model's output over T steps, without a graph. Feed-forward
    models run all steps at once (one large GEMM/conv per layer)."""
    T = _validation.positive_int(T, "T")
    _check_common(model, x, amp)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    x_at, x_slice = _sequence_getter(x, T, None, sequence if sequence is not None else
                                     (False if x.dim() < 2 or x.shape[0] != T else None))
    _state.reset(model)
    with torch.no_grad(), _autocast(x.device, _AMP[amp]), hoisted(model, backward=False):
        if _sequential_only(model):
            out = sum(model(x_at(t)) for t in range(T))
        else:
            xs = x_slice(0, T)
            with _state.modes(model, "bptt"), _state.multistep(model, T):
                out = model(xs.flatten(0, 1)).unflatten(0, (T, xs.shape[1])).sum(0)
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
