"""The paper's networks by name; user factories as ``"package.module:function"``."""

from ima.models.catalog import MODELS, build_model
from ima.models.mlp import moons_mlp
from ima.models.paper_cnns import fashion_cnn, svhn_cnn
from ima.models.resnet import resnet18_in
from ima.models.small_cnn import digits_cnn
from ima.models.unet_net import UNet, unet
from ima.models.wrn import wide_resnet, wrn_28_4

__all__ = [
    "MODELS",
    "UNet",
    "build_model",
    "digits_cnn",
    "fashion_cnn",
    "moons_mlp",
    "resnet18_in",
    "svhn_cnn",
    "unet",
    "wide_resnet",
    "wrn_28_4",
]
