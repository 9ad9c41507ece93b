"""torchvision's segmentation models (FCN, DeepLabV3, LR-ASPP) from a weights file the user has.

``fcn-deploy import fcn_resnet50 --weights FILE.pth``: the model is built by torchvision's own
builder with no weights (nothing is fetched from a hub), the state dict is loaded strictly,
the model is exported with ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic
N/H/W, outputs ``out`` and ``aux`` as torchvision returns them) and then imported exactly as a
user's own ONNX file is (:mod:`fcn_deploy.converters.import_onnx`): one path for both.

The number of classes and whether the auxiliary head exists are read off the state dict, so a
model fine-tuned on 11 CamVid classes loads as it was trained.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from typing import Any, Dict, List, Tuple

from fcn_deploy.errors import FcnDeployError, first_line

log = logging.getLogger(__name__)

# A state dict is often saved inside a training checkpoint under one of these keys
# (torchvision's reference scripts use "model").
STATE_KEYS = ("model", "state_dict", "model_state_dict", "net")


def _torchvision():
    try:
        import torchvision
        from torchvision.models import segmentation
    except Exception as exc:  # ImportError, or PyPI's CUDA torchvision beside a CPU torch (RuntimeError)
        raise FcnDeployError(
            f"torchvision is needed to import a torchvision model and does not import here "
            f"({type(exc).__name__}: {first_line(exc)}); install the torchvision that matches your torch "
            "(pip install torch==2.14.1 torchvision==0.29.1), or export the model to ONNX where torchvision "
            "runs and import that file"
        ) from None
    return torchvision, segmentation


def model_names() -> List[str]:
    """torchvision's segmentation model builders (``fcn_resnet50``, ``deeplabv3_resnet50``, ...)."""
    torchvision, segmentation = _torchvision()
    return sorted(torchvision.models.list_models(module=segmentation))


def load_state_dict(path: str) -> Dict[str, Any]:
    """The tensors of a ``.pth`` file: a plain state dict or a checkpoint holding one (read with
    ``weights_only=True``: a pickled model or anything that runs code is refused)."""
    import torch

    if not os.path.isfile(path):
        raise FcnDeployError(f"--weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FcnDeployError(f"--weights {path} is not a state dict torch can read safely: {first_line(exc)}") from None
    if isinstance(state, dict):
        for key in STATE_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise FcnDeployError(f"--weights {path} holds no state dict (a dict of parameter names to tensors)")
    # DataParallel / DistributedDataParallel prefix
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def classes_and_aux(state: Dict[str, Any], path: str) -> Tuple[int, bool]:
    """The number of classes (the out-channels of the classifier's last weight) and whether the
    state dict has the auxiliary head."""
    weights = [k for k in state if k.startswith("classifier.") and k.endswith("weight") and getattr(state[k], "ndim", 0) == 4]
    if not weights:
        raise FcnDeployError(f"--weights {path} has no classifier.* convolution weights: not a torchvision "
                             "segmentation model's state dict")
    return int(state[weights[-1]].shape[0]), any(k.startswith("aux_classifier.") for k in state)


def build(name: str, weights_path: str):
    """torchvision's ``name`` with the weights of ``weights_path`` (strict load), in eval mode."""
    _, segmentation = _torchvision()
    names = model_names()
    if name not in names:
        raise FcnDeployError(f"unknown torchvision segmentation model {name!r}; choose from {', '.join(names)}")
    state = load_state_dict(weights_path)
    num_classes, aux = classes_and_aux(state, weights_path)
    builder = getattr(segmentation, name)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise FcnDeployError(f"--weights {weights_path} does not fit {name}: {first_line(exc)}") from None
    return model.eval()


def export_onnx(model, size: Tuple[int, int] = (360, 480), opset: int = 17):
    """``model`` as ONNX (an ``onnx.ModelProto``): input ``input`` N x 3 x H x W, outputs ``out``
    (and ``aux``), dynamic N/H/W, the TorchScript exporter at ``opset``."""
    import onnx
    import torch

    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        outputs = list(model(x).keys())
    axes = {"input": {0: "N", 2: "H", 3: "W"}, **{o: {0: "N", 2: "H", 3: "W"} for o in outputs}}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), buffer, input_names=["input"], output_names=outputs, opset_version=opset,
                              dynamic_axes=axes, do_constant_folding=True, dynamo=False)
        except Exception as exc:
            raise FcnDeployError(f"torch.onnx.export failed: {type(exc).__name__}: {first_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue())


def torchvision_source(name: str, weights_path: str):
    """``(onnx.ModelProto, source facts)`` for :func:`fcn_deploy.converters.import_onnx.import_onnx`."""
    import torch

    from fcn_deploy.fileio import sha256_file

    torchvision, _ = _torchvision()
    model = build(name, weights_path)
    proto = export_onnx(model)
    facts = {
        "torchvision": name,
        "checkpoint": None,  # not a fcn-deploy checkpoint: `compare` has no PyTorch side to rebuild
        "weights": os.path.abspath(weights_path),
        "weights_sha256": sha256_file(weights_path),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
    }
    return proto, facts
