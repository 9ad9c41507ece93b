"""benchmarks/stream_bandwidth.py runs end to end (a real RTSP stream read by ffmpeg) and
reports what issue 31 asks for: H.264 and MJPEG bytes per frame, with the quality of each."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_run_cli import env

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("av", reason="the RTSP output encodes H.264 with PyAV (pip install av)")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg (apt-get install ffmpeg)")
def test_stream_bandwidth_reports_bytes_and_quality_of_both(tmp_path, tiny_onnx):
    out = tmp_path / "bw.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "stream_bandwidth.py"), "--model",
                             str(tiny_onnx), "--frames", "6", "--pan", "--json", str(out)],
                            capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env())
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["frames"] == 6 and data["h264_frames"] >= 6
    assert data["mjpeg_bytes_per_frame"] > 0 and data["h264_wire_bytes_per_frame"] > data["h264_bytes_per_frame"] > 0
    assert data["h264_psnr_db"] > 25 and data["mjpeg_psnr_db"] > 25  # what ffmpeg decoded is the clip
    assert "H.264 / MJPEG" in result.stdout and "h264 (default)" in result.stdout
