"""What the training side needs beyond the runtime: PyTorch, on a Python that PyTorch supports.

The runtime (``run``, ``eval`` of an ONNX or engine, ``build``) keeps ``requires-python >= 3.8``
for JetPack 5; training, export and parity checks run PyTorch, whose releases this project
is tested with (2.13) need a newer Python. Saying so in one line beats a traceback from
deep inside an import.
"""
from __future__ import annotations

import importlib.util
import platform
import sys

from ..errors import FcnDeployError

TRAINING_PYTHON = (3, 10)
INSTALL = "pip install -e '.[train]'"


def torch_message(command: str) -> str:
    """The one line that says what ``fcn-deploy COMMAND`` needs and how to get it."""
    wanted = f"Python >= {TRAINING_PYTHON[0]}.{TRAINING_PYTHON[1]}"
    if sys.version_info[:2] < TRAINING_PYTHON:
        wanted += f", this is {platform.python_version()}"
    return f"fcn-deploy {command} needs PyTorch ({INSTALL}; {wanted})"


def require_torch(command: str) -> None:
    """Raise :class:`FcnDeployError` unless PyTorch can run here (a supported Python, torch installed)."""
    if sys.version_info[:2] < TRAINING_PYTHON or importlib.util.find_spec("torch") is None:
        raise FcnDeployError(torch_message(command))
