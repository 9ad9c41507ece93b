"""The engine sidecar and the reuse rules: every field an engine depends on, changed alone,
makes the cache rebuild and say why; atomic writes never leave half a file."""
import json
import os

import pytest

from fcn_deploy.runtime import engine_cache as ec
from fcn_deploy.runtime.engine_cache import BuildRequest, EngineMismatch, Sidecar, SystemInfo

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10

PROFILE = [{"input": {"min": [1, 180, 240, 3], "opt": [1, 360, 480, 3], "max": [1, 720, 960, 3]}}]
OPTIONS = {"workspace_gb": None, "opt_level": None, "dla_core": None, "version_compatible": False, "contexts": 1}
META = {"format": "fcn-deploy", "model_name": "fcn8s_resnet18", "precision": "fp16"}
SYSTEM = SystemInfo("10.3.0", "Orin", "8.7")


def make_sidecar(**changes) -> Sidecar:
    fields = dict(
        tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", precision="fp16",
        profiles=PROFILE, onnx_sha256="a" * 64, build_options=dict(OPTIONS), engine_sha256="",
        engine_bytes=0, metadata=dict(META), strongly_typed=True, onnx_path="m.onnx",
        build_time="2025-01-01T00:00:00+00:00",
    )
    fields.update(changes)
    return Sidecar(**fields)


def make_request(**changes) -> BuildRequest:
    fields = dict(onnx_sha256="a" * 64, precision="fp16", profiles=PROFILE, options=dict(OPTIONS), metadata=dict(META))
    fields.update(changes)
    return BuildRequest(**fields)


def write_engine(path, data=b"PLAN-BYTES", **changes) -> Sidecar:
    ec.atomic_write(path, data)
    sidecar = make_sidecar(engine_sha256=ec.sha256_bytes(data), engine_bytes=len(data), **changes)
    ec.write_sidecar(path, sidecar)
    return sidecar


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "m.engine"
    written = write_engine(engine, extra={"builder_flags": ["FP16"]})
    assert ec.sidecar_path(engine) == str(engine) + ".json"
    on_disk = json.loads((tmp_path / "m.engine.json").read_text())
    assert on_disk["format"] == ec.SIDECAR_FORMAT and on_disk["tensorrt_version"] == "10.3.0"
    assert on_disk["metadata"]["model_name"] == "fcn8s_resnet18"
    read = ec.read_sidecar(engine)
    assert read == written
    assert read.system == SYSTEM


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "has no sidecar"),
        ("{not json", "cannot read"),
        (json.dumps({"format": "something-else"}), "not an fcn-deploy engine sidecar"),
        (json.dumps({"format": ec.SIDECAR_FORMAT, "format_version": 99}), "upgrade fcn-deploy"),
        (json.dumps({"format": ec.SIDECAR_FORMAT, "format_version": 1, "precision": "fp16"}), "incomplete"),
    ],
)
def test_unreadable_sidecars_are_one_clear_error(tmp_path, content, message):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    if content is not None:
        (tmp_path / "m.engine.json").write_text(content)
    with pytest.raises(EngineMismatch, match=message):
        ec.read_sidecar(engine)


def test_matching_engine_is_reused():
    assert ec.reuse_problem(make_sidecar(), make_request(), SYSTEM) is None


@pytest.mark.parametrize(
    "sidecar_changes, request_changes, system, reason",
    [
        ({}, {}, SystemInfo("10.13.3.9", "Orin", "8.7"), "built by TensorRT 10.3.0; this is TensorRT 10.13.3.9"),
        ({}, {}, SystemInfo("10.3.0", "NVIDIA GeForce RTX 3090", "8.6"), "this GPU is NVIDIA GeForce RTX 3090 (sm 8.6)"),
        ({}, {}, SystemInfo("10.3.0", "Orin", "9.0"), "(sm 9.0)"),
        ({}, {"onnx_sha256": "b" * 64}, SYSTEM, "ONNX file changed"),
        ({}, {"precision": "int8"}, SYSTEM, "engine precision is fp16; int8 was asked for"),
        ({}, {"profiles": [{"input": {"min": [1, 64, 64, 3], "opt": [1, 360, 480, 3], "max": [1, 720, 960, 3]}}]},
         SYSTEM, "min=1x64x64x3"),
        ({}, {"profiles": PROFILE * 2}, SYSTEM, "engine shapes are"),
        ({}, {"options": dict(OPTIONS, workspace_gb=2.0)}, SYSTEM, "workspace_gb None -> 2.0"),
        ({}, {"options": dict(OPTIONS, opt_level=5)}, SYSTEM, "opt_level None -> 5"),
        ({}, {"options": dict(OPTIONS, dla_core=0)}, SYSTEM, "dla_core None -> 0"),
        ({}, {"options": dict(OPTIONS, version_compatible=True)}, SYSTEM, "version_compatible False -> True"),
        ({}, {"options": dict(OPTIONS, contexts=2)}, SYSTEM, "contexts 1 -> 2"),
        ({}, {"metadata": dict(META, model_name="other")}, SYSTEM, "metadata changed"),
    ],
)
def test_each_changed_field_rebuilds_with_its_reason(sidecar_changes, request_changes, system, reason):
    problem = ec.reuse_problem(make_sidecar(**sidecar_changes), make_request(**request_changes), system)
    assert problem is not None and reason in problem
    assert "\n" not in problem


