"""The paper's models on ottt_cuda layers."""
from .nf_resnet import NFResNet, nf_resnet34
from .r400 import R400, r400
from .vgg import VGG11_CFG, VGGFWS, VGGWS, make_features, vgg11_ws, vgg11f_ws

__all__ = ["NFResNet", "nf_resnet34", "R400", "r400", "VGG11_CFG", "VGGFWS", "VGGWS", "make_features", "vgg11_ws",
           "vgg11f_ws"]
