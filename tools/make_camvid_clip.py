"""Make ``fcn_deploy/assets/camvid_clip.mp4``, the short clip that ``fcn-deploy run`` plays
when it is given no source.

The clip is the first ``--frames`` CamVid *test* frames of one sequence (Seq05VD by default),
sorted by name, written unchanged (480x360) with OpenCV's ``mp4v`` codec. CamVid's labelled
frames are every 30th frame of the original 30 Hz video, so neighbours are one second apart;
the clip plays them at ``--fps`` (10 by default). Test frames are used because the bundled
model is trained on CamVid train and chosen on val, so the demo shows frames it never saw.

    python3 tools/make_camvid_clip.py                      # the shipped clip
    python3 tools/make_camvid_clip.py --sequence 0001TP --frames 30 --output /tmp/clip.mp4
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "CamVid"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "fcn_deploy" / "assets" / "camvid_clip.mp4"


def make_clip(root: Path, sequence: str, frames: int, fps: float, output: Path) -> int:
    """Write the clip; return the number of frames written."""
    paths = sorted((root / "test").glob(f"{sequence}_*.png"))[:frames]
    if not paths:
        raise SystemExit(f"no CamVid test frames named {sequence}_*.png under {root / 'test'}")
    first = cv2.imread(str(paths[0]))
    height, width = first.shape[:2]
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {output}")
    for path in paths:
        image = cv2.imread(str(path))
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        writer.write(image)
    writer.release()
    return len(paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="CamVid folder (with test/)")
    parser.add_argument("--sequence", default="Seq05VD", help="sequence prefix: Seq05VD or 0001TP")
    parser.add_argument("--frames", type=int, default=60, help="number of frames (first N by name)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate written into the file")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    count = make_clip(args.root, args.sequence, args.frames, args.fps, args.output)
    size_mb = args.output.stat().st_size / 1e6
    print(f"wrote {args.output}: {count} frames of {args.sequence} at {args.fps:g} fps, {size_mb:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
