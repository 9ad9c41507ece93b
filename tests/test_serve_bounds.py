"""What `fcn-deploy serve` takes: the bounds from the model (fcn_deploy.serve.bounds), the front
door's checks of a request's declared shapes (fcn_deploy.serve.gate.check_infer), the admin key's
rules and Triton's restricted-API options (fcn_deploy.serve.server). No server here: the real
Triton answers the same requests in tests/test_triton_server.py."""
from __future__ import annotations

import dataclasses
import json

import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.model_files import bundled_onnx, read_metadata
from fcn_deploy.serve.bounds import FRAME_FACTOR, InputBounds, model_bounds, parse_frame
from fcn_deploy.serve.gate import check_infer
from fcn_deploy.serve.install import python_settings
from fcn_deploy.serve.server import ADMIN_APIS, ServeOptions, check_admin_key, restricted_api_options, write_python_model

CAMVID_BOUNDS = InputBounds(8, 1920, 1920)


@pytest.fixture(scope="module")
def meta():
    return read_metadata(str(bundled_onnx("camvid")))


def test_the_frame_bound_is_four_times_the_training_scale_or_the_flag(meta):
    bounds = model_bounds(str(bundled_onnx("camvid")), meta, 8)
    assert (bounds.max_batch, bounds.max_height, bounds.max_width) == (8, FRAME_FACTOR * 480, FRAME_FACTOR * 480)
    assert "training scale 360x480" in bounds.why
    no_scale = dataclasses.replace(meta, dataset=None, extra={})
    assert "no training scale" in model_bounds("m.onnx", no_scale, 2).why
    assert model_bounds("m.onnx", meta, 4, (1080, 1920)) == InputBounds(4, 1080, 1920, "--max-frame")
    assert parse_frame("1080x1920") == (1080, 1920)
    for bad in ("1080", "0x5", "axb", "1x2x3"):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
            parse_frame(bad)


def test_requests_outside_the_bounds_are_refused_with_the_reason():
    ok = {"inputs": [{"name": "input", "shape": [2, 360, 640, 3], "datatype": "UINT8", "parameters": {"binary_data_size": 1}}]}
    assert check_infer(ok, CAMVID_BOUNDS, "NHWC_BGR_UINT8") is None
    cases = {
        "larger than this server takes": [1, 100000, 100000, 3],
        "larger than this server takes (batch <= 8": [9, 36, 48, 3],
        "4-D batch": [100000, 3],
        "empty or negative": [1, -1, 48, 3],
    }
    for reason, shape in cases.items():
        request = {"inputs": [{"name": "input", "shape": shape, "datatype": "UINT8", "data": [1, 2, 3]}]}
        assert reason in check_infer(request, CAMVID_BOUNDS, "NHWC_BGR_UINT8"), shape
    # the NCHW float layout reads H and W from axes 2 and 3
    assert check_infer({"inputs": [{"name": "input", "shape": [1, 3, 1921, 8], "data": []}]}, CAMVID_BOUNDS,
                       "NCHW_FLOAT32") is not None
    counted = {"inputs": [{"name": "input", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": [[1, 2, 3]] * 3}]}
    assert "declares 12 values, 'data' holds 9" in check_infer(counted, CAMVID_BOUNDS, "NHWC_BGR_UINT8")
    counted["inputs"][0]["data"].append([4, 5, 6])
    assert check_infer(counted, CAMVID_BOUNDS, "NHWC_BGR_UINT8") is None
    for bad in ({}, {"inputs": "x"}, {"inputs": [{"shape": "1,2"}]}, {"inputs": [{"shape": [1, True, 2, 3]}]}):
        assert check_infer(bad, CAMVID_BOUNDS, "NHWC_BGR_UINT8") is not None


def test_admin_apis_are_closed_by_a_value_no_client_can_send_unless_a_key_is_set():
    closed = restricted_api_options(None)
    assert [o.split("=", 1)[0] for o in closed] == ["--http-restricted-api", "--grpc-restricted-protocol"]
    for option in closed:
        apis, _, header = option.split("=", 1)[1].partition(":")
        assert apis.split(",") == list(ADMIN_APIS)
        key, _, value = header.partition("=")
        assert key == "fcn-deploy-admin-key" and "\n" in value  # no HTTP header / gRPC metadata can carry it
    assert restricted_api_options(None) != closed  # and it differs per start
    key = "k" * 16
    assert all(o.endswith(f":fcn-deploy-admin-key={key}") for o in restricted_api_options(key))
    assert check_admin_key(key) == key
    for bad in ("short", "has space in it 0123", "x" * 257, "caf\u00e9-0123456789abc"):
        with pytest.raises(FcnDeployError, match="FCN_DEPLOY_ADMIN_KEY must be 16 to 256"):
            check_admin_key(bad)


def test_the_repository_keeps_server_paths_out_of_the_config_clients_read(tmp_path, meta):
    model = str(bundled_onnx("camvid"))
    config = write_python_model(str(tmp_path), ServeOptions(model, "camvid", threads=2), meta)
    text = open(config, encoding="utf-8").read()
    assert 'backend: "python"' in text and model not in text and "site-packages" not in text
    settings = json.loads((tmp_path / "camvid" / "1" / "serve.json").read_text())
    assert settings["model"] == {"path": model, "device": "cpu", "threads": 2}
    assert settings["bounds"]["max_height"] == 1920 and settings["bounds"]["max_batch"] == 8
    assert settings["python"] == python_settings()
    assert (tmp_path / "camvid" / "1" / "model.py").is_file()


def test_a_bad_max_frame_or_admin_key_is_one_line_before_anything_starts():
    from onnx_helpers import assert_one_line_error, run_cli

    assert_one_line_error(run_cli(["serve", "--max-frame", "big"]), "--max-frame must be HEIGHTxWIDTH")
    assert_one_line_error(run_cli(["serve"], env_extra={"FCN_DEPLOY_ADMIN_KEY": "short"}),
                          "FCN_DEPLOY_ADMIN_KEY must be 16 to 256")


def test_an_engine_is_bounded_by_its_optimisation_profile(tmp_path, meta):
    from fcn_deploy.runtime.engine_cache import Sidecar, write_sidecar

    engine = tmp_path / "camvid_fp16.engine"
    engine.write_bytes(b"plan")
    profile = {"input": {"min": [1, 64, 64, 3], "opt": [2, 360, 480, 3], "max": [4, 720, 960, 3]}}
    write_sidecar(engine, Sidecar("10.3.0", "Orin", "8.7", "fp16", [profile], "0" * 64, {}, "1" * 64, 4,
                                  metadata=meta.to_dict()))
    bounds = model_bounds(str(engine), meta, 8)
    assert (bounds.max_batch, bounds.max_height, bounds.max_width) == (4, 720, 960)
    assert bounds.why == "the engine's optimisation profile"
    assert model_bounds(str(engine), meta, 2).max_batch == 2
