"""``fcn-deploy import``: someone else's segmentation ONNX (or torchvision model) made deployable.

The sources are real ONNX files that the tests write the way users write them: a small
PyTorch segmentation net with torchvision's structure (a pooled branch interpolated back to
its features' size, the scores interpolated to the input's size, an ``aux`` head), exported by
a plain ``torch.onnx.export`` at one fixed size. Parity is with that net's own eager
``argmax(model(x)["out"])`` on the same frames, normalised in numpy as the runtime would.

The tests marked ``torchvision`` run torchvision's own fcn_resnet50, LR-ASPP and DeepLabV3 with
seeded random weights; they need an importable torchvision, which PyPI's wheel is not beside
the CPU torch 2.13 of the main environment, so .ci/torchvision-env runs them in a venv with
torch 2.14.1 and torchvision 0.29.1 and they skip with that reason here.
"""
from __future__ import annotations

import os
import sys
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

from fcn_deploy.converters.import_onnx import (  # noqa: E402
    ClassList,
    ImportError_,
    import_onnx,
    normalization_from,
    read_classes,
)
from fcn_deploy.converters.tensorrt_check import check_onnx  # noqa: E402
from fcn_deploy.normalization import TORCHVISION_IMAGENET, Normalization, normalize_pixels  # noqa: E402
from fcn_deploy.runtime.backends import open_backend  # noqa: E402

EXPORT_SIZE = (64, 96)


class TinySegmenter(nn.Module):
    """torchvision's segmentation structure in miniature: stride-4 features, a global pooled
    branch interpolated back to them (as LR-ASPP and DeepLabV3's ASPP pooling), class scores
    interpolated to the input (as FCN), an ``aux`` head; ``full=False`` leaves the scores at
    1/4 (as SegFormer and mmsegmentation exports), ``softmax`` gives probabilities."""

    def __init__(self, classes: int = 5, full: bool = True, softmax: bool = False):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(32, classes, 1)
        self.aux = nn.Conv2d(16, classes, 1)
        self.full, self.softmax = full, softmax

    def forward(self, x):
        size = x.shape[-2:]
        y = F.relu(self.b(F.relu(self.a(x))))
        g = F.interpolate(self.pool(y), size=y.shape[-2:], mode="bilinear", align_corners=False)
        out = self.head(torch.cat([y, g], 1))
        if self.full:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if self.softmax:
            out = out.softmax(1)
        return {"out": out, "aux": self.aux(y)}


