"""NF-ResNet-34 with sWS and spiking neurons (supplementary C.1, after Brock et al.),
structured as the paper's official ImageNet model.

Residual stream x_{l+1} = x_l + alpha * g_l * f_l(x_l / beta_l):
- each branch starts with a spiking neuron on x_l / beta_l (spikes * 2.74);
  its convolutions are sWS and traced (their inputs are spikes); the stem sees
  the image, so its weight gradient uses the image itself (untraced);
- g_l is a learnable scalar "skipinit" gain, initialized to 0, so every block
  starts as its shortcut path (the NF-ResNet pseudocode the supplementary follows);
- beta_l = sqrt of the expected variance of the stream, which grows by alpha^2
  per block and is reset to 1 + alpha^2 after each transition block, whose
  shortcut is a strided 1x1 sWS conv of the same activated input.
The head is average pool -> flatten -> linear on the REAL-VALUED residual stream
(no neuron before it), so the classifier's weight gradient uses its current input
(untraced), as a synapse after a non-spiking layer must. Its weight starts at 0
and its bias at PyTorch's default, as the official model.
"""
import math

import torch
import torch.nn as nn

from .. import nn as onn
from .._validation import positive_ints as check_sizes
from ._init import init_paper
from .vgg import WS_GAMMA


def _act(tau):
    return nn.Sequential(onn.LIF(tau=tau), onn.Scale(WS_GAMMA))


class NFBasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, beta, alpha, tau):
        super().__init__()
        decay = 1.0 - 1.0 / tau
        self.beta, self.alpha = beta, alpha
        self.act1 = _act(tau)
        self.conv1 = onn.WSConv2d(c_in, c_out, 3, stride, 1, trace_decay=decay)
        self.act2 = _act(tau)
        self.conv2 = onn.WSConv2d(c_out, c_out, 3, 1, 1, trace_decay=decay)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = onn.WSConv2d(c_in, c_out, 1, stride, 0, trace_decay=decay)
        # SkipInit: the branch is switched off at initialization and learns how much to add.
        self.skipinit_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        out = self.act1(x / self.beta)
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.act2(self.conv1(out)))
        return out * self.skipinit_gain * self.alpha + skip


class NFResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), num_classes=1000, alpha=0.2, tau=2.0, in_channels=3, width=64):
        super().__init__()
        decay = 1.0 - 1.0 / tau
        self.stem = onn.WSConv2d(in_channels, width, 7, 2, 3, trace=False, trace_decay=decay)
        self.pool = nn.AvgPool2d(3, 2, 1)
        blocks, c, expected_var = [], width, 1.0
        for i, n in enumerate(layers):
            c_out = width * 2 ** i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                block = NFBasicBlock(c, c_out, stride, math.sqrt(expected_var), alpha, tau)
                blocks.append(block)
                c = c_out
                # A block with a conv shortcut resets the variance of the stream.
                expected_var = 1.0 + alpha ** 2 if block.shortcut is not None else expected_var + alpha ** 2
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        init_paper(self)
        # Built after init_paper so its bias keeps PyTorch's default initialization.
        # trace=False: its input is real-valued (not spikes), the gradient uses it directly.
        self.fc = onn.Linear(c, num_classes, trace=False, trace_decay=decay)
        nn.init.zeros_(self.fc.weight)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.pool(self.stem(x)))))


def nf_resnet34(num_classes=1000, alpha=0.2, tau=2.0, in_channels=3):
    check_sizes(num_classes=num_classes, in_channels=in_channels)
    return NFResNet((3, 4, 6, 3), num_classes, alpha, tau, in_channels)
