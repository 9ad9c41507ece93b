"""The files shipped inside the package: the bundled CamVid model and the demo clip.

``fcn-deploy run`` with no arguments plays :data:`DEMO_CLIP` through :data:`BUNDLED_MODEL`.
Both are looked up by :func:`bundled_asset`, the one place that knows where they live and
what to say when one is not installed (the model is produced by training and export; the
clip by ``tools/make_camvid_clip.py``).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import FcnDeployError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_MODELS = {"camvid": "camvid.onnx"}
DEMO_CLIP = "camvid_clip.mp4"

_HOW_TO_MAKE = {
    "camvid.onnx": "train it with `fcn-deploy train` and export it with "
                   "`fcn-deploy export --model camvid --output fcn_deploy/assets/camvid.onnx`, or pass --model M.onnx",
    DEMO_CLIP: "make it with `python3 tools/make_camvid_clip.py`, or pass --source",
}


def bundled_asset(name: str) -> Path:
    """The path of the shipped file ``name``, or a clear error saying how to put it there."""
    path = ASSETS / name
    if not path.is_file():
        hint = _HOW_TO_MAKE.get(name, "reinstall fcn-deploy")
        raise FcnDeployError(f"the bundled file {name} is not installed ({path} is missing): {hint}")
    return path


def demo_clip() -> Path:
    """The short CamVid clip that ``fcn-deploy run`` plays by default."""
    return bundled_asset(DEMO_CLIP)
