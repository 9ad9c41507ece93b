"""Label parity of ``fcn-deploy import`` with torchvision's own eager model, the numbers for docs/import.md.

    python3 tools/torchvision_parity.py --models fcn_resnet50,lraspp_mobilenet_v3_large \\
        --sizes 360x480,720x1280 [--frames DIR] [--workdir DIR]

For each model: torchvision's builder with seeded random weights (no hub here; the recipe of
tests/test_import_model.py), then both ways in:

* ``plain``: ``torch.onnx.export`` as its users run it (default exporter, opset 17, at 360x480,
  outputs ``out`` and ``aux``), then ``fcn-deploy import FILE.onnx`` with torchvision's
  normalisation, then ``fcn-deploy check``;
* ``weights``: ``torch.save(state_dict)``, then ``fcn-deploy import NAME --weights FILE.pth``.

The imported file runs in ONNX Runtime on BGR frames (``--frames``: the first images of a
folder, resized; default seeded smooth noise); the reference is ``argmax(model(x)["out"])`` on
the same frames normalised in numpy. Prints one row per model, way and size: the fraction of
equal labels and the number of classes the reference used. Needs torchvision (see
.ci/torchvision-env for a venv where it imports).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

NORM = ["--rgb", "--scale", "255", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


def seeded_model(name: str):
    import torch
    from torchvision.models import segmentation

    torch.manual_seed(0)
    net = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=21,
                                      aux_loss=name != "lraspp_mobilenet_v3_large").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        for key, p in net.named_parameters():
            if key.startswith("classifier.") and key.endswith("bias"):
                p.zero_()
    return net


def frames_at(size: Tuple[int, int], folder: str, count: int) -> np.ndarray:
    h, w = size
    if folder:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:count]
        return np.stack([cv2.resize(cv2.imread(str(f)), (w, h), interpolation=cv2.INTER_AREA) for f in files])
    rng = np.random.default_rng(h)
    small = rng.integers(0, 256, (count, max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) for s in small])


def fcn_deploy(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fcn_deploy.cli", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"fcn-deploy {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1]}")
    return done.stdout


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="fcn_resnet50,lraspp_mobilenet_v3_large")
    p.add_argument("--sizes", default="360x480,720x1280")
    p.add_argument("--frames", default="", help="a folder of images (default: seeded smooth noise)")
    p.add_argument("--count", type=int, default=2, help="frames per size (default 2)")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    import onnxruntime as ort
    import torch

    from fcn_deploy.normalization import TORCHVISION_IMAGENET, normalize_pixels

    try:
        import onnxscript  # noqa: F401
        dynamo = True
    except ImportError:
        dynamo = False
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tv-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, exporter {'dynamo (default)' if dynamo else 'TorchScript'}, frames "
          f"{args.frames or 'seeded smooth noise'}, {args.count} per size")
    print(f"{'model':28} {'way':8} {'size':>9} {'equal labels':>13} {'classes':>7}")
    for name in args.models.split(","):
        net = seeded_model(name)
        plain_onnx, pth = work / f"{name}.onnx", work / f"{name}.pth"
        with torch.no_grad():
            torch.onnx.export(net, (torch.randn(1, 3, 360, 480),), str(plain_onnx), opset_version=17,
                              input_names=["input"], output_names=["out", "aux"] if hasattr(net, "aux_classifier")
                              and net.aux_classifier is not None else ["out"], dynamo=dynamo)
        torch.save(net.state_dict(), pth)
        ways = {"plain": work / f"{name}_plain_deploy.onnx", "weights": work / f"{name}_weights_deploy.onnx"}
        fcn_deploy("import", str(plain_onnx), "-o", str(ways["plain"]), "--overwrite", "--classes", "voc", *NORM)
        fcn_deploy("import", name, "--weights", str(pth), "-o", str(ways["weights"]), "--overwrite", "--classes", "voc")
        for way, path in ways.items():
            print(f"  check {path.name}: {fcn_deploy('check', str(path)).strip()}")
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            for size in sizes:
                bgr = frames_at(size, args.frames, args.count)
                same = total = 0
                used = set()
                for frame in bgr:
                    labels = session.run(None, {"input": frame[None]})[0]
                    x = torch.from_numpy(normalize_pixels(frame[None], TORCHVISION_IMAGENET, "BGR"))
                    with torch.no_grad():
                        ref = net(x)["out"].argmax(1).numpy()
                    same += int((labels == ref).sum())
                    total += ref.size
                    used |= set(np.unique(ref).tolist())
                print(f"{name:28} {way:8} {size[0]:>4}x{size[1]:<4} {100 * same / total:12.4f}% {len(used):>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
