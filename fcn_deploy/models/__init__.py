"""The model zoo: the paper's VGG16 FCNs and FCN-8s on edge backbones."""
from .pretrained import PretrainedError, load_pretrained
from .zoo import available_models, build_model

__all__ = ["available_models", "build_model", "load_pretrained", "PretrainedError"]
