"""How many pixels of two folders of label PNGs agree (``fcn-deploy run --labels-dir``'s output).

    python3 tools/compare_labels.py REFERENCE_DIR OTHER_DIR --min-agreement 0.9999 --name "Python 3.8"

The Jetson-environment job (``.ci/jetson-env``) segments the same frames with the main Python
and with each JetPack-like venv (another Python, numpy, OpenCV and ONNX Runtime), and asks
this script whether the labels are the same. A near-tie between two classes may fall either
way under another ONNX Runtime's kernels, hence a fraction rather than equality. Exit status 1
when a file is missing or differs in size, or when the agreement is below the minimum.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np


def agreement(reference: Path, other: Path) -> Tuple[int, int, List[str]]:
    """(identical pixels, pixels, problems) over every PNG of ``reference``."""
    same = total = 0
    problems: List[str] = []
    names = sorted(p.name for p in reference.glob("*.png"))
    if not names:
        problems.append(f"no label PNGs in {reference}")
    for name in names:
        a = cv2.imread(str(reference / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(other / name), cv2.IMREAD_UNCHANGED)
        if b is None:
            problems.append(f"{other / name} is missing or unreadable")
            continue
        if a.shape != b.shape:
            problems.append(f"{name}: {a.shape} in {reference}, {b.shape} in {other}")
            continue
        same += int(np.count_nonzero(a == b))
        total += a.size
    extra = sorted(set(p.name for p in other.glob("*.png")) - set(names))
    if extra:
        problems.append(f"{len(extra)} label PNGs in {other} that {reference} lacks, e.g. {extra[0]}")
    return same, total, problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Pixel agreement of two folders of label PNGs.")
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--min-agreement", type=float, default=0.9999, metavar="F",
                        help="fail below this fraction of identical pixels (default 0.9999)")
    parser.add_argument("--name", default=None, help="what OTHER is, for the printed line")
    args = parser.parse_args(argv)
    same, total, problems = agreement(args.reference, args.other)
    for problem in problems:
        print(f"compare_labels: {problem}", file=sys.stderr)
    fraction = same / total if total else 0.0
    files = len(list(args.reference.glob("*.png")))
    print(f"labels of {args.name or args.other} against {args.reference}: {same} of {total} pixels identical "
          f"({100 * fraction:.4f}%) in {files} frames; minimum {100 * args.min_agreement:.2f}%")
    return 0 if not problems and total and fraction >= args.min_agreement else 1


if __name__ == "__main__":
    sys.exit(main())
