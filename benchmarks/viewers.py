"""The pipeline's FPS with many slow viewers of its HTTP output, against none.

    python3 benchmarks/viewers.py                                   # bundled model and clip, 50 viewers
    python3 benchmarks/viewers.py --viewers 50 --frames 40 --rounds 3 --threads 2 --json out.json

A viewer on a phone or a bad Wi-Fi link reads the MJPEG stream far slower than it is made.
The HTTP output (:mod:`fcn_deploy.runtime.mjpeg`) must never make the run wait for one: the
publisher only swaps in the newest JPEG, one selector thread feeds every socket, a viewer
that falls behind skips frames. This measures that promise: the same clip through the same
:class:`~fcn_deploy.runtime.pipeline.Pipeline` with an ``http://127.0.0.1:0`` output, with no
viewer, and with ``--viewers`` clients that each read ``--read-bytes`` every ``--read-every``
seconds (5 kB/s by default, a few JPEG parts a minute). Runs alternate (none, slow, none, ...)
because other processes may share the cores; each slow run is compared with the runs without
viewers on either side of it and the median ratio is reported. Target: 90% or more.

With viewers the run also encodes each frame to JPEG (with none it skips that, as a run does),
so the ratio includes the encoding: the cost of being watched at all, not only of the viewers.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import selectors
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # `python3 benchmarks/NAME.py` from a checkout: benchmarks/ is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fcn_deploy.runtime.assets import demo_clip
from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.model_files import resolve_model_file
from fcn_deploy.runtime.pipeline import Pipeline
from fcn_deploy.runtime.sinks import open_sink
from fcn_deploy.runtime.sources import open_source
from fcn_deploy.runtime.visualize import Visualizer


class SlowViewers:
    """``count`` HTTP clients of ``path`` on one thread, each reading ``chunk`` bytes every ``every`` s."""

    def __init__(self, address, path: str, count: int, chunk: int, every: float):
        self.sockets = []
        for _ in range(count):  # one after the other, as viewers arrive (a burst over the cap of
            sock = socket.create_connection(address, timeout=5)  # unanswered requests gets 503s)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            sock.recv(64)  # the response has begun: this viewer is in
            sock.setblocking(False)
            self.sockets.append(sock)
        self.chunk, self.every = chunk, every
        self.received = 0
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.wait(self.every):
            for sock in list(self.sockets):
                try:
                    data = sock.recv(self.chunk)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed_by_server += 1
                    self.sockets.remove(sock)
                    sock.close()
                self.received += len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def _crowd(address, count, chunk, every, ready, stop, report) -> None:
    """The viewers, in a process of their own: their reading costs the run's process nothing."""
    crowd = SlowViewers(address, "/stream.mjpg", count, chunk, every)
    ready.set()
    stop.wait()
    crowd.close()
    report.put((crowd.received, crowd.closed_by_server))


def one_run(backend, visualizer, clip: Path, frames: int, viewers: int, args) -> dict:
    sink = open_sink(f"http://127.0.0.1:0?viewers={max(viewers, 1)}")
    context = multiprocessing.get_context("fork")
    stop, ready, report_queue = context.Event(), context.Event(), context.Queue()
    crowd = None
    try:
        if viewers:
            crowd = context.Process(target=_crowd, args=(sink.server.address, viewers, args.read_bytes,
                                                         args.read_every, ready, stop, report_queue), daemon=True)
            crowd.start()
            if not ready.wait(30) or sink.server.clients < viewers:
                raise RuntimeError(f"only {sink.server.clients} of {viewers} viewers connected")
        source = open_source(str(clip), loop=True)
        pipeline = Pipeline(source, backend, visualizer, [sink], max_frames=frames)
        cpu = time.process_time()
        report = pipeline.run()
        cpu = time.process_time() - cpu
    finally:
        received = 0
        if crowd is not None:
            stop.set()
            received, _ = report_queue.get(timeout=30)
            crowd.join(timeout=10)
        sink.close()
    return {"fps": report.fps, "cpu_ms_per_frame": 1000.0 * cpu / max(report.frames_rendered, 1),
            "dropped_by_server": sink.server.dropped,
            "bytes_read": received}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="camvid", help="an .onnx file or 'camvid' (default)")
    parser.add_argument("--device", default="ort-cpu", help="backend device (default ort-cpu)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: cores)")
    parser.add_argument("--clip", default=None, help="video file (default: the bundled CamVid clip)")
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--read-bytes", type=int, default=1024, help="bytes each viewer reads at a time")
    parser.add_argument("--read-every", type=float, default=0.2, help="seconds between a viewer's reads")
    parser.add_argument("--frames", type=int, default=40, help="frames per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    clip = Path(args.clip) if args.clip else demo_clip()
    options = {"threads": args.threads} if args.threads else {}
    backend = open_backend(str(resolve_model_file(args.model)), args.device, **options)
    visualizer = Visualizer(backend.metadata.classes, backend.metadata.palette)
    one_run(backend, visualizer, clip, 5, 0, args)  # warm-up: sessions, caches, the clip's first decode
    none, slow, ratios = [], [], []
    for round_ in range(args.rounds):
        none.append(one_run(backend, visualizer, clip, args.frames, 0, args))
        slow.append(one_run(backend, visualizer, clip, args.frames, args.viewers, args))
        print(f"round {round_ + 1}: no viewer {none[-1]['fps']:.2f} FPS ({none[-1]['cpu_ms_per_frame']:.0f} ms CPU "
              f"per frame), {args.viewers} slow viewers {slow[-1]['fps']:.2f} FPS "
              f"({slow[-1]['cpu_ms_per_frame']:.0f} ms CPU per frame; {slow[-1]['dropped_by_server']} viewers dropped "
              f"for not reading, "
              f"{slow[-1]['bytes_read'] / args.viewers / 1024:.1f} kB read each)", flush=True)
    none.append(one_run(backend, visualizer, clip, args.frames, 0, args))
    for i, run in enumerate(slow):
        ratios.append(run["fps"] / statistics.mean([none[i]["fps"], none[i + 1]["fps"]]))
    backend.close()
    ratio = statistics.median(ratios)
    print(f"pipeline FPS with {args.viewers} slow viewers / with none: median {100 * ratio:.1f}% "
          f"(rounds: {', '.join(f'{100 * r:.1f}%' for r in ratios)}; target >= 90%)")
    cpu_none = statistics.median(r["cpu_ms_per_frame"] for r in none)
    cpu_slow = statistics.median(r["cpu_ms_per_frame"] for r in slow)
    print(f"CPU time of the run's process per frame (contention does not inflate it): {cpu_none:.1f} ms with no "
          f"viewer, {cpu_slow:.1f} ms with {args.viewers} (+{cpu_slow - cpu_none:.1f} ms: JPEG encoding and serving)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"model {args.model} on {args.device}, clip {clip.name}, {args.frames} frames per run")
    if args.json:
        Path(args.json).write_text(json.dumps({"none": none, "slow": slow, "ratios": ratios, "median": ratio,
                                               "viewers": args.viewers, "frames": args.frames}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
