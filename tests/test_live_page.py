"""The live page in a real headless browser (Debian's chromium): every stream's picture loads,
the legend and the charts are drawn, and a stream that failed is marked as failed."""
import re
import shutil
import subprocess
import threading
import time

import cv2
import pytest

from fcn_deploy.runtime.backends import open_backend
from fcn_deploy.runtime.pipeline import MultiStreamPipeline, Stream
from fcn_deploy.runtime.results_setup import ResultsOptions, open_results
from fcn_deploy.runtime.sinks import open_sink
from fcn_deploy.runtime.sources import open_source
from fcn_deploy.runtime.visualize import VisualOptions, Visualizer
from video_helpers import PulledCable, synthetic_frames, write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")


def browse(url, profile, *mode, budget_ms=6000):
    """Headless Chromium as the brief runs it: a fresh profile, nothing from the network but ``url``."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
               "--window-size=1280,900", f"--virtual-time-budget={budget_ms}", *mode, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)



def test_the_page_shows_every_stream_the_legend_the_charts_and_a_failed_stream(tmp_path, tiny_onnx):
    clip = write_video(tmp_path / "a.avi", synthetic_frames(20), "MJPG")
    http = open_sink("http://127.0.0.1:0")
    streams = [Stream(open_source(str(clip), loop=True), [http.channel("front")], name="front"),
               Stream(open_source(str(clip), loop=True), [http.channel("rear")], name="rear"),
               Stream(PulledCable(clip, 3), [http.channel("side")], name="side")]
    backend = open_backend(str(tiny_onnx), "cpu", threads=1)
    meta = backend.metadata
    results, live = open_results(ResultsOptions(servers=[http.server]), meta.classes, meta.palette,
                                 [s.name for s in streams], meta.model_name)
    pipeline = MultiStreamPipeline(streams, backend, Visualizer(meta.classes, meta.palette, VisualOptions()),
                                   [http], input_size=(48, 64), results=results)
    live.report = pipeline.report
    runner = threading.Thread(target=pipeline.run, daemon=True)
    runner.start()
    url = f"http://127.0.0.1:{http.server.address[1]}/"
    try:
        time.sleep(2.5)  # a few seconds of history for the charts
        dom = browse(url, tmp_path / "profile-dom", "--dump-dom")
        shot = browse(url, tmp_path / "profile-shot", f"--screenshot={tmp_path / 'page.png'}")
    finally:
        pipeline.stop()
        runner.join(timeout=30)
        backend.close()
    html = dom.stdout
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr[-2000:]
    cards = dict(re.findall(r'<div class="card[^"]*" data-stream="(\w+)"([^>]*)>', html))
    assert set(cards) == {"front", "rear", "side"}
    for name in ("front", "rear"):  # the MJPEG picture arrived and decoded (96 px wide, as drawn)
        assert 'data-loaded="96"' in cards[name], cards[name]
    assert re.search(r'<div class="card failed" data-stream="side"', html)
    assert "FAILED: camera on a pulled cable" in html
    assert html.count('<span class="swatch"') == len(meta.classes) == 3  # the legend
    assert html.count("<canvas") == 6 and html.count('<div class="bar">') == 3 * 3  # charts and share bars
    assert int(re.search(r'data-updates="(\d+)"', html).group(1)) >= 2  # it polls and redraws
    picture = cv2.imread(str(tmp_path / "page.png"))
    assert picture.shape[:2] == (900, 1280) and picture.std() > 10
