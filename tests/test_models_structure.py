"""The paper's models pinned to the official code's structure (github pkuxmq/OTTT-SNN,
models/spiking_vgg.py and models/spiking_resnet_imagenet.py, read, not copied):
parameter counts, the skipinit gains, the feedback bias, the ImageNet head.
No forward pass here; the equivalences these imply are in test_models_paper.py."""
import math

import pytest
import torch

from ottt_cuda import nn as onn
from ottt_cuda.models import nf_resnet34, vgg11_ws, vgg11f_ws

# Parameter counts of the official models, derived by hand from their definitions
# (every sWS conv: weight + bias + per-channel gain; plain layers: weight + bias):
# - online_spiking_vgg11_ws, 10 classes, fc_hw 1: the eight 3x3 sWS convs
#   9,217,728 weights + 2 * 2,752 bias/gain = 9,223,232; Linear(512, 10) 5,130.
OFFICIAL_VGG11_WS_PARAMS = 9_228_362
# - online_spiking_vgg11f_ws: the same plus fb_conv = nn.Conv2d(512, 64, 3) with a
#   bias: 294,912 + 64 (the supplementary's Table 1 rounds VGG-F to 9.6M).
OFFICIAL_VGG11F_WS_PARAMS = 9_523_338
# - online_spiking_nfresnet34, 1000 classes: stem sWS 7x7 (3->64) 9,536; stage 1
#   3 x 73,985; stage 2 230,145 + 3 x 295,425; stage 3 919,041 + 5 x 1,180,673;
#   stage 4 3,673,089 + 2 x 4,720,641 (each block: two sWS 3x3 convs, a 1x1 sWS
#   shortcut in the first block of stages 2-4, and ONE scalar skipinit gain);
#   fc Linear(512, 1000) 513,000.
OFFICIAL_NF_RESNET34_PARAMS = 21_797_688


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_equal_the_official_models():
    assert n_params(vgg11_ws(num_classes=10)) == OFFICIAL_VGG11_WS_PARAMS
    assert n_params(vgg11f_ws(num_classes=10)) == OFFICIAL_VGG11F_WS_PARAMS
    assert n_params(nf_resnet34(num_classes=1000)) == OFFICIAL_NF_RESNET34_PARAMS


def test_vgg_f_feedback_conv_has_a_zero_initialized_bias():
    m = vgg11f_ws(num_classes=10)
    fb = m.fb_conv
    assert (fb.in_channels, fb.out_channels, fb.kernel_size, fb.padding) == (512, 64, (3, 3), (1, 1))
    assert fb.bias is not None and fb.bias.shape == (64,) and fb.bias.requires_grad
    assert (fb.weight == 0).all() and (fb.bias == 0).all()
    # A plain (not standardized) conv whose weight gradient uses the trace of f[t-1].
    assert type(fb) is onn.Conv2d and fb.trace and fb.trace_decay == 0.5


def test_vgg_f_is_vgg11_plus_the_feedback_conv():
    names_f = {n for n, _ in vgg11f_ws(num_classes=10).named_parameters()}
    names = {n for n, _ in vgg11_ws(num_classes=10).named_parameters()}
    assert names_f - names == {"fb_conv.weight", "fb_conv.bias"} and names <= names_f


def test_nf_resnet34_blocks_have_a_zero_initialized_skipinit_gain():
    m = nf_resnet34(num_classes=1000)
    blocks = list(m.blocks)
    assert len(blocks) == 16
    for b in blocks:
        g = b.skipinit_gain
        assert isinstance(g, torch.nn.Parameter) and g.shape == () and g.requires_grad and g.item() == 0.0
        assert b.alpha == 0.2
    # One gain per block and nothing else new: 16 scalar parameters.
    assert sum(p.dim() == 0 for p in m.parameters()) == 16


def test_nf_resnet34_has_no_spiking_layer_before_the_classifier():
    m = nf_resnet34(num_classes=1000)
    # Two neurons per basic block, none in the stem or the head: 32, not 33.
    assert sum(isinstance(x, onn.LIF) for x in m.modules()) == 32
    assert all(isinstance(x, onn.LIF) for b in m.blocks for x in (b.act1[0], b.act2[0]))
    # Between the last block's residual sum and the classifier: pooling and flattening only.
    assert [type(x) for x in m.head] == [torch.nn.AdaptiveAvgPool2d, torch.nn.Flatten]
    assert m.head[0].output_size == 1
    assert not any(isinstance(x, (onn.LIF, onn.Scale)) for x in m.head.modules())


def test_nf_resnet34_classifier_is_an_untraced_plain_linear_with_the_official_init():
    torch.manual_seed(0)
    fc = nf_resnet34(num_classes=1000).fc
    assert type(fc) is onn.Linear and not fc.trace  # weight gradient from its current (real) input
    assert (fc.in_features, fc.out_features) == (512, 1000)
    assert (fc.weight == 0).all()
    # PyTorch's default Linear bias: U(-1/sqrt(512), 1/sqrt(512)), std = bound / sqrt(3).
    bound = 1 / math.sqrt(512)
    assert fc.bias.abs().max().item() <= bound
    assert fc.bias.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_nf_resnet34_synapses_traced_except_the_stem_and_the_classifier():
    m = nf_resnet34(num_classes=10)
    syn = [x for x in m.modules() if isinstance(x, onn.Conv2d)]
    assert syn[0] is m.stem and not m.stem.trace and isinstance(m.stem, onn.WSConv2d)
    assert all(s.trace and isinstance(s, onn.WSConv2d) for s in syn[1:])
    assert len(syn) == 1 + 16 * 2 + 3  # stem, two convs per block, three 1x1 shortcuts


def test_vgg11_ws_classifier_stays_traced():
    # In VGG the classifier's input is pooled spikes: the official code traces it (unlike NF-ResNet's).
    fc = vgg11_ws(num_classes=10).classifier[2]
    assert type(fc) is onn.Linear and fc.trace and fc.trace_decay == 0.5
