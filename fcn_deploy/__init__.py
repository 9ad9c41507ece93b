"""fcn-deploy: FCN semantic segmentation from PyTorch training to real-time video.

The Python API, at the package root (what the ``fcn-deploy`` commands call too)::

    from fcn_deploy import Segmenter   # the runtime: no PyTorch
    import fcn_deploy
    fcn_deploy.export(...)             # a checkpoint or zoo model to ONNX (the `train` extra)
    fcn_deploy.train(...)              # train a zoo model on a dataset (the `train` extra)

Each is imported when first used (PEP 562), so ``import fcn_deploy`` stays instant and never
imports numpy, OpenCV or PyTorch by itself.
"""
from typing import Any, List

__version__ = "0.1.0"

__all__ = ["Segmenter", "export", "train", "FcnDeployError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from .segmenter import Segmenter

        return Segmenter
    if name in ("export", "train"):
        from . import workflows

        return getattr(workflows, name)
    if name == "FcnDeployError":
        from .errors import FcnDeployError

        return FcnDeployError
    raise AttributeError(f"module 'fcn_deploy' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(list(globals()) + __all__)
