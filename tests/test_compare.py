"""`fcn-deploy compare`: Polygraphy-style report of an ONNX model against PyTorch or ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fcn_deploy.converters.compare import OnnxSide, Tolerances, compare, error_stats, format_report, reference_side
from fcn_deploy.converters.onnx_export import export
from fcn_deploy.converters.resolve import model_from_checkpoint
from fcn_deploy.errors import FcnDeployError

from onnx_helpers import assert_one_line_error, run_cli, write_checkpoint

SIZES = [(97, 131), (32, 48)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("compare")
    ckpt = write_checkpoint(folder / "ck.pt")
    resolved = model_from_checkpoint(str(ckpt))
    paths = {
        "ckpt": ckpt,
        "deploy": export(resolved, str(folder / "deploy.onnx")).path,
        "logits": export(resolved, str(folder / "logits.onnx"), fold_preprocessing=False, fold_argmax=False).path,
        "fp16": export(resolved, str(folder / "fp16.onnx"), precision="fp16",
                       fold_preprocessing=False, fold_argmax=False).path,
        "other": write_checkpoint(folder / "other.pt", seed=7),
        "folder": folder,
    }
    yield paths
    torch.set_num_threads(before)


def test_error_stats_by_hand():
    b = np.array([1.0, -2.0, 4.0, 0.5])
    a = b + np.array([0.1, 0.0, -0.4, 0.0])
    s = error_stats(a, b, atol=0.2, rtol=0.0)
    assert s["max_abs"] == pytest.approx(0.4)
    assert s["mean_abs"] == pytest.approx(0.125)
    assert s["max_rel"] == pytest.approx(0.1)
    assert s["range"] == pytest.approx(6.0)
    assert s["within"] == pytest.approx(0.75)  # 0.4 > 0.2
    assert error_stats(a, b, atol=0.0, rtol=0.11)["within"] == pytest.approx(1.0)


def test_logits_graph_against_its_checkpoint(files):
    a = OnnxSide(files["logits"])
    b = reference_side(a, None)  # the checkpoint recorded at export
    reports = compare(a, b, SIZES, batch=2, tolerances=Tolerances())
    for r in reports:
        assert r.passed and r.logits_ok and r.agreement >= 0.999
        assert r.logits["max_abs"] <= 1e-4 * r.logits["range"]
    text = "\n".join(format_report(reports, Tolerances()))
    assert "[97x131, batch 2]" in text and "PASSED (2/2 sizes)" in text and "p99" in text


def test_deploy_graph_is_judged_on_labels(files):
    a = OnnxSide(files["deploy"])
    reports = compare(a, reference_side(a, str(files["ckpt"])), SIZES, 1, Tolerances())
    assert all(r.passed and r.logits == {} and r.logits_ok is None for r in reports)


def test_different_weights_fail(files):
    a = OnnxSide(files["logits"])
    reports = compare(a, reference_side(a, str(files["other"])), SIZES, 1, Tolerances())
    assert not any(r.passed for r in reports)
    assert "FAILED (0/2 sizes)" in format_report(reports, Tolerances())[-1]


def test_fp16_against_fp32_onnx(files):
    a = OnnxSide(files["fp16"])
    b = reference_side(a, files["logits"])
    tol = Tolerances(min_agreement=0.995, judge_logits=False)
    reports = compare(a, b, SIZES, 2, tol)
    assert all(r.passed and r.logits_ok is None and r.logits["max_abs"] > 0 for r in reports)


def test_reference_must_exist(files, tmp_path):
    import shutil

    moved = tmp_path / "ck.pt"
    ckpt = write_checkpoint(moved)
    exported = export(model_from_checkpoint(str(ckpt)), str(tmp_path / "m.onnx"))
    shutil.move(str(moved), str(tmp_path / "elsewhere.pt"))
    a = OnnxSide(exported.path)
    with pytest.raises(FcnDeployError, match="which is not here"):
        reference_side(a, None)
    with pytest.raises(FcnDeployError, match="untrained zoo model"):
        reference_side(a, "fcn8s_resnet18")


def test_cli_compare_pass_and_fail(files):
    ok = run_cli(["compare", files["logits"], "--sizes", "97x131,16x24", "--batch", "2"])
    assert ok.returncode == 0, ok.stderr
    assert "B: " in ok.stdout and str(files["ckpt"]) in ok.stdout
    assert "PASSED (2/2 sizes)" in ok.stdout and "Traceback" not in ok.stderr
    bad = run_cli(["compare", files["logits"], files["other"], "--sizes", "40x40"])
    assert bad.returncode == 1 and "FAILED (0/1 sizes)" in bad.stdout and "Traceback" not in bad.stderr


def test_cli_compare_bad_arguments(files):
    assert_one_line_error(run_cli(["compare", files["logits"], "--sizes", "97by131"]), "bad size")
    assert_one_line_error(run_cli(["compare", files["logits"], "--min-agreement", "99"]), "fraction")


def test_cli_compare_on_openvino_in_fp32_and_bf16(files):
    """``compare A A --device openvino``: OpenVINO's fp32 (read back: compiled in fp32) against
    ONNX Runtime passes at FP32's tolerance; ``--precision bf16`` is judged as bf16 where the CPU
    has it (AVX512_BF16 or AMX) and refused in one line where it has not, and on ONNX Runtime."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from fcn_deploy.runtime.backends.openvino import device_capabilities

    deploy = str(files["deploy"])
    fp32 = run_cli(["compare", deploy, deploy, "--device", "openvino", "--sizes", "97x131,32x48"])
    assert fp32.returncode == 0, fp32.stdout + fp32.stderr
    assert "fp32 graph run in fp32" in fp32.stdout and "(min 99.90%)" in fp32.stdout
    bf16 = run_cli(["compare", deploy, deploy, "--device", "openvino", "--precision", "bf16", "--sizes", "32x48"])
    if "BF16" in device_capabilities("CPU"):
        assert "fp32 graph run in bf16" in bf16.stdout and "(min 95.00%)" in bf16.stdout, bf16.stdout + bf16.stderr
        assert "note: bf16 judged on seeded noise" in bf16.stdout
    else:
        assert_one_line_error(bf16, "bf16 is not supported by OpenVINO's CPU")
    assert_one_line_error(run_cli(["compare", deploy, deploy, "--precision", "bf16"]), "ONNX Runtime has no bf16 mode")
