"""What DeepStream's scaling does to accuracy: nvinfer's letterbox against fcn-deploy's input-size rule.

    python3 benchmarks/letterbox.py --root PATH/TO/CamVid [--split test] [--source-size 1080x1920]

CamVid's frames are 4:3; a road camera's are 16:9. Each test frame and its annotation are
cropped to 16:9 in the middle (480x270) and the frame is enlarged to ``--source-size`` (a
1080p camera looking at the same scene). Then each way of feeding the network is scored
(mean IU, the predictions mapped back to the 270x480 annotation by nearest neighbour):

* ``rule``: fcn-deploy's runtime: the frame resized so its short side is the model's training
  short side (360x640 for 1080p), area-averaged;
* ``deepstream``: what ``export --deepstream`` now writes: infer-dims by the same rule,
  ``maintain-aspect-ratio=1``, ``symmetric-padding=1``, bilinear (:func:`letterbox`);
* ``deepstream-old``: what it wrote before: infer-dims at the training size (360x480) and
  ``maintain-aspect-ratio=0``, the 16:9 frame squashed into 4:3;
* ``letterbox-4:3``: infer-dims at the training size with the aspect ratio kept: 360x480 with
  the picture in a 270x480 band between black bars (objects at 0.75 of the training scale).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fcn_deploy.converters.deepstream import letterbox, network_size
from fcn_deploy.errors import FcnDeployError
from fcn_deploy.metrics import ConfusionMatrix
from fcn_deploy.options import parse_size
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.input_size import resize_frame, rule_size, training_scale
from fcn_deploy.runtime.model_files import resolve_model_file

Size = Tuple[int, int]


def crop_16_9(image: np.ndarray) -> np.ndarray:
    """The middle 16:9 band of a frame (480x360 -> 480x270)."""
    h, w = image.shape[:2]
    band = int(round(w * 9 / 16))
    top = (h - band) // 2
    return image[top:top + band]


def feeders(meta, source: Size) -> Dict[str, Callable[[np.ndarray], Tuple[np.ndarray, Tuple[int, int, int, int]]]]:
    """Each way of making the network input from a ``source``-sized frame: (input, content box)."""
    reference = training_scale(meta).reference_size
    rule = rule_size(source, reference)
    ds = network_size(meta, source)

    def whole(image, size):
        return resize_frame(image, size), (0, 0, size[0], size[1])

    return {
        "rule": lambda image: whole(image, rule),
        "deepstream": lambda image: letterbox(image, ds),
        "deepstream-old": lambda image: (cv2.resize(image, (reference[1], reference[0]), interpolation=cv2.INTER_LINEAR),
                                         (0, 0, reference[0], reference[1])),
        "letterbox-4:3": lambda image: letterbox(image, reference),
    }


def score(root: Path, split: str, model: str, source: Size, limit=None) -> Dict[str, float]:
    """Mean IU (percent) of each feeder on ``split``'s frames cropped to 16:9 and enlarged to ``source``."""
    backend = open_backend(str(resolve_model_file(model)), "ort-cpu")
    meta = backend.metadata
    ways = feeders(meta, source)
    matrices = {name: ConfusionMatrix(meta.num_classes, 11) for name in ways}
    images = sorted((root / split).glob("*.png"))[:limit]
    if not images:
        raise FcnDeployError(f"no frames in {root / split}")
    try:
        for path in images:
            truth = crop_16_9(cv2.imread(str(root / f"{split}annot" / path.name), cv2.IMREAD_UNCHANGED))
            frame = cv2.resize(crop_16_9(cv2.imread(str(path))), (source[1], source[0]), interpolation=cv2.INTER_LINEAR)
            for name, feed in ways.items():
                x, (top, left, h, w) = feed(frame)
                labels = backend.infer_labels(x[None])[0][top:top + h, left:left + w]
                labels = cv2.resize(labels, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_NEAREST)
                matrices[name].update(labels.astype(np.int64), truth.astype(np.int64))
    finally:
        backend.close()
    return {name: 100.0 * cm.scores()["mean_iu"] for name, cm in matrices.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the CamVid folder (test/, testannot/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="camvid")
    parser.add_argument("--source-size", default="1080x1920", help="the camera's HxW (default 1080x1920)")
    args = parser.parse_args(argv)
    try:
        source = parse_size(args.source_size, "--source-size")
        results = score(Path(args.root), args.split, args.model, source)
    except FcnDeployError as exc:
        print(f"letterbox.py: error: {exc}", file=sys.stderr)
        return 1
    print(f"CamVid {args.split}, frames cropped to 16:9 and enlarged to {source[0]}x{source[1]} (HxW); mean IU:")
    for name, value in results.items():
        print(f"  {name:<15} {value:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
