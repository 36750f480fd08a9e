"""The paper's VGG with scaled weight standardization (and VGG-F, supplementary D.2)."""
import torch.nn as nn
import torch.nn.functional as F

from .. import nn as onn
from .._validation import positive_ints as check_sizes
from ._init import init_paper

VGG11_CFG = [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512]
WS_GAMMA = 2.74


def make_features(cfg, in_channels=3, dropout=0.0, tau=2.0, ws=True, neuron_kwargs=None):
    """Conv(3x3) -> LIF -> Scale(2.74) [-> Dropout] per number in cfg, "A" a 2x2
    average pool, "M" a 2x2 max pool. The first conv sees the real-valued input:
    its weight gradient uses the input itself (trace=False)."""
    layers, c, first = [], in_channels, True
    decay = 1.0 - 1.0 / tau
    for v in cfg:
        if v == "A":
            layers.append(nn.AvgPool2d(2, 2))
        elif v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            conv = onn.WSConv2d if ws else onn.Conv2d
            layers += [conv(c, v, 3, padding=1, trace=not first, trace_decay=decay),
                       onn.LIF(tau=tau, **(neuron_kwargs or {})), onn.Scale(WS_GAMMA if ws else 1.0)]
            if dropout > 0:
                layers.append(onn.Dropout(dropout))
            c, first = v, False
    return nn.Sequential(*layers), c


class VGGWS(nn.Module):
    """features -> adaptive avg-pool to fc_hw x fc_hw -> flatten -> Linear (light classifier)."""
    # forward is the composition of these (Sequentials, in this order): train_step's OTTT_A / SLTT loop
    # and its CUDA-graph step may run the time steps through their layers without autograd (nn._chain).
    # Not inherited: VGGFWS's forward adds a feedback.
    _ottt_chain = ("features", "classifier")

    def __init__(self, cfg=VGG11_CFG, num_classes=10, in_channels=3, fc_hw=1, dropout=0.0, tau=2.0, ws=True,
                 neuron_kwargs=None):
        super().__init__()
        self.features, c = make_features(cfg, in_channels, dropout, tau, ws, neuron_kwargs)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d((fc_hw, fc_hw)), nn.Flatten(1),
                                        onn.Linear(c * fc_hw * fc_hw, num_classes, trace_decay=1.0 - 1.0 / tau))
        init_paper(self)
        onn.fuse_traces(self)  # each LIF updates the next conv's trace in its own pass

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg11_ws(num_classes=10, in_channels=3, fc_hw=1, dropout=0.0, tau=2.0):
    check_sizes(num_classes=num_classes, in_channels=in_channels, fc_hw=fc_hw)
    return VGGWS(VGG11_CFG, num_classes, in_channels, fc_hw, dropout, tau)


class VGGFWS(VGGWS):
    """VGG-F: at step t > 1 the first conv block's input current is
    conv1(x) + fb_conv(up(f[t-1])), f[t-1] the last conv block's output at the
    previous step, up nearest upsampling to the input resolution, fb_conv a
    3x3 conv with a bias, both zero-initialized as in the official model (its
    weight gradient uses the trace of its input like every synapse). The
    feedback makes the model step-by-step only."""

    sequential_only = True

    def __init__(self, cfg=VGG11_CFG, num_classes=10, in_channels=3, fc_hw=1, dropout=0.0, tau=2.0):
        super().__init__(cfg, num_classes, in_channels, fc_hw, dropout, tau)
        first = next(m for m in self.features if isinstance(m, onn.Conv2d))
        last_c = [v for v in cfg if not isinstance(v, str)][-1]
        self.fb_conv = onn.Conv2d(last_c, first.out_channels, 3, padding=1, bias=True,
                                  trace_decay=1.0 - 1.0 / tau)
        # Zero weight AND bias: at initialization VGG-F computes exactly what VGG-11 does.
        nn.init.zeros_(self.fb_conv.weight)
        nn.init.zeros_(self.fb_conv.bias)
        self.f_prev = None

    def reset_state(self):
        self.f_prev = None

    def forward(self, x):
        h = self.features[0](x)
        if self.f_prev is not None:
            h = h + self.fb_conv(F.interpolate(self.f_prev, size=x.shape[-2:], mode="nearest"))
        for m in list(self.features)[1:]:
            h = m(h)
        bptt = any(getattr(m, "mode", None) == "bptt" for m in self.features)
        self.f_prev = h if bptt else h.detach()
        return self.classifier(h)


def vgg11f_ws(num_classes=10, in_channels=3, fc_hw=1, dropout=0.0, tau=2.0):
    check_sizes(num_classes=num_classes, in_channels=in_channels, fc_hw=fc_hw)
    return VGGFWS(VGG11_CFG, num_classes, in_channels, fc_hw, dropout, tau)
