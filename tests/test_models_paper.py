"""The paper's models: initialization, every training mode, and in float64 the
equivalences that follow from the official structure (test_models_structure.py
pins the structure itself)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ottt_cuda
from ottt_cuda import nn as onn
from ottt_cuda.models import NFResNet, VGGFWS, nf_resnet34, r400, vgg11_ws, vgg11f_ws
from _firing import assert_fires, recording
from _compare import rel_err
from _reference import ref_standardize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAMMA = 2.74  # the sWS scale after every spiking neuron


def test_vgg11_ws_structure_and_init():
    torch.manual_seed(0)
    m = vgg11_ws(num_classes=10)
    syn = [x for x in m.modules() if isinstance(x, (onn.Conv2d, onn.Linear))]
    assert [s.out_channels for s in syn[:-1]] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert not syn[0].trace and all(s.trace for s in syn[1:])
    assert all(isinstance(s, onn.WSConv2d) for s in syn[:-1]) and type(syn[-1]) is onn.Linear
    assert sum(isinstance(x, torch.nn.AvgPool2d) for x in m.modules()) == 3
    assert all(s.c == 2.74 for s in m.modules() if isinstance(s, onn.Scale))
    w = syn[1].weight  # kaiming normal, fan_out, relu: std = sqrt(2 / (out * 9))
    assert w.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.05)
    assert syn[-1].weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert all((s.bias == 0).all() for s in syn) and all((s.gain == 1).all() for s in syn[:-1])
    assert m.classifier[2].in_features == 512


# ---- VGG-F ------------------------------------------------------------------------------------


def _steps(model, x, T):
    """Per-step outputs of T forward steps from a reset state (no graph)."""
    ottt_cuda.reset(model)
    with torch.no_grad():
        return [model(x) for _ in range(T)]


def test_vgg_f_with_zero_feedback_computes_vgg11_with_the_same_weights():
    torch.manual_seed(0)
    plain = vgg11_ws(num_classes=10).double()
    with torch.no_grad():  # with gain 1 the deep layers are silent at this small size
        for conv in [c for c in plain.features if isinstance(c, onn.WSConv2d)][1:]:
            conv.gain.fill_(2.5)
    fb = vgg11f_ws(num_classes=10).double()
    missing = fb.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["fb_conv.bias", "fb_conv.weight"]  # zero-initialized by VGG-F itself
    x = 4 * torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with recording(fb) as rates:
        out_f = _steps(fb, x, 3)
    assert_fires(rates)
    out = _steps(plain, x, 3)
    assert all(torch.equal(a, b) for a, b in zip(out_f, out))  # the feedback adds exact zeros
    # The bias alone (weight still 0) changes every step after the first, where it enters.
    with torch.no_grad():
        fb.fb_conv.bias.fill_(0.5)
    out_b = _steps(fb, x, 3)
    assert torch.equal(out_b[0], out[0])
    assert rel_err(out_b[1], out[1]) > 1e-3 and rel_err(out_b[2], out[2]) > 1e-3


def test_vgg_f_feedback_weight_and_bias_learn_from_the_first_step():
    torch.manual_seed(0)
    m = VGGFWS([8, "A", 16], num_classes=4).double()
    assert m.fb_conv.in_channels == 16 and m.fb_conv.out_channels == 8
    assert (m.fb_conv.weight == 0).all() and (m.fb_conv.bias == 0).all()
    x = 3 * torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([1, 2])
    ottt_cuda.train_step(m, x, y, None, T=3)
    # A zero-initialized bias that gets a gradient makes the model differ from one without it
    # after the first update, as the official VGG-F does.
    assert m.fb_conv.bias.grad.abs().max() > 0 and m.fb_conv.weight.grad.abs().max() > 0
    m.zero_grad()
    ottt_cuda.train_step(m, x, y, None, T=3, mode="bptt")  # step-by-step BPTT through the feedback
    assert m.fb_conv.bias.grad.abs().max() > 0 and m.fb_conv.weight.grad.abs().max() > 0
    with pytest.raises(ValueError, match="chunk"):
        ottt_cuda.train_step(m, x, y, None, T=3, chunk=2)


# ---- R400: every training mode ------------------------------------------------------------------


def _r400_after_one_step(mode, T, x, y, lr=0.1):
    torch.manual_seed(0)
    m = r400(dropout=0.0).double()
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    with recording(m) as rates:
        loss, out = ottt_cuda.train_step(m, x, y, opt, T=T, mode=mode, k=T if mode == "sltt_k" else None)
    assert_fires(rates)
    return loss, out, torch.cat([p.detach().flatten() for p in m.parameters()])


def test_r400_paper_structure():
    m = r400()
    assert isinstance(m.rnn.input, onn.WSLinear) and m.rnn.recurrent.weight.shape == (400, 400)
    assert m.dropout.p == 0.2 and m.readout.trace and m.readout.trace_decay == 0.5


@pytest.mark.parametrize("mode", ["ottt_o", "sltt", "sltt_k", "bptt"])
def test_r400_every_mode_equals_ottt_a_at_one_step_and_differs_at_three(mode):
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(2, 1, 28, 28, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 2])
    # T = 1: no history to differ over, so every mode takes the same SGD step (and the same forward).
    loss_a, out_a, p_a = _r400_after_one_step("ottt_a", 1, x, y)
    loss_m, out_m, p_m = _r400_after_one_step(mode, 1, x, y)
    assert rel_err(loss_m, loss_a) <= 1e-12 and rel_err(out_m, out_a) <= 1e-12
    assert rel_err(p_m, p_a) <= 1e-12
    torch.manual_seed(0)
    p0 = torch.cat([p.detach().flatten() for p in r400(dropout=0.0).double().parameters()])
    assert (p_a - p0).abs().max() > 1e-6  # the step moved the weights
    # T = 3: each mode computes its own gradient (trace vs input, with or without history,
    # one optimizer step per time step), so the parameters after the step differ.
    _, _, p_a3 = _r400_after_one_step("ottt_a", 3, x, y)
    _, _, p_m3 = _r400_after_one_step(mode, 3, x, y)
    assert rel_err(p_m3 - p0, p_a3 - p0) > 1e-6


# ---- NF-ResNet ----------------------------------------------------------------------------------


def small_nf_resnet(seed=0, gains=None):
    """Two identity blocks and one transition block at width 4, float64; `gains`
    sets every skipinit gain (the paper's 0 when None), the classifier weight is
    drawn so that gradients reach the blocks."""
    torch.manual_seed(seed)
    m = NFResNet(layers=(2, 1), num_classes=5, width=4).double()
    with torch.no_grad():
        m.fc.weight.normal_(0.0, 0.5)
        for conv in [c for c in m.modules() if isinstance(c, onn.WSConv2d)][1:]:
            conv.gain.fill_(1.5)  # livelier spikes at this tiny width
        if gains is not None:
            for b, gv in zip(m.blocks, gains):
                b.skipinit_gain.fill_(gv)
    return m


def nf_data(seed=1, B=2, hw=16):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(B, 3, hw, hw, generator=g, dtype=torch.float64), torch.randint(0, 5, (B,), generator=g)


def test_nf_resnet34_beta_follows_the_expected_variance():
    m = nf_resnet34(num_classes=10)
    blocks = list(m.blocks)
    assert sum(b.shortcut is not None for b in blocks) == 3  # stage 1 keeps identity skips
    # beta from the expected variance: 1 at the start, +alpha^2 per block, reset after a conv shortcut.
    assert blocks[0].beta == 1.0
    assert blocks[1].beta == pytest.approx(math.sqrt(1 + 0.04))
    assert blocks[2].beta == pytest.approx(math.sqrt(1 + 0.08))
    assert blocks[3].beta == pytest.approx(math.sqrt(1 + 0.12))  # first block of stage 2
    assert blocks[4].beta == pytest.approx(math.sqrt(1 + 0.04))
    assert blocks[7].beta == pytest.approx(math.sqrt(1 + 0.16))  # first block of stage 3: 3 blocks after a reset
    assert blocks[8].beta == pytest.approx(math.sqrt(1 + 0.04))
    assert m.stem.stride == (2, 2) and m.stem.kernel_size == (7, 7) and isinstance(m.pool, torch.nn.AvgPool2d)


def _ref_spikes(xs, beta):
    """2.74 * spikes of a fresh LIF (tau 2, soft reset, threshold 1) driven by x[t] / beta, by hand."""
    v, out = 0.0, []
    for x in xs:
        h = 0.5 * v + x / beta
        s = (h >= 1.0).to(x.dtype)
        v = h - s
        out.append(GAMMA * s)
    return out


def test_nf_resnet_blocks_with_zero_gain_are_their_shortcut_path():
    m = small_nf_resnet()
    g = torch.Generator().manual_seed(2)
    identity_block, transition = m.blocks[0], m.blocks[2]
    assert identity_block.shortcut is None and transition.shortcut is not None
    xs = [2 * torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    ottt_cuda.reset(m)
    with torch.no_grad():
        assert all(torch.equal(identity_block(x), x) for x in xs)
    xs = [2 * torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    sc = transition.shortcut
    w = ref_standardize(sc.weight, sc.gain, sc.eps)
    expected = [F.conv2d(s, w, sc.bias, stride=2) for s in _ref_spikes(xs, transition.beta)]
    ottt_cuda.reset(m)
    with torch.no_grad():
        got = [transition(x) for x in xs]
    assert all(rel_err(a, e) <= 1e-12 for a, e in zip(got, expected))
    # With a nonzero gain the branch is added: the same block is no longer its shortcut path.
    with torch.no_grad():
        transition.skipinit_gain.fill_(1.0)
        ottt_cuda.reset(m)
        got = [transition(x) for x in xs]
    assert rel_err(got[0], expected[0]) > 1e-3


def _ref_conv(x, conv):
    w = ref_standardize(conv.weight, conv.gain, conv.eps)
    return F.conv2d(x, w, conv.bias, conv.stride, conv.padding)


def _ref_block(block, xs, alpha=0.2):
    """The paper's basic block by hand over the steps xs: a = 2.74 * LIF(x / beta),
    out = skip + gain * alpha * conv2(2.74 * LIF(conv1(a))), skip = x or shortcut(a)."""
    a1 = _ref_spikes(xs, block.beta)
    a2 = _ref_spikes([_ref_conv(a, block.conv1) for a in a1], 1.0)
    gain = block.skipinit_gain.item()
    return [(x if block.shortcut is None else _ref_conv(a, block.shortcut)) + gain * alpha * _ref_conv(b, block.conv2)
            for x, a, b in zip(xs, a1, a2)]


@pytest.mark.parametrize("index", [1, 2], ids=["identity", "transition"])
def test_nf_resnet_block_equals_the_paper_block_by_hand(index):
    m = small_nf_resnet(gains=(0.7, 0.7, 0.7))
    block = m.blocks[index]
    g = torch.Generator().manual_seed(3)
    hw = 8 if block.shortcut is None else 4
    xs = [2 * torch.randn(2, 4, hw, hw, generator=g, dtype=torch.float64) for _ in range(3)]
    ottt_cuda.reset(m)
    with recording(block) as rates, torch.no_grad():
        got = [block(x) for x in xs]
    assert_fires(rates)
    expected = _ref_block(block, xs)
    assert all(rel_err(a, e) <= 1e-12 for a, e in zip(got, expected))
    # The branch contributes at every step, so a missing alpha (or gain) would be seen.
    assert all(rel_err(a, w) > 1e-3 for a, w in zip(got, _ref_block(block, xs, alpha=1.0)))


def test_nf_resnet_classifier_gradient_uses_its_current_real_valued_input():
    """Under OTTT_A the classifier's weight gradient is sum_t g[t]^T x[t] of its CURRENT
    input x[t] (the pooled residual stream), not of a trace of it."""
    m = small_nf_resnet(gains=(0.7, -0.4, 0.9))
    x, y = nf_data()
    T, a = 3, 0.05
    seen, stream = [], []
    h1 = m.fc.register_forward_hook(lambda mod, i, o: seen.append((i[0].detach().clone(), o.detach().clone())))
    h2 = m.blocks[-1].register_forward_hook(lambda mod, i, o: stream.append(o.detach().clone()))
    try:
        with recording(m) as rates:
            ottt_cuda.train_step(m, x, y, None, T=T, mode="ottt_a", loss_alpha=a)
        assert_fires(rates)
    finally:
        h1.remove()
        h2.remove()
    assert len(seen) == T
    onehot = F.one_hot(y, 5).double()
    B, C = onehot.shape
    gw = torch.zeros_like(m.fc.weight)
    gb = torch.zeros_like(m.fc.bias)
    traced_gw, trace = torch.zeros_like(m.fc.weight), 0
    for (xin, u), s in zip(seen, stream):
        assert rel_err(xin, s.mean((2, 3))) <= 1e-14  # the real-valued stream, average-pooled
        # d/du of ((1-a) CE(u, y) + a MSE(u, onehot)) / T, by hand.
        g = ((1 - a) * (torch.softmax(u, 1) - onehot) / B + a * 2 * (u - onehot) / (B * C)) / T
        gw += g.t() @ xin
        gb += g.sum(0)
        trace = 0.5 * trace + xin
        traced_gw += g.t() @ trace
    assert not torch.equal(seen[0][0] / GAMMA, (seen[0][0] / GAMMA).round())  # not pooled spikes
    assert rel_err(m.fc.weight.grad, gw) <= 1e-12 and rel_err(m.fc.bias.grad, gb) <= 1e-12
    assert rel_err(m.fc.weight.grad, traced_gw) > 1e-3  # a traced classifier would differ


def test_nf_resnet_ottt_a_equals_bptt_at_one_time_step():
    x, y = nf_data()
    grads = {}
    for mode, T in (("ottt_a", 1), ("bptt", 1), ("ottt_a", 2), ("bptt", 2)):
        m = small_nf_resnet(gains=(0.7, -0.4, 0.9))
        with recording(m) as rates:
            ottt_cuda.train_step(m, x, y, None, T=T, mode=mode)
        assert_fires(rates)
        grads[mode, T] = {n: p.grad.clone() for n, p in m.named_parameters()}
    g1a, g1b = grads["ottt_a", 1], grads["bptt", 1]
    assert all(g.abs().max() > 0 for g in g1b.values())  # every parameter learns, none is trivially equal
    assert all(rel_err(g1a[n], g1b[n]) <= 1e-12 for n in g1a)
    # At T = 2 the membrane history makes them differ (so the check above is not vacuous).
    flat = {k: torch.cat([g.flatten() for g in v.values()]) for k, v in grads.items()}
    assert rel_err(flat["ottt_a", 2], flat["bptt", 2]) > 1e-6


def test_nf_resnet_paper_init_first_step_trains_only_the_classifier():
    # Zero classifier weight: W^T g = 0, so nothing below the classifier gets a gradient at the
    # first step (the official model's behaviour); the classifier itself does.
    torch.manual_seed(0)
    m = NFResNet(layers=(2, 1), num_classes=5, width=4).double()
    x, y = nf_data()
    ottt_cuda.train_step(m, x, y, None, T=2)
    assert m.fc.weight.grad.abs().max() > 0 and m.fc.bias.grad.abs().max() > 0
    assert all((p.grad is None or (p.grad == 0).all()) for n, p in m.named_parameters() if not n.startswith("fc."))


# ---- the ImageNet-step benchmark ----------------------------------------------------------------

BENCH = os.path.join(ROOT, "benchmarks", "imagenet_step.py")


def test_imagenet_step_benchmark_parses_without_torch_and_rejects_bad_sizes():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import imagenet_step as b; "
            "a = b.parse_args(['--T', '2']); print(a.T, a.batch, a.image_size, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(BENCH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "32", "224", "False"]  # the paper's batch/size; torch not imported yet
    r = subprocess.run([sys.executable, BENCH, "--batch", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--batch" in r.stderr


@pytest.mark.slow
def test_imagenet_step_benchmark_tiny_on_cpu(tmp_path):
    out = tmp_path / "step.json"
    r = subprocess.run([sys.executable, BENCH, "--device", "cpu", "--batch", "1", "--T", "1", "--image-size", "32",
                        "--classes", "10", "--warmup", "0", "--reps", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    # At T = 1 OTTT_A and BPTT compute the same gradient (float32, same kernels on the CPU).
    assert res["check"]["ok"] and res["check"]["grad_norm_T1"] > 0
    assert res["check"]["grad_rel_err_T1"] <= 1e-5  # float32 rounding only; a wrong gradient is ~1e-1
    assert [x["mode"] for x in res["results"]] == ["ottt_a", "bptt"]
    assert all(x["ms_per_step"] > 0 and x["peak_bytes"] is None and math.isfinite(x["loss"]) for x in res["results"])
    assert res["config"]["T"] == 1 and res["machine"]["device"] == "cpu"
