"""Issue 14's 20-epoch screening of Fashion-MNIST R400 recipe variants, as it was run.

    python benchmarks/fmnist_screen.py ARM SEED EPOCHS MODE OUT_DIR [more ottt-train options]

ARM: "base" (the fmnist recipe), "init_default" (PyTorch's default Linear initialization instead of
the paper-code N(0, 0.01)), "drop_rec" (the hidden layer's dropout mask also on the spikes fed back to
the recurrent synapse), "norm_mnist" (MNIST's mean/std for the input), "input_raw" (the input synapse's weight gradient
uses the input x itself, not its trace x_hat: what the paper's public code does for its first,
image-fed layer), "cos_iter" (the cosine schedule stepped after every optimizer step, over all the run's
iterations, instead of once per epoch as the paper's code), "rec_zero" (the recurrent synapse's weights
start at zero instead of N(0, 0.01): what the paper's public code does for the feedback synapse of its
other feedback model, VGG-11F of supplementary D.2), "readout_raw" (the readout synapse's weight gradient uses
the hidden spikes s[t] themselves, not their trace: the readout is memoryless, o[t] = W s[t], so this is its
exact gradient, equal to BPTT's; the trace is exact only for a synapse feeding a leaky membrane. A diagnostic,
not a recipe candidate: the supplementary's Algorithm 1 takes the trace for every layer, the readout included,
as the paper's public VGG code does), "tf32" (every matmul of the training step and of the evaluation takes its
float32 operands rounded to TF32, 10 mantissa bits, and accumulates in float32: what the paper's RTX 3090
did by default with PyTorch before 1.12, which allowed TF32 for matmuls; a diagnostic of the arithmetic,
not a recipe candidate), or several joined with "+".
The variants are applied in this process only, by replacing the pieces they change, so that the
screening could run against the released recipe unchanged; `drop_rec` is now also the library's
`R400(feedback_dropout=True)` (see the recipe). Results: benchmarks/results/fmnist_screen_20ep.*.
"""
import importlib
import math
import sys

import torch
import torch.nn.functional as F

from ottt_cuda.nn import _chain, recurrent, synapse
from ottt_cuda.train import cli, data, runner

r400mod = importlib.import_module("ottt_cuda.models.r400")

KNOWN = {"base", "init_default", "drop_rec", "norm_mnist", "input_raw", "cos_iter", "rec_zero", "readout_raw",
         "tf32"}
FMNIST_TRAIN = 60000


class _NoEpochStep:
    """cos_iter's scheduler as the runner sees it: the per-epoch step does nothing (the optimizer's
    own step sets the rate); its state is the wrapped scheduler's, so checkpoints still write."""

    def __init__(self, sched):
        self.sched = sched

    def step(self):
        pass

    def state_dict(self):
        return self.sched.state_dict()

    def load_state_dict(self, sd):
        self.sched.load_state_dict(sd)


def _per_iteration_cosine(build):
    def build_optimizer(cfg, model):
        opt, sched = build(cfg, model)
        if cfg["schedule"] != "cosine" or cfg["limit_batches"] is not None or cfg["resume"]:
            raise SystemExit("cos_iter: cosine schedule, whole epochs, no --resume")
        total = cfg["epochs"] * math.ceil(FMNIST_TRAIN / cfg["batch"])
        base_lr, step, done = cfg["lr"], opt.step, [0]

        def stepped(*args, **kwargs):
            # lr_i = lr (1 + cos(pi i / total)) / 2 for the i-th step; the per-epoch schedule holds
            # lr_e = lr (1 + cos(pi e / epochs)) / 2 over the whole epoch e instead.
            for g in opt.param_groups:
                g["lr"] = base_lr * 0.5 * (1.0 + math.cos(math.pi * done[0] / total))
            done[0] += 1
            return step(*args, **kwargs)
        opt.step = stepped
        return opt, _NoEpochStep(sched)
    return build_optimizer