def test_engine_file_checks(tmp_path):
    engine = tmp_path / "m.engine"
    assert ec.engine_problem(engine, make_request(), SYSTEM) == "no engine yet"
    engine.write_bytes(b"someone else's plan")
    assert "has no sidecar" in ec.engine_problem(engine, make_request(), SYSTEM)
    write_engine(engine)
    assert ec.engine_problem(engine, make_request(), SYSTEM) is None
    engine.write_bytes(b"PLAN-BYTEZ")  # same size, other bytes
    assert "not the one its sidecar describes" in ec.engine_problem(engine, make_request(), SYSTEM)
    engine.write_bytes(b"PLAN")
    assert "not the one its sidecar describes" in ec.engine_problem(engine, make_request(), SYSTEM)


@pytest.mark.parametrize(
    "built, running, compatible, ok",
    [
        ("10.3.0", "10.3.0", False, True),
        ("10.3.0", "10.3.1", False, False),
        ("10.3.0", "10.13.3.9", True, True),
        ("10.13.3.9", "10.3.0", True, False),  # never backwards
        ("8.6.1", "10.3.0", True, True),  # the documented 8 -> 10 step
        ("10.3.0", "11.4.0.106", True, True),  # and 10 -> 11
        ("8.6.1", "11.4.0.106", True, False),
    ],
)
def test_runtime_version_rules(built, running, compatible, ok):
    sidecar = make_sidecar(tensorrt_version=built, build_options=dict(OPTIONS, version_compatible=compatible))
    problem = ec.runtime_problem(sidecar, SystemInfo(running, "Orin", "8.7"))
    assert (problem is None) == ok
    if not ok:
        assert built in problem and running in problem


def test_runtime_needs_the_same_architecture_not_the_same_board():
    sidecar = make_sidecar(gpu_name="NVIDIA GeForce RTX 3090", compute_capability="8.6")
    assert ec.runtime_problem(sidecar, SystemInfo("10.3.0", "NVIDIA RTX A6000", "8.6")) is None
    problem = ec.runtime_problem(sidecar, SystemInfo("10.3.0", "NVIDIA H100", "9.0"))
    assert "sm 8.6" in problem and "sm 9.0" in problem


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "m.engine"
    ec.atomic_write(path, b"one")
    ec.atomic_write(path, b"two two")
    assert path.read_bytes() == b"two two"
    ec.atomic_write(path, "text")
    assert path.read_text() == "text"
    assert os.listdir(path.parent) == ["m.engine"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.engine"
    path.write_bytes(b"old engine")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ec.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ec.atomic_write(path, b"new engine")
    assert path.read_bytes() == b"old engine"
    assert os.listdir(tmp_path) == ["m.engine"]  # no temporary file left behind


def test_cached_engine_names_say_what_they_depend_on(tmp_path):
    path = ec.cached_engine_path("/models/camvid.fp16.onnx", tmp_path, "0123456789abcdef" * 4,
                                 SystemInfo("10.3.0", "NVIDIA GeForce RTX 3090", "8.6"), "fp16")
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path) == "camvid.fp16.0123456789ab.fp16.trt10.3.0.geforce-rtx-3090-sm86.engine"
    assert ec.gpu_slug("Orin") == "orin"
    assert ec.gpu_slug("NVIDIA") == "gpu"
