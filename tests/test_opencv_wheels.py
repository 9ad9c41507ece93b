"""OpenCV comes as one of two extras, never both: `gui` (opencv-python, display://0 windows) or
`headless` (opencv-python-headless, servers). Both PyPI wheels install `cv2`, so two in one
environment overwrite each other; the core dependencies name neither (a Jetson keeps JetPack's).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPENCV_WHEELS = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, 1)[0].strip().lower()


def test_core_names_no_opencv_and_each_extra_at_most_one():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not {_name(r) for r in project["dependencies"]} & OPENCV_WHEELS, project["dependencies"]
    extras = project["optional-dependencies"]
    assert [_name(r) for r in extras["gui"]] == ["opencv-python"]
    assert [_name(r) for r in extras["headless"]] == ["opencv-python-headless"]
    for extra, requirements in extras.items():
        if extra not in ("gui", "headless"):
            assert not {_name(r) for r in requirements} & OPENCV_WHEELS, extra


def test_every_documented_install_takes_exactly_one_opencv():
    """Each `pip install -e ".[...]"` in the README and docs names gui or headless, never both."""
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for extras in re.findall(r'pip install -e "\.\[([^\]]+)\]"', doc.read_text(encoding="utf-8")):
            names = set(extras.split(","))
            if names & {"cpu", "gpu"}:  # an install that runs models
                assert len(names & {"gui", "headless"}) == 1, f"{doc.name}: .[{extras}]"


def test_a_missing_opencv_is_one_line(tmp_path):
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from fcn_deploy.cli import main\n"
            "sys.exit(main(['run', '--max-frames', '1', '--output', 'none']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "fcn-deploy: error: fcn-deploy run needs OpenCV (pip install -e '.[gui]' on a desktop, or '.[headless]' "
        "on a server, not both; on a Jetson, JetPack's: docs/tensorrt.md)"
    ]


def test_two_wheels_without_a_gui_name_both_and_the_fix(tmp_path, monkeypatch):
    """A headless cv2 with opencv-python also installed (the headless one was installed last and
    won): the display error names both wheels and the commands that leave one."""
    from fcn_deploy.runtime import sinks

    gui = [l for l in sinks.cv2.getBuildInformation().splitlines() if l.strip().startswith("GUI:")]
    if not gui or gui[0].split(":", 1)[1].strip().upper() not in ("NONE", "NO", ""):
        pytest.skip("this cv2 has a GUI: the two-wheel case needs a headless one")
    if "opencv-python" not in sinks._installed_opencv_wheels():
        # opencv-python's distribution metadata on sys.path, as pip writes it (not its cv2)
        info = tmp_path / "opencv_python-5.0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opencv-python\nVersion: 5.0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    problem = sinks.display_problem()
    assert "opencv-python and opencv-python-headless are both installed" in problem, problem
    assert "pip uninstall -y opencv-python opencv-python-headless && pip install opencv-python" in problem


@pytest.mark.parametrize("command, expect", [
    (["check", "camvid"], "accepted by the ONNX parser of TensorRT"),
    (["build", str(REPO / "fcn_deploy" / "assets" / "camvid.onnx"), "--output", "x.engine"], "TensorRT"),
])
def test_check_and_build_need_no_opencv(command, expect, tmp_path):
    """`check` and `build` read graphs, not pictures: they run where no OpenCV is installed
    (`pip install .` alone), `build` up to TensorRT itself, which is not installed here."""
    pytest.importorskip("onnx")
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from fcn_deploy.cli import main\n"
            f"sys.exit(main({command!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "OpenCV" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert expect in result.stdout + result.stderr, result.stdout + result.stderr