def make_net(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return TinySegmenter(**kwargs).eval()


def export_plain(net: nn.Module, path: Path, size=EXPORT_SIZE, dynamo: bool = False) -> Path:
    """What users run: one fixed size, outputs out and aux, opset 17, no dynamic axes."""
    x = torch.randn(1, 3, *size)
    torch.onnx.export(net, (x,), str(path), opset_version=17, input_names=["input"], output_names=["out", "aux"],
                      dynamo=dynamo)
    return path


def frames(size, batch=2, seed=1) -> np.ndarray:
    """Smooth BGR frames (noise upsampled), so that classes form regions as in real images."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    small = rng.integers(0, 256, (batch, max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) for s in small])


def eager_labels(net: nn.Module, bgr: np.ndarray, norm: Normalization, upsample: bool = False) -> np.ndarray:
    x = torch.from_numpy(normalize_pixels(bgr, norm, "BGR"))
    with torch.no_grad():
        out = net(x)["out"]
        if upsample:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out.argmax(1).numpy().astype(np.uint8)


def imported_labels(path: Path, bgr: np.ndarray) -> np.ndarray:
    backend = open_backend(str(path), "cpu")
    try:
        return backend.infer(bgr)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("import")
    net = make_net()
    source = export_plain(net, folder / "tiny.onnx")
    out = folder / "tiny_deploy.onnx"
    result = import_onnx(str(source), str(out), normalization=TORCHVISION_IMAGENET,
                         classes=ClassList(list("abcde"), [(i, 2 * i, 3 * i) for i in range(5)]),
                         input_size=(64, 96))
    return net, source, out, result


@pytest.mark.parametrize("size", [EXPORT_SIZE, (97, 131), (120, 64)])
def test_imported_labels_equal_eager_argmax_at_any_size(tiny, size):
    net, _, out, _ = tiny
    bgr = frames(size)
    labels = imported_labels(out, bgr)
    assert labels.shape == (2, *size) and labels.dtype == np.uint8
    assert len(np.unique(labels)) > 1  # the comparison is not between two constant maps
    assert np.mean(labels == eager_labels(net, bgr, TORCHVISION_IMAGENET)) >= 0.999


def test_imported_graph_is_what_export_writes(tiny):
    _, _, out, result = tiny
    model = onnx.load(str(out))
    graph = model.graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["labels"]
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(graph.input[0]) == ["N", "H", "W", 3] and dims(graph.output[0]) == ["N", "H", "W"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.node[0].op_type == "Cast" and graph.node[-1].op_type == "Cast"
    assert not any("aux" in o for n in graph.node for o in n.output)  # the aux head is gone
    meta = open_backend(str(out), "cpu").metadata
    assert meta.classes == list("abcde") and meta.palette[2] == (2, 4, 6)
    assert meta.normalization == TORCHVISION_IMAGENET and meta.folds_argmax and meta.folds_preprocessing
    assert meta.source["imported"] and meta.source["output_name"] == "out" and meta.source["sha256"]
    assert meta.extra["training_scale"]["reference_size"] == [64, 96]
    assert result.dropped_outputs == ["aux"]
    report = check_onnx(model)
    assert report.ok and report.releases == ("8.5", "8.6", "10", "11"), report.lines()


def test_reduced_resolution_probabilities_in_bgr(tmp_path):
    """Scores at 1/4, softmax probabilities, a BGR model with Caffe-style mean: the import adds
    the exact bilinear upsampling PyTorch's align_corners=False does."""
    net = make_net(full=False, softmax=True)
    source = export_plain(net, tmp_path / "quarter.onnx")
    norm = normalization_from([104.0, 117.0, 123.0], [1.0, 1.0, 1.0], "BGR")
    result = import_onnx(str(source), str(tmp_path / "q.onnx"), normalization=norm)
    assert result.resized == "bilinear" and result.metadata.classes[0] == "class_0"
    for size in ((64, 96), (101, 77)):
        bgr = frames(size)
        labels = imported_labels(tmp_path / "q.onnx", bgr)
        assert np.mean(labels == eager_labels(net, bgr, norm, upsample=True)) >= 0.999
    assert check_onnx(str(tmp_path / "q.onnx")).ok


def test_dynamo_export_opset_18_is_converted_to_17(tmp_path):
    pytest.importorskip("onnxscript", reason="torch.onnx.export's default (dynamo) exporter needs onnxscript")
    net = make_net()
    source = export_plain(net, tmp_path / "dyn.onnx", dynamo=True)
    result = import_onnx(str(source), str(tmp_path / "d.onnx"), normalization=TORCHVISION_IMAGENET)
    assert result.metadata.exporter["opset"] == 17
    bgr = frames((97, 131))
    assert np.mean(imported_labels(tmp_path / "d.onnx", bgr) == eager_labels(net, bgr, TORCHVISION_IMAGENET)) >= 0.999


def test_fp16_and_int8_variants(tiny, tmp_path):
    net, source, _, _ = tiny
    calib = list(frames((64, 96), batch=4, seed=3))
    for precision in ("fp16", "int8"):
        out = tmp_path / f"{precision}.onnx"
        result = import_onnx(str(source), str(out), normalization=TORCHVISION_IMAGENET, precision=precision,
                             calib_frames=calib)
        assert result.metadata.precision == precision and result.tensorrt.ok
        assert result.agreement is not None and result.agreement > 0.9
        bgr = frames((97, 131))
        agreement = np.mean(imported_labels(out, bgr) == eager_labels(net, bgr, TORCHVISION_IMAGENET))
        assert agreement > 0.9, (precision, agreement)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``fcn-deploy ARGS`` in this process (an interpreter start and torch import per call
    would cost more than the work); an uncaught exception fails the test as a traceback would."""
    import contextlib
    import io

    from fcn_deploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


TORCHVISION_NORM = ["--rgb", "--scale", "255", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


def test_cli_import_then_check_compare_and_run(tiny, tmp_path):
    import cv2

    _, source, _, _ = tiny
    out = tmp_path / "cli.onnx"
    done = run_cli("import", str(source), "-o", str(out), *TORCHVISION_NORM, "--classes", "voc", "--output-name", "out")
    assert done.returncode == 1 and "gives 5 class scores but --classes names 21 classes" in done.stderr
    assert len(done.stderr.strip().splitlines()[-1]) < 300 and "Traceback" not in done.stderr
    classes = tmp_path / "classes.txt"
    classes.write_text("# five\nroad 128 64 128\nsky,70,130,180\ncar 0 0 142\nperson 220 20 60\nsign 250 170 30\n")
    done = run_cli("import", str(source), "-o", str(out), *TORCHVISION_NORM, "--classes", str(classes))
    assert done.returncode == 0, done.stderr
    assert "accepted by the ONNX parser of TensorRT 8.5, 8.6, 10, 11" in done.stdout
    check = run_cli("check", str(out))
    assert check.returncode == 0 and "8.5, 8.6, 10, 11" in check.stdout
    compare = run_cli("compare", str(out), "--sizes", "64x96,97x131")  # B: the source ONNX, from the metadata
    assert compare.returncode == 0 and "PASSED (2/2 sizes)" in compare.stdout, compare.stdout + compare.stderr
    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(frames((90, 120), batch=2)):
        cv2.imwrite(str(images / f"{i}.png"), frame)
    masks = tmp_path / "masks"
    done = run_cli("run", "--model", str(out), "--source", str(images), "--labels-dir", str(masks))
    assert done.returncode == 0, done.stderr
    assert len(list(masks.iterdir())) == 2


def test_latency_peer_rows_of_an_imported_file_run_the_onnx_it_came_from(tiny, tmp_path):
    """benchmarks/latency.py on an imported file: our rows run the imported graph, the peer rows
    the source ONNX as its user runs it (fixed to 1x3x64x96: the other size is listed with why)."""
    import json
    import sys

    import cv2

    _, source, out, _ = tiny
    images = tmp_path / "frames"
    images.mkdir()
    for i, frame in enumerate(frames((90, 120), batch=2)):
        cv2.imwrite(str(images / f"{i}.png"), frame)
    report_path = tmp_path / "l.json"
    argv = ["--model", str(out), "--backends", "ort-cpu,peer-ort-cpu", "--precisions", "fp32,int8",
            "--sizes", "64x96,32x48", "--warmup", "0", "--iters", "2", "--no-peak", "--frames", str(images),
            "--workdir", str(tmp_path / "w"), "--json", str(report_path)]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "benchmarks/latency.py", *argv], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    rows = {(r["backend"], r["precision"], r["size"]): r for r in report["records"]}
    assert set(rows) == {("ort-cpu", "fp32", "64x96"), ("ort-cpu", "fp32", "32x48"), ("peer-ort-cpu", "fp32", "64x96")}
    assert "source ONNX as brought to fcn-deploy import" in rows[("peer-ort-cpu", "fp32", "64x96")]["notes"]
    skipped = json.dumps(report["skipped"]) + json.dumps(report.get("failed", "")) + done.stdout
    assert "fixed to 1x3x64x96" in skipped and "fp32 only" in skipped


@pytest.mark.parametrize("kind", ["classifier", "static", "several"])
def test_one_line_errors(tmp_path, capfd, kind):
    if kind == "classifier":
        net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 1000)).eval()
        names, want = ["logits"], "does not look like a segmentation graph: no 4-D score output (outputs: logits 1x1000)"
    elif kind == "static":
        class Flattening(nn.Module):  # a spatial softmax through a Reshape to the export size
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)

            def forward(self, x):
                return self.conv(x).reshape(1, 4, 64 * 96).softmax(-1).reshape(1, 4, 64, 96)

        net, names, want = Flattening().eval(), ["out"], "is fixed to 1x3x64x96 and cannot be made dynamic"
    else:
        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1)

            def forward(self, x):
                return self.a(x), self.b(x)

        net, names, want = TwoHeads().eval(), ["seg", "depth"], "several 4-D outputs"
    source = tmp_path / f"{kind}.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 64, 96),), str(source), opset_version=17, input_names=["image"],
                      output_names=names, dynamo=False)
    capfd.readouterr()
    done = run_cli("import", str(source), "-o", str(tmp_path / "x.onnx"), *TORCHVISION_NORM)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fcn-deploy: error: ") and want in last, last
    native = capfd.readouterr().err  # what C++ wrote to the process's stderr: ONNX Runtime logs there
    assert "onnxruntime" not in native and "[E:" not in native, native
    assert not (tmp_path / "x.onnx").exists()
    if kind == "several":
        done = run_cli("import", str(source), "-o", str(tmp_path / "x.onnx"), *TORCHVISION_NORM, "--output-name", "seg")
        assert done.returncode == 0, done.stderr


def test_options_are_checked_before_anything_runs(tiny, tmp_path):
    _, source, _, _ = tiny
    for args, want in (
        ([], "say how the model expects its input"),
        (["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"], "add --scale 255"),
        (TORCHVISION_NORM + ["--classes", "nope"], "--classes nope: neither voc, cityscapes, camvid nor a file"),
        (TORCHVISION_NORM + ["--weights", "w.pth"], "--weights goes with a torchvision model name"),
    ):
        done = run_cli("import", str(source), "-o", str(tmp_path / "x.onnx"), *args)
        assert done.returncode == 1 and want in done.stderr, (args, done.stderr)
    done = run_cli("import", "fcn_resnet50", "-o", str(tmp_path / "x.onnx"))
    assert done.returncode == 1 and "needs its weights: --weights FILE.pth" in done.stderr


def test_torchvision_name_defaults_to_torchvision_normalisation():
    """A torchvision name with no --mean/--std gets ImageNet's values at --scale 255, not the
    "add --scale 255" error meant for a user's 0..1 values (what a --weights import hit)."""
    import argparse

    from fcn_deploy.commands.import_ import normalization_for
    from fcn_deploy.errors import FcnDeployError

    none = argparse.Namespace(mean=None, std=None, scale=None, channel_order=None)
    assert normalization_for(none, torchvision=True) == TORCHVISION_IMAGENET
    given = argparse.Namespace(mean="0.485,0.456,0.406", std="0.229,0.224,0.225", scale=None, channel_order=None)
    with pytest.raises(FcnDeployError, match="add --scale 255"):
        normalization_for(given, torchvision=True)


def test_read_classes_presets_and_files(tmp_path):
    voc = read_classes("voc")
    assert len(voc.names) == 21 and voc.names[0] == "background" and voc.dataset == "voc"
    assert len(read_classes("camvid").names) == 11 and len(read_classes("cityscapes").names) == 19
    plain = tmp_path / "plain.txt"
    plain.write_text("floor\nwall\n\n# comment\ntraffic light\n")
    assert read_classes(str(plain)) == ClassList(["floor", "wall", "traffic light"], None, None)
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2 300\n")
    with pytest.raises(ImportError_, match="outside 0..255"):
        read_classes(str(bad))


# --------------------------------------------------------------------------------------------
# torchvision's own models (.ci/torchvision-env)
# --------------------------------------------------------------------------------------------
def _torchvision_or_reason():
    try:
        import torchvision  # noqa: F401
        from torchvision.models import segmentation  # noqa: F401
    except Exception as exc:  # PyPI's CUDA-built torchvision beside the CPU torch: RuntimeError
        return f"torchvision does not import here ({type(exc).__name__}: {str(exc).splitlines()[0][:100]}); " \
               ".ci/torchvision-env runs these with torch 2.14.1 + torchvision 0.29.1"
    return None


_REASON = _torchvision_or_reason()
if _REASON and os.environ.get("FCN_REQUIRE_TORCHVISION"):  # .ci/torchvision-env: never a silent skip
    raise RuntimeError(_REASON)
needs_torchvision = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def _torchvision_model(name: str):
    """torchvision's ``name`` with seeded random weights, by the recipe of
    tools/torchvision_parity.py (whose rows docs/import.md quotes): batch-norm statistics are drawn
    too and the classifiers' biases zeroed, since at its initial statistics LR-ASPP labels every
    pixel of a frame with one class, and a parity check between two constant maps proves nothing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    try:
        from torchvision_parity import seeded_model
    finally:
        sys.path.pop(0)
    return seeded_model(name)


def _parity(net, path: Path, size) -> float:
    bgr = frames(size, batch=1, seed=size[0])
    labels = imported_labels(path, bgr)
    x = torch.from_numpy(normalize_pixels(bgr, TORCHVISION_IMAGENET, "BGR"))
    with torch.no_grad():
        ref = net(x)["out"].argmax(1).numpy()
    assert len(np.unique(ref)) > 1
    return float(np.mean(labels == ref))


@pytest.mark.torchvision
@needs_torchvision
def test_torchvision_fcn_resnet50_plain_export_imports_with_parity(tmp_path):
    """The must-show: fcn_resnet50, seeded random weights, a plain torch.onnx.export (its
    default exporter where onnxscript is there, as users run it) at 360x480 with out and aux."""
    net = _torchvision_model("fcn_resnet50")
    dynamo = True
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        dynamo = False
    x = torch.randn(1, 3, 360, 480)
    source = tmp_path / "fcn_resnet50.onnx"
    torch.onnx.export(net, (x,), str(source), opset_version=17, input_names=["input"], output_names=["out", "aux"],
                      dynamo=dynamo)
    out = tmp_path / "fcn_resnet50_deploy.onnx"
    done = run_cli("import", str(source), "-o", str(out), *TORCHVISION_NORM, "--classes", "voc")
    assert done.returncode == 0, done.stderr
    check = run_cli("check", str(out))
    assert check.returncode == 0 and "accepted by the ONNX parser of TensorRT 8.5, 8.6, 10, 11" in check.stdout
    for size in ((360, 480), (720, 1280)):
        assert _parity(net, out, size) >= 0.999, size


@pytest.mark.torchvision
@needs_torchvision
@pytest.mark.parametrize("name", ["fcn_resnet50", "lraspp_mobilenet_v3_large"])
def test_torchvision_name_with_weights_file(tmp_path, name):
    net = _torchvision_model(name)
    weights = tmp_path / f"{name}.pth"
    torch.save({"model": net.state_dict(), "epoch": 3}, weights)  # as torchvision's reference scripts save
    out = tmp_path / f"{name}.onnx"
    done = run_cli("import", name, "--weights", str(weights), "-o", str(out), "--classes", "voc")
    assert done.returncode == 0, done.stderr
    assert "accepted by the ONNX parser of TensorRT 8.5, 8.6, 10, 11" in done.stdout
    meta = open_backend(str(out), "cpu").metadata
    assert meta.source["torchvision"] == name and meta.normalization == TORCHVISION_IMAGENET
    for size in ((360, 480), (720, 1280)):
        assert _parity(net, out, size) >= 0.999, (name, size)


@pytest.mark.torchvision
@needs_torchvision
def test_torchvision_lraspp_plain_export(tmp_path):
    """A non-FCN net exported at one size: LR-ASPP's pooled branch is interpolated to the
    stride-8 features' size, a second Resize the import makes follow the input."""
    net = _torchvision_model("lraspp_mobilenet_v3_large")
    source = tmp_path / "lraspp.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 360, 480),), str(source), opset_version=17, input_names=["input"],
                      output_names=["out"], dynamo=False)
    out = tmp_path / "lraspp_deploy.onnx"
    result = import_onnx(str(source), str(out), normalization=TORCHVISION_IMAGENET, classes=read_classes("voc"))
    assert result.tensorrt.ok
    for size in ((360, 480), (720, 1280)):
        assert _parity(net, out, size) >= 0.999, size
