"""Facts an export writes are the checkpoint's, and the next steps it prints succeed (issue 30):

* re-exporting the bundled checkpoint (``export --fp16``, ``export --triton``) carries the mean
  IU it measured (under ``test_metrics``: it was trained on train+val) instead of ``null``;
* the next step ``export --int8`` prints, ``fcn-deploy compare FILE --images ...``, passes on
  the file it was printed for: an INT8 model is judged at the sizes the runtime feeds it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from fcn_deploy.cli import main
from fcn_deploy.converters.compare import DEFAULT_SIZES, default_sizes, int8_sizes
from fcn_deploy.converters.resolve import measured_mean_iu
from fcn_deploy.runtime.assets import demo_clip
from fcn_deploy.runtime.model_files import bundled_checkpoint, bundled_onnx, read_metadata

torch = pytest.importorskip("torch")


def checkpoint_test_mean_iu() -> float:
    state = torch.load(bundled_checkpoint("camvid"), map_location="cpu", weights_only=True)
    assert not state["metrics"]  # trained on train+val: no validation score
    return float(state["test_metrics"]["mean_iu"])


def test_measured_mean_iu_prefers_validation_then_test():
    assert measured_mean_iu({"metrics": {"mean_iu": 0.5}, "test_metrics": {"mean_iu": 0.6}}) == (0.5, "val")
    assert measured_mean_iu({"metrics": {"mean_iu": 0.5}, "recipe": {"val_split": "test"}}) == (0.5, "test")
    assert measured_mean_iu({"metrics": {}, "test_metrics": {"mean_iu": 0.6}}) == (0.6, "test")
    assert measured_mean_iu({"metrics": {"mean_iu": float("nan")}}) == (None, None)
    assert measured_mean_iu({}) == (None, None)


def test_a_re_export_of_the_bundled_checkpoint_carries_its_mean_iu(tmp_path, monkeypatch, capsys):
    """The issue's repros: ``export --fp16`` and ``export --triton REPO``."""
    monkeypatch.chdir(tmp_path)
    expected = checkpoint_test_mean_iu()
    assert main(["export", "--fp16", "--output", "camvid_fp16.onnx"]) == 0
    assert main(["export", "--triton", "repo"]) == 0
    out = capsys.readouterr().out
    assert f"trained on camvid (mean IU {expected:.3f} on test)" in out
    for path in ("camvid_fp16.onnx", "repo/camvid/1/model.onnx"):
        meta = read_metadata(path)
        assert meta.mean_iu == pytest.approx(expected) and meta.extra["mean_iu_split"] == "test", path
    config = Path("repo/camvid/config.pbtxt").read_text()
    assert re.search(r'key: "mean_iu"\s*value: \{\s*string_value: "0\.652', config), config
    # The same figure the bundled ONNX carries (it was measured through ONNX Runtime on test).
    assert read_metadata(str(bundled_onnx("camvid"))).mean_iu == pytest.approx(expected, abs=1e-6)


def test_int8_is_judged_at_the_sizes_the_runtime_feeds_it():
    meta = read_metadata(str(bundled_onnx("camvid")))
    assert default_sizes(meta) == list(DEFAULT_SIZES)  # FP32: odd and small sizes too
    meta.precision = "int8"
    meta.extra = {**meta.extra, "calibration": {"size": [300, 400]}}
    # 480x640 -> 360x480, 720p and 1080p -> 360x640 (the rule), the reference, the calibration size
    assert int8_sizes(meta) == [(300, 400), (360, 480), (360, 640)]


def test_the_compare_step_export_int8_prints_passes(tmp_path, monkeypatch, capsys):
    """Export the bundled model to INT8 (u8s8, calibrated on six frames of the bundled clip),
    then run every ``fcn-deploy compare`` line it printed under "Next steps", as printed."""
    import cv2

    monkeypatch.chdir(tmp_path)
    Path("frames").mkdir()
    capture = cv2.VideoCapture(str(demo_clip()))
    for i in range(60):
        ok, frame = capture.read()
        assert ok
        if i % 10 == 0:
            assert cv2.imwrite(f"frames/f{i:02d}.png", frame)
    capture.release()
    assert main(["export", "--int8", "--int8-scheme", "u8s8", "--calib", "frames", "--calib-images", "6"]) == 0
    out = capsys.readouterr().out
    steps = [line.split("#")[0].split() for line in out.split("Next steps:")[1].splitlines() if line.strip()]
    compares = [s for s in steps if s[:2] == ["fcn-deploy", "compare"]]
    assert compares == [["fcn-deploy", "compare", "camvid_int8_u8s8.onnx", "--images", "frames"]], out
    for step in compares:
        assert main(step[1:]) == 0
        report = capsys.readouterr().out
        assert "[360x480, batch 2]" in report and "[360x640, batch 2]" in report and "PASSED" in report, report
