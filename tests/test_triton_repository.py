"""Triton model repositories written from a model's metadata, parsed with Triton's own schema.

The schema is ``model_config.proto`` as tritonclient ships it compiled
(``tritonclient.grpc.model_config_pb2``); ``google.protobuf.text_format`` is what Triton's
config parser is built on, so a field the server would refuse fails here too.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.engine_cache import Sidecar, write_sidecar
from fcn_deploy.runtime.model_files import bundled_onnx, read_metadata

from fcn_deploy.converters.triton_repository import (
    ONNX_PLATFORM,
    PYTHON_BACKEND,
    TritonModelConfig,
    metadata_from_parameters,
    write_onnx_model,
    write_plan_model,
)

text_format = pytest.importorskip("google.protobuf.text_format", reason="protobuf is not installed")
try:
    from tritonclient.grpc import model_config_pb2
except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError without its grpc extra
    pytest.skip(f"tritonclient[grpc] is not installed ({exc}): pip install 'fcn-deploy[serve]'", allow_module_level=True)


def parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def meta():
    return read_metadata(bundled_onnx("camvid"))


def test_exported_repository_parses_with_tritons_schema(tmp_path, meta):
    repo = write_onnx_model(bundled_onnx("camvid"), tmp_path / "models", "camvid")
    assert (tmp_path / "models" / "camvid" / "1" / "model.onnx").read_bytes() == bundled_onnx("camvid").read_bytes()
    config = parse(open(repo.config_path).read())
    assert config.name == "camvid" and config.platform == ONNX_PLATFORM and config.max_batch_size == 8
    (inp,), (out,) = config.input, config.output
    assert (inp.name, model_config_pb2.DataType.Name(inp.data_type), list(inp.dims)) == ("input", "TYPE_UINT8", [-1, -1, 3])
    assert (out.name, model_config_pb2.DataType.Name(out.data_type), list(out.dims)) == ("labels", "TYPE_UINT8", [-1, -1])
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP32"
    # The metadata comes back whole from the parameters: what the triton:// backend reads.
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert json.loads(params["classes"]) == meta.classes
    assert metadata_from_parameters(params, "config").to_dict() == meta.to_dict()


def test_a_misspelled_field_fails_the_schema(tmp_path, meta):
    text = TritonModelConfig("camvid", meta).text()
    parse(text)
    for right, wrong in (("max_batch_size", "max_batch_sise"), ("preferred_batch_size", "prefered_batch_size"),
                         ("TYPE_UINT8", "TYPE_UINT08"), ("KIND_GPU", "KIND_GPUS")):
        assert right in text
        with pytest.raises(text_format.ParseError):
            parse(text.replace(right, wrong, 1))


def test_variants_logits_fp16_int8_and_the_python_backend(meta):
    logits = dataclasses.replace(meta, input_layout="NCHW_FLOAT32", output="logits")
    config = parse(TritonModelConfig("camvid_logits", logits).text())
    assert model_config_pb2.DataType.Name(config.input[0].data_type) == "TYPE_FP32"
    assert list(config.input[0].dims) == [3, -1, -1] and list(config.output[0].dims) == [11, -1, -1]
    assert config.output[0].name == "logits"

    fp16 = parse(TritonModelConfig("camvid_fp16", dataclasses.replace(meta, precision="fp16")).text())
    assert fp16.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["precision_mode"] == "FP16"
    cpu_int8 = dataclasses.replace(meta, precision="int8", extra={**meta.extra, "calibration": {"scheme": "u8s8"}})
    assert not parse(TritonModelConfig("camvid_u8s8", cpu_int8).text()).HasField("optimization")

    served = parse(TritonModelConfig("camvid", meta, platform=None, backend=PYTHON_BACKEND, instance_kind="KIND_CPU",
                                     max_batch_size=4, parameters={"fcn_deploy_model_path": "/m.onnx"}).text())
    assert served.backend == "python" and served.platform == "" and not served.HasField("optimization")
    assert served.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert served.parameters["fcn_deploy_model_path"].string_value == "/m.onnx"


def test_bad_settings_and_an_existing_model_are_refused(tmp_path, meta):
    with pytest.raises(FcnDeployError, match="max batch"):
        TritonModelConfig("camvid", meta, max_batch_size=0)
    with pytest.raises(FcnDeployError, match="model name"):
        TritonModelConfig("a/b", meta)
    with pytest.raises(FcnDeployError, match="hide the model's metadata"):
        TritonModelConfig("camvid", meta, parameters={"classes": "[]"})
    write_onnx_model(bundled_onnx("camvid"), tmp_path, "camvid")
    with pytest.raises(FcnDeployError, match="already holds a Triton model"):
        write_onnx_model(bundled_onnx("camvid"), tmp_path, "camvid")
    write_onnx_model(bundled_onnx("camvid"), tmp_path, "camvid", overwrite=True, max_batch_size=2)
    assert parse((tmp_path / "camvid" / "config.pbtxt").read_text()).max_batch_size == 2


def test_tensorrt_plans_per_compute_capability(tmp_path, meta):
    engines = []
    for cc, gpu in (("8.7", "Orin"), ("8.9", "NVIDIA L4")):
        engine = tmp_path / f"camvid_sm{cc.replace('.', '')}.engine"
        engine.write_bytes(b"plan bytes for " + gpu.encode())
        profile = {"input": {"min": [1, 64, 64, 3], "opt": [4, 360, 480, 3], "max": [4, 720, 960, 3]}}
        write_sidecar(engine, Sidecar("10.3.0", gpu, cc, "fp16", [profile], "0" * 64, {}, "1" * 64, 20,
                                      metadata=dataclasses.replace(meta, precision="fp16").to_dict()))
        engines.append(engine)
    repo = write_plan_model(engines, tmp_path / "models", "camvid_trt")
    config = parse(open(repo.config_path).read())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4  # the engines' profile maximum
    assert dict(config.cc_model_filenames) == {"8.7": "model_sm87.plan", "8.9": "model_sm89.plan"}
    assert (tmp_path / "models" / "camvid_trt" / "1" / "model_sm87.plan").read_bytes() == b"plan bytes for Orin"
    with pytest.raises(FcnDeployError, match="both for compute capability 8.7"):
        write_plan_model([engines[0], engines[0]], tmp_path / "other", "x")


def test_export_triton_from_engines_writes_a_plan_model(tmp_path, meta, capsys):
    from fcn_deploy.cli import main

    engine = tmp_path / "camvid_fp16_sm87.engine"
    engine.write_bytes(b"plan")
    profile = {"input": {"min": [1, 64, 64, 3], "opt": [2, 360, 480, 3], "max": [2, 720, 960, 3]}}
    write_sidecar(engine, Sidecar("8.5.2", "Orin", "8.7", "fp16", [profile], "0" * 64, {}, "1" * 64, 4,
                                  metadata=meta.to_dict()))
    assert main(["export", "--triton", str(tmp_path / "repo"), "--engine", str(engine)]) == 0
    assert "tensorrt_plan" in capsys.readouterr().out
    config = parse((tmp_path / "repo" / "camvid_fp16" / "config.pbtxt").read_text())
    assert dict(config.cc_model_filenames) == {"8.7": "model_sm87.plan"} and config.max_batch_size == 2
    assert main(["export", "--engine", str(engine)]) == 1  # --engine without --triton: one line
    assert "--engine goes with --triton" in capsys.readouterr().err
    # Export options would be silently ignored for built engines: refused in one line, nothing written.
    code = main(["export", "--triton", str(tmp_path / "repo2"), "--engine", str(engine), "--int8"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "--int8 cannot apply to --engine" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "repo2").exists()
