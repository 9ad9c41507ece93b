"""The encoder choice and the Jetson hardware encoder's pipeline (the element itself runs only on a
Jetson: that test skips elsewhere with the reason)."""
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from fcn_deploy.runtime.encoders import (
    EncoderError,
    VideoSettings,
    canonical_codec,
    choose_encoder,
    frame_rate,
    gstreamer_pipeline,
    jetson_encoder_problem,
)

pytestmark = pytest.mark.runtime


def test_codec_names_and_container_defaults():
    assert canonical_codec(None, "mp4") == "h264" and canonical_codec(None, "avi") == "mjpeg"
    assert canonical_codec("HEVC", "mp4") == "h265" and canonical_codec("mpeg4", "mp4") == "mp4v"
    assert frame_rate(29.97) == Fraction(30000, 1001) and frame_rate(7.5) == Fraction(15, 2)
    assert frame_rate(4.0) == 4


def test_jetson_pipeline_is_nvidias_documented_chain():
    pipeline = gstreamer_pipeline("/data/.out.mp4.x.tmp", "mp4", "h264", 4_000_000)
    elements = [part.strip().split(" ")[0] for part in pipeline.split("!")]
    assert elements == ["appsrc", "video/x-raw,format=BGR", "queue", "videoconvert", "video/x-raw,format=BGRx",
                        "nvvidconv", "video/x-raw(memory:NVMM),format=NV12", "nvv4l2h264enc", "h264parse", "qtmux",
                        "filesink"]
    assert "nvv4l2h264enc bitrate=4000000 insert-sps-pps=true" in pipeline
    assert pipeline.endswith("filesink location=/data/.out.mp4.x.tmp")  # the temporary name, renamed when done
    h265 = gstreamer_pipeline("o.mkv", "matroska", "h265", None)
    assert "nvv4l2h265enc bitrate=8000000" in h265 and "h265parse ! matroskamux" in h265


@pytest.mark.skipif(jetson_encoder_problem("h264") is None, reason="this machine has the Jetson encoder")
def test_without_the_jetson_encoder_auto_uses_the_cpu_and_asking_for_it_is_one_line():
    pytest.importorskip("av")
    assert choose_encoder("h264", "auto") == "cpu"
    with pytest.raises(EncoderError, match=r"^--encoder jetson: "):
        choose_encoder("h264", "jetson")
    with pytest.raises(EncoderError, match="writes h264 and h265, not mp4v"):
        choose_encoder("mp4v", "jetson")
    with pytest.raises(EncoderError, match="unknown encoder"):
        choose_encoder("h264", "gpu")


@pytest.mark.gpu
@pytest.mark.skipif(jetson_encoder_problem("h264") is not None,
                    reason=f"needs a Jetson's hardware encoder: {jetson_encoder_problem('h264')}")
def test_jetson_hardware_encoder_writes_h264(tmp_path):
    from fcn_deploy.runtime.sinks import open_sink
    from fcn_deploy.runtime.sources import Frame

    path = tmp_path / "hw.mp4"
    sink = open_sink(str(path), fps=30.0, video=VideoSettings(encoder="jetson"))
    for i in range(30):
        image = np.full((360, 480, 3), i * 8, np.uint8)
        sink.write(image, Frame(image, i))
    sink.close()
    assert sink.frames == 30
    if shutil.which("ffprobe"):
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                              str(path)], capture_output=True, text=True).stdout.strip()
        assert out == "h264"
