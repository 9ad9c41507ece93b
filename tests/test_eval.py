"""`fcn-deploy eval` and the torch-free evaluation core, on a CamVid-layout set made here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fcn_deploy.cli import main
from fcn_deploy.data import build_dataset
from fcn_deploy.data.camvid import CAMVID_CLASSES
from fcn_deploy.data.transforms import normalize
from fcn_deploy.evaluation import evaluate, format_report
from fcn_deploy.models import build_model
from fcn_deploy.training.checkpoint import atomic_save, make_checkpoint

SIZES = [(40, 56), (36, 48), (40, 56)]


@pytest.fixture(scope="module")
def camvid_root(tmp_path_factory) -> Path:
    """Three test frames in the SegNet CamVid layout: RGB PNGs and index PNGs with 11 = ignore."""
    root = tmp_path_factory.mktemp("CamVid")
    (root / "test").mkdir()
    (root / "testannot").mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = rng.integers(0, 12, (h, w), dtype=np.uint8)  # 11 = Unlabelled
        cv2.imwrite(str(root / "test" / f"Seq05VD_f{i:05d}.png"), image[..., ::-1])
        cv2.imwrite(str(root / "testannot" / f"Seq05VD_f{i:05d}.png"), label)
    return root


@pytest.fixture(scope="module")
def checkpoint(camvid_root, tmp_path_factory) -> Path:
    """A tiny FCN-8s with random (non-zero) scorers, saved as a training checkpoint."""
    torch.manual_seed(0)
    model = build_model("fcn8s_resnet18", 11, width=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    dataset = build_dataset("camvid", camvid_root, "test")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    atomic_save(make_checkpoint(model, {"width": 16}, dataset, "camvid", {"mean_iu": 0.1}, 1, {}, 1.0), path)
    return path


def _reference_scores(checkpoint: Path, root: Path):
    """The metrics computed here by hand: torch forward, arg-max, numpy confusion matrix."""
    ckpt = torch.load(checkpoint, weights_only=True)
    model = build_model("fcn8s_resnet18", 11, width=16)
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    hist = np.zeros((11, 11), np.int64)
    dataset = build_dataset("camvid", root, "test")
    for i in range(len(dataset)):
        image, label = dataset[i]
        with torch.no_grad():
            pred = model(torch.from_numpy(normalize(image, model.normalization))[None]).argmax(1)[0].numpy()
        keep = label != 11
        hist += np.bincount(11 * label[keep] + pred[keep], minlength=121).reshape(11, 11)
    iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return {"pixel_acc": np.diag(hist).sum() / hist.sum(), "mean_iu": np.nanmean(iu), "per_class_iu": iu}


def _eval_json(capsys, *args) -> dict:
    code = main(["eval", *args, "--json", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_eval_checkpoint_json(checkpoint, camvid_root, capsys):
    report = _eval_json(capsys, "--model", str(checkpoint), "--dataset", "camvid", "--root", str(camvid_root))
    assert set(report) >= {"model", "dataset", "split", "images", "pixel_acc", "mean_acc", "mean_iu", "fw_iu",
                           "classes", "per_class_iu", "per_class_acc"}
    assert report["dataset"] == "camvid" and report["split"] == "test" and report["images"] == 3
    assert report["classes"] == CAMVID_CLASSES and list(report["per_class_iu"]) == CAMVID_CLASSES
    ref = _reference_scores(checkpoint, camvid_root)
    # eval runs channels-last on the CPU, the reference does not: allow an arg-max flip or two.
    assert report["pixel_acc"] == pytest.approx(ref["pixel_acc"], abs=2e-3)
    assert report["mean_iu"] == pytest.approx(ref["mean_iu"], abs=2e-3)
    for name, iu in zip(CAMVID_CLASSES, ref["per_class_iu"]):
        assert report["per_class_iu"][name] == (None if np.isnan(iu) else pytest.approx(iu, abs=2e-2))


def test_eval_table_defaults_to_the_training_dataset(checkpoint, camvid_root, capsys):
    code = main(["eval", "--model", str(checkpoint), "--root", str(camvid_root), "--size", "32x48", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0
    for text in ("pixel accuracy", "mean accuracy", "mean IU", "f.w. IU", "SignSymbol", "Bicyclist", "32x48"):
        assert text in out


def test_dataset_root_from_environment(checkpoint, camvid_root, capsys, monkeypatch):
    data = camvid_root.parent / "datasets"
    data.mkdir(exist_ok=True)
    link = data / "CamVid"
    if not link.exists():
        link.symlink_to(camvid_root, target_is_directory=True)
    monkeypatch.setenv("FCN_DEPLOY_DATA", str(data))
    report = _eval_json(capsys, "--model", str(checkpoint), "--dataset", "camvid", "--limit", "1")
    assert report["images"] == 1


def test_eval_onnx_through_the_runtime_backend(checkpoint, camvid_root, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    onnx_export = pytest.importorskip("fcn_deploy.converters.onnx_export")
    onnx_path = tmp_path / "tiny.onnx"
    resolve = pytest.importorskip("fcn_deploy.converters.resolve")
    onnx_export.export(resolve.model_from_checkpoint(str(checkpoint)), str(onnx_path))
    via_onnx = _eval_json(capsys, "--model", str(onnx_path), "--root", str(camvid_root))
    via_torch = _eval_json(capsys, "--model", str(checkpoint), "--root", str(camvid_root))
    assert via_onnx["dataset"] == "camvid"  # from the ONNX metadata
    assert "OnnxRuntime" in via_onnx["runs_on"] or "onnx" in via_onnx["runs_on"].lower()
    # Same weights, same labels: the scores agree up to a few float-rounding flips of the arg-max.
    assert via_onnx["mean_iu"] == pytest.approx(via_torch["mean_iu"], abs=2e-3)
    assert via_onnx["pixel_acc"] == pytest.approx(via_torch["pixel_acc"], abs=2e-3)


def test_eval_precision_on_openvino_and_its_refusals(checkpoint, camvid_root, tmp_path, capsys):
    """--precision: fp32 on OpenVINO says it ran in fp32 (read back from the compiled model);
    bf16 runs there where the CPU has it (AVX512_BF16 or AMX; a one-line refusal where not), and
    is one line on ONNX Runtime and for a checkpoint."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    onnx_export = pytest.importorskip("fcn_deploy.converters.onnx_export")
    resolve = pytest.importorskip("fcn_deploy.converters.resolve")
    from fcn_deploy.runtime.backends.openvino import device_capabilities

    onnx_path = tmp_path / "tiny.onnx"
    onnx_export.export(resolve.model_from_checkpoint(str(checkpoint)), str(onnx_path))
    fp32 = _eval_json(capsys, "--model", str(onnx_path), "--root", str(camvid_root), "--device", "openvino")
    assert fp32["runs_on"].endswith("; fp32)"), fp32["runs_on"]
    args = ["eval", "--model", str(onnx_path), "--root", str(camvid_root), "--device", "openvino", "--precision",
            "bf16", "--json", "--threads", "1"]
    code = main(args)
    captured = capsys.readouterr()
    if "BF16" in device_capabilities("CPU"):
        assert code == 0, captured.err
        bf16 = json.loads(captured.out)
        assert bf16["runs_on"].endswith("; bf16)") and abs(bf16["mean_iu"] - fp32["mean_iu"]) < 0.05
    else:
        assert code == 1 and "AVX512_BF16 or AMX" in captured.err and len(captured.err.strip().splitlines()) == 1
    for model in (str(onnx_path), str(checkpoint)):
        code = main(["eval", "--model", model, "--root", str(camvid_root), "--precision", "bf16"])
        err = capsys.readouterr().err.strip()
        assert code == 1 and err.startswith("fcn-deploy: error:") and len(err.splitlines()) == 1, err
        assert "bf16" in err


