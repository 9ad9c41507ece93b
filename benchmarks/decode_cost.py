"""CPU time per frame of decoding plus resizing to the input size, per decode mode.

    python3 benchmarks/pipeline.py --decode-cost gstreamer,ffmpeg --size 1080x1920 --frames 120 --rounds 3

(or ``python3 benchmarks/decode_cost.py`` with the same options). The clip is the bundled one
encoded as H.264 at ``--size`` by the ``ffmpeg`` command (a 1080p camera's stream for the
default). For ``ffmpeg`` (OpenCV's FFmpeg) each frame is decoded at its own size and resized
on the CPU to the input size of the runtime's rule (360x640 for the bundled model and
1080p); for ``gstreamer`` and ``nvidia`` the decoder's pipeline scales (``videoscale``,
``nvvidconv``) and the frame reaches Python at the input size. Reported per mode: process CPU
time per frame (every thread of the process, GStreamer's included: what the ARM cores of a
Jetson would spend) and wall time per frame, medians over alternating rounds.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.options import parse_size
from fcn_deploy.runtime.assets import ASSETS, DEMO_CLIP
from fcn_deploy.runtime.gstreamer import DECODE_MODES, choose_decode
from fcn_deploy.runtime.input_size import InputSizer, parse_input_size, resize_frame, size_text, training_scale
from fcn_deploy.runtime.model_files import read_metadata, resolve_model_file
from fcn_deploy.runtime.sources import open_source


def make_h264_clip(path: Path, size, frames: int) -> Path:
    """The bundled clip scaled to ``size`` (H, W) and encoded as H.264 by the ffmpeg command,
    looped to ``frames`` frames."""
    if shutil.which("ffmpeg") is None:
        raise FcnDeployError("the decode benchmark makes its H.264 clip with the ffmpeg command; install ffmpeg")
    h, w = size
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(ASSETS / DEMO_CLIP),
                    "-frames:v", str(frames), "-vf", f"scale={w}:{h}", "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", "-bf", "0", str(path)], check=True, timeout=600)
    return path


def decode_once(clip: Path, mode: str, sizer: InputSizer) -> Dict[str, float]:
    """Decode and resize every frame of ``clip`` in ``mode``; CPU and wall ms per frame."""
    cpu, wall = time.process_time(), time.perf_counter()
    frames = 0
    with open_source(str(clip), decode=mode, scale=sizer.decoder_scale) as source:
        for frame in source:
            image = resize_frame(frame.image, sizer.size_for(frame.shape))  # a no-op where the decoder scaled
            frames += 1
    assert image is not None
    return {"cpu_ms": 1000 * (time.process_time() - cpu) / frames, "wall_ms": 1000 * (time.perf_counter() - wall) / frames,
            "frames": frames, "shape": list(image.shape[:2])}


def run(modes: List[str], size, frames: int, rounds: int, model: str, input_spec) -> Dict[str, dict]:
    for mode in modes:
        choose_decode(mode)  # a mode this machine cannot run is refused before any work
    sizer = InputSizer(input_spec, training_scale(read_metadata(str(resolve_model_file(model)))), announce=False)
    results: Dict[str, List[Dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_h264_clip(Path(tmp) / "clip.mp4", size, frames)
        for mode in modes:  # warm-up: plugin loading, codec set-up
            decode_once(clip, mode, sizer)
        for _ in range(rounds):  # alternating, so a busy spell of a shared machine hits every mode alike
            for mode in modes:
                results[mode].append(decode_once(clip, mode, sizer))
    input_size = sizer.size_for(size)
    print(f"H.264 {size_text(size)} -> input {size_text(input_size)} (HxW), {frames} frames x {rounds} rounds "
          f"(medians), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    summary = {}
    for mode in modes:
        cpu = statistics.median(r["cpu_ms"] for r in results[mode])
        wall = statistics.median(r["wall_ms"] for r in results[mode])
        where = "in the decoder's pipeline" if mode in ("gstreamer", "nvidia") else "on the CPU (cv2.resize)"
        print(f"  --decode {mode:<9} CPU {cpu:6.2f} ms/frame  wall {wall:6.2f} ms/frame  resize {where}, "
              f"{results[mode][0]['frames']} frames")
        summary[mode] = {"cpu_ms_per_frame": cpu, "wall_ms_per_frame": wall, "rounds": results[mode]}
    if len(modes) == 2:
        a, b = modes
        print(f"  CPU per frame, {b} / {a}: {summary[b]['cpu_ms_per_frame'] / summary[a]['cpu_ms_per_frame']:.2f}x")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decode-cost", default="gstreamer,ffmpeg", metavar="MODE,MODE",
                        help=f"decode modes to time ({', '.join(m for m in DECODE_MODES if m != 'auto')})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--model", default="camvid", help="the model whose input size the frames go to")
    parser.add_argument("--size", default="1080x1920", help="the H.264 clip's frame HxW (default 1080x1920)")
    parser.add_argument("--input-size", default=None, metavar="native|HxW")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        modes = [m.strip() for m in args.decode_cost.split(",") if m.strip()]
        run(modes, parse_size(args.size, "--size"), args.frames, args.rounds, args.model,
            parse_input_size(args.input_size, "--input-size"))
    except FcnDeployError as exc:
        print(f"decode_cost.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
