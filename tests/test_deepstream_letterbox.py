"""DeepStream keeps the aspect ratio: nvinfer's letterbox (maintain-aspect-ratio=1,
symmetric-padding=1) at infer-dims chosen by the runtime's input-size rule for the camera's
size, so that DeepStream and fcn-deploy's own runtime feed the network the same picture."""
from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import pytest

from fcn_deploy.converters.deepstream import app_config_text, letterbox, network_size
from fcn_deploy.runtime.model_files import read_metadata

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "datasets" / "CamVid"
BUNDLED = REPO / "fcn_deploy" / "assets" / "camvid.onnx"


def test_letterbox_pads_symmetrically_and_never_squashes():
    frame = np.full((1080, 1920, 3), 200, np.uint8)
    same, box = letterbox(frame, (360, 640))  # the same aspect ratio: a plain resize
    assert box == (0, 0, 360, 640) and same.shape == (360, 640, 3) and (same == 200).all()
    boxed, box = letterbox(frame, (360, 480))  # 16:9 into 4:3: bars above and below
    assert box == (45, 0, 270, 480)
    assert (boxed[:45] == 0).all() and (boxed[315:] == 0).all() and (boxed[45:315] == 200).all()
    tall, box = letterbox(np.full((1280, 720, 3), 9, np.uint8), (360, 640))  # a portrait camera: bars left and right
    assert box == (0, 219, 360, 202) and (tall[:, :219] == 0).all() and (tall[:, 421:] == 0).all()


@pytest.mark.skipif(not BUNDLED.is_file(), reason="the bundled model is not installed")
def test_infer_dims_follow_the_runtime_rule_for_the_camera():
    meta = read_metadata(str(BUNDLED))  # trained on CamVid's 360x480
    assert network_size(meta, (1080, 1920)) == (360, 640)
    assert network_size(meta, (720, 1280)) == (360, 640)
    assert network_size(meta, (480, 640)) == (360, 480)
    app = configparser.ConfigParser(interpolation=None)
    app.read_string(app_config_text((360, 640), (1080, 1920)))
    assert (app["streammux"]["width"], app["streammux"]["height"]) == ("1920", "1080")


@pytest.mark.slow
@pytest.mark.skipif(not (CAMVID / "test").is_dir(), reason=f"CamVid not found at {CAMVID}")
@pytest.mark.skipif(not BUNDLED.is_file(), reason="the bundled model is not installed")
def test_deepstreams_letterbox_scores_as_the_runtime_rule_on_16_9_camvid():
    """CamVid test cropped to 16:9 and enlarged to 1080p (benchmarks/letterbox.py measured
    64.94 rule, 65.00 letterbox, 62.54 squashed into 360x480, 63.93 letterboxed into 360x480)."""
    import sys

    sys.path.insert(0, str(REPO))
    from benchmarks.letterbox import score

    scores = score(CAMVID, "test", str(BUNDLED), (1080, 1920))
    assert abs(scores["deepstream"] - scores["rule"]) < 0.5
    assert scores["deepstream"] > scores["deepstream-old"] + 1.0