@pytest.mark.parametrize(
    "case", ["missing root", "missing checkpoint", "corrupt checkpoint", "wrong classes", "bundled model absent"]
)
def test_eval_bad_inputs_fail_with_one_line(case, checkpoint, camvid_root, tmp_path, capsys, monkeypatch):
    args = ["eval", "--model", str(checkpoint), "--dataset", "camvid", "--root", str(camvid_root)]
    if case == "bundled model absent":
        from fcn_deploy.runtime import assets

        monkeypatch.setattr(assets, "ASSETS", tmp_path / "no-assets")  # an install without it
        args[2] = "camvid"
    elif case == "missing root":
        args[-1] = str(tmp_path / "no_such_dir")
    elif case == "missing checkpoint":
        args[2] = str(tmp_path / "missing.pt")
    elif case == "corrupt checkpoint":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"garbage")
        args[2] = str(bad)
    else:
        args = ["eval", "--model", str(checkpoint), "--dataset", "synthetic"]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("fcn-deploy: error:") and len(err.splitlines()) == 1, err


def test_evaluate_core_with_a_plain_callable(camvid_root):
    dataset = build_dataset("camvid", camvid_root, "test")
    perfect = evaluate(dataset, lambda image: np.zeros(image.shape[:2], np.int64) + 0)
    # Predicting class 0 everywhere: pixel accuracy is class 0's share of labelled pixels.
    labels = np.concatenate([dataset[i][1].ravel() for i in range(len(dataset))])
    labels = labels[labels != 11]
    assert perfect.scores()["pixel_acc"] == pytest.approx(np.mean(labels == 0))
    oracle_scores = evaluate(dataset, lambda image, it=iter(range(3)): dataset[next(it)][1]).scores()
    assert oracle_scores["mean_iu"] == 1.0 and oracle_scores["pixel_acc"] == 1.0
    assert "Sky" in format_report(oracle_scores, dataset.classes)


def test_evaluation_core_does_not_import_torch():
    code = "import sys, fcn_deploy.evaluation; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