def _after_r400_init(change):
    """Run change(model) at the end of every R400's __init__ (arms combine: each wraps the one before)."""
    orig_init = r400mod.R400.__init__

    def init(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        change(self)
    r400mod.R400.__init__ = init


def tf32(t):
    """float32 t rounded to TF32 (1 + 10 mantissa bits, the float32 exponent), to nearest, ties to even:
    what Ampere's tensor cores keep of a matmul's operands when TF32 is allowed (PyTorch's notes: "rounding
    input data to have 10 bits of mantissa, and accumulating results with FP32 precision"). On the bit
    pattern: add half of the dropped 13 bits' range (less one, plus the kept last bit: ties go to even) and
    clear them; a carry into the exponent is the correct rounding up. Finite inputs only (none else here)."""
    if t.dtype != torch.float32:
        raise TypeError(f"tf32: t must be float32, got {t.dtype}")
    bits = t.contiguous().view(torch.int32)
    return ((bits + (0xFFF + ((bits >> 13) & 1))) & ~0x1FFF).view(torch.float32)


class _TF32Functional:
    """torch.nn.functional with linear's operands rounded to TF32 (the bias added in float32, as cuBLAS's
    epilogue does): put in place of the F the chain and the synapses call."""

    def __getattr__(self, name):
        return getattr(F, name)

    @staticmethod
    def linear(x, w, b=None):
        return F.linear(tf32(x), tf32(w), b)


def _tf32_matmuls():
    """The OTTT_A step (nn._chain) and the evaluation's forward with TF32 matmuls. Forward: F x and W s
    through _TF32Functional. Backward, per step: the weight gradient g^T a (deferred, summed over the steps
    in float32: the products of two TF32 numbers are exact in float32) and the input gradient g W, both
    with rounded operands. Not as on the GPU: the bias gradient, a float32 sum of g there, sums the rounded
    g here (2^-11 relative per term at most). The weight passed on to the deferral is the parameter itself
    (its .grad is where the rows go), so it is rounded only where it enters the product."""
    _chain.F = synapse.F = _TF32Functional()
    defer = _chain._linear_backward

    def linear_backward(m, saved, g, below):
        w, a, c = saved
        g = tf32(g)
        defer(m, (w, tf32(a if c == 1.0 else a * c), 1.0), g, False)
        return g.matmul(tf32(w)) if below else None
    _chain._linear_backward = linear_backward
    plan = _chain.plan

    def plan_or_refuse(model, x, per_step=False):
        # Only the chain's products are rounded: a step on the autograd path would be plain float32.
        chain = plan(model, x, per_step)
        if chain is None:
            why = _chain.check(model, x, deferred=not per_step)[1] or "nn._chain is disabled"
            raise SystemExit(f"tf32: the training step would not run through nn._chain ({why}), and only "
                             "the chain's products are rounded here: build ottt_cuda's compiled extension")
        return chain
    _chain.plan = plan_or_refuse


def apply(arms):
    if "tf32" in arms:             # the paper's GPU's default matmul arithmetic (RTX 3090, PyTorch < 1.12)
        _tf32_matmuls()
    if "cos_iter" in arms:
        runner.build_optimizer = _per_iteration_cosine(runner.build_optimizer)
    if "norm_mnist" in arms:       # the author's earlier Fashion-MNIST script normalizes with MNIST's statistics
        data.FMNIST_MEAN, data.FMNIST_STD = 0.1307, 0.3081
    if "init_default" in arms:     # PyTorch's default Linear init instead of N(0, 0.01)
        r400mod.init_paper = lambda m: m
    if "input_raw" in arms:        # the input synapse untraced (the paper's code: its first layer is not wrapped)
        _after_r400_init(lambda model: setattr(model.rnn.input, "trace", False))
    if "rec_zero" in arms:         # the recurrent synapse zero-initialized (the paper's code: VGG-11F's fb_conv)
        _after_r400_init(lambda model: model.rnn.recurrent.weight.data.zero_())
    if "readout_raw" in arms:      # the readout's gradient from s[t] (exact for a memoryless readout) not its trace
        _after_r400_init(lambda model: setattr(model.readout, "trace", False))
    if "drop_rec" in arms:         # the hidden layer's dropout mask also on the spikes fed back
        orig_forward = r400mod.R400.forward

        def forward(self, x):
            self.rnn._fb_drop = self.dropout
            return orig_forward(self, x)
        r400mod.R400.forward = forward

        def _cell(self, current):
            if self.s_prev is not None:
                current = current + self.recurrent.step(self.s_prev)
            s = self.neuron.step(current)
            fb = self._fb_drop.step(s) if getattr(self, "_fb_drop", None) is not None else s
            self.s_prev = fb if self.mode == "bptt" else fb.detach()
            return s
        recurrent.RecurrentLIF._cell = _cell


def main(argv):
    if len(argv) < 5:
        raise SystemExit(__doc__)
    arm, seed, epochs, mode, out = argv[:5]
    arms = set(arm.split("+"))
    if not arms <= KNOWN:
        raise SystemExit(f"ARM must be {'/'.join(sorted(KNOWN))} (or several joined with +), got {arm!r}")
    apply(arms)
    return cli.main(["fmnist", "--mode", mode, "--seed", seed, "--epochs", epochs, "--threads", "1",
                     "--out-dir", out, "--no-progress"] + argv[5:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
