"""The paper's networks by name; user factories as ``"package.module:function"``."""

from ima.models.catalog import MODELS, build_model
from ima.models.mlp import moons_mlp
from ima.models.small_cnn import digits_cnn

__all__ = ["MODELS", "build_model", "digits_cnn", "moons_mlp"]
