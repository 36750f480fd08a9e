"""Initialization as the paper's code: convolutions kaiming-normal (fan_out,
relu), linear layers N(0, 0.01), zero biases; WS gains start at 1 (set by
the layers)."""
import torch.nn as nn

from .. import nn as onn


def init_paper(model):
    for m in model.modules():
        if isinstance(m, (onn.Conv2d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (onn.Linear, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
