"""Bring your own segmentation ONNX: the graph our exporter writes, made from someone else's.

Users arrive with an ONNX file only (torchvision's FCN or DeepLabV3 exported by a plain
``torch.onnx.export``, an mmsegmentation or SegFormer export): an ``N x 3 x H x W`` float image
in, ``N x C x h x w`` class scores (logits or probabilities, at the input's resolution or a
fraction of it) out. The surgery is done in ONNX, on that graph, never through PyTorch:

1. :func:`.import_source.read_source`: the one image input (4-D, 3 channels, float32) and the
   score output (``output_name``; else torchvision's ``out``; else the only 4-D output). A graph
   with no 4-D output is not a segmentation graph (a classifier's ``N x 1000``): one line says so.
2. :func:`.import_dynamic.make_dynamic`: batch, height and width become dynamic, the other
   outputs go, and each Resize that a plain ``torch.onnx.export`` baked to the export size reads
   its size at run time.
3. :func:`.import_dynamic.probe`: ONNX Runtime runs the graph at two sizes of different aspect
   ratio and the scores must follow the input; otherwise one line says the graph is fixed.
4. :func:`deployment_graph`: uint8 ``N x H x W x 3`` BGR frames in, through Cast, Transpose,
   channel swap, Sub mean and Div std (the nodes and order of
   :class:`fcn_deploy.converters.deploy_graph.DeployGraph`, so the FP16 converter keeps them in
   float32 the same way); scores smaller than the frame are resized to exactly the frame's
   height and width (``linear`` with ``pytorch_half_pixel``, which is PyTorch's
   ``align_corners=False`` bilinear, or ``nearest``); then ArgMax, Cast to float, Cast to uint8
   (TensorRT casts to uint8 only from float), as our own exports end.
5. :func:`fcn_deploy.converters.onnx_export.finalize`: the checks, metadata and smoke test every
   exported graph passes; :func:`import_onnx` adds the FP16/INT8 variants and the TensorRT parser
   check, exactly as ``fcn-deploy export`` does.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import fcn_deploy
from fcn_deploy.fileio import sha256_file
from fcn_deploy.normalization import Normalization
from fcn_deploy.runtime.input_size import training_scale_facts
from fcn_deploy.runtime.metadata import LAYOUT_RAW_BGR, OUTPUT_LABELS, ModelMetadata

from . import onnx_passes
from .import_dynamic import make_dynamic, probe
from .import_source import ImportError_, SourceGraph, load_source, read_source

__all__ = ["ClassList", "ImportError_", "ImportResult", "deployment_graph", "import_onnx", "load_source",
           "normalization_from", "read_classes", "read_source"]

log = logging.getLogger(__name__)

INPUT_NAME = "input"  # as onnx_export.INPUT_NAME (not imported: that module needs torch)
IMAGE = "fcn_deploy_image"  # the source graph's own input, once it is an inner tensor
SCORES = "fcn_deploy_scores"
RESIZE_MODES = ("bilinear", "nearest")


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` wherever the top-level graph writes or reads it."""
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def deployment_graph(model: onnx.ModelProto, source: SourceGraph, normalization: Normalization,
                     resize: Optional[str]) -> onnx.ModelProto:
    """Wrap the dynamic graph: uint8 BGR frames in, labels out (see the module docstring).

    ``resize``: ``bilinear`` or ``nearest`` to bring the scores to the frame's size, ``None``
    when they already are at it.
    """
    order = normalization.channel_order.upper()
    if order not in ("RGB", "BGR"):
        raise ImportError_(f"unknown channel order {normalization.channel_order!r}; expected RGB or BGR")
    model = copy.deepcopy(model)
    graph = model.graph
    rename_tensor(graph, source.input_name, IMAGE)
    rename_tensor(graph, source.output_name, SCORES)
    for value in list(graph.input):
        if value.name == IMAGE:
            graph.input.remove(value)
    del graph.output[:]
    pre = "fcn_deploy_pre"
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray(normalization.mean, dtype=np.float32).reshape(1, 3, 1, 1), f"{pre}_mean"),
        numpy_helper.from_array(np.asarray(normalization.std, dtype=np.float32).reshape(1, 3, 1, 1), f"{pre}_std"),
    ])
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], [f"{pre}_float"], to=TensorProto.FLOAT, name=f"{pre}/Cast"),
        helper.make_node("Transpose", [f"{pre}_float"], [f"{pre}_nchw"], perm=[0, 3, 1, 2], name=f"{pre}/Transpose"),
    ]
    current = f"{pre}_nchw"
    if order == "RGB":
        graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), f"{pre}_rgb"))
        nodes.append(helper.make_node("Gather", [current, f"{pre}_rgb"], [f"{pre}_swapped"], axis=1,
                                      name=f"{pre}/Gather"))
        current = f"{pre}_swapped"
    nodes += [
        helper.make_node("Sub", [current, f"{pre}_mean"], [f"{pre}_centered"], name=f"{pre}/Sub"),
        helper.make_node("Div", [f"{pre}_centered", f"{pre}_std"], [IMAGE], name=f"{pre}/Div"),
    ]
    post, scores = "fcn_deploy_post", SCORES
    tail: List[onnx.NodeProto] = []
    if resize:
        graph.initializer.extend([
            numpy_helper.from_array(np.array([0], dtype=np.int64), f"{post}_0"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), f"{post}_2"),
            numpy_helper.from_array(np.array([4], dtype=np.int64), f"{post}_4"),
        ])
        linear = resize == "bilinear"
        tail += [
            helper.make_node("Shape", [SCORES], [f"{post}_scores_shape"], name=f"{post}/Shape"),
            helper.make_node("Slice", [f"{post}_scores_shape", f"{post}_0", f"{post}_2"], [f"{post}_nc"],
                             name=f"{post}/Slice"),
            helper.make_node("Shape", [IMAGE], [f"{post}_image_shape"], name=f"{post}/Shape_1"),
            helper.make_node("Slice", [f"{post}_image_shape", f"{post}_2", f"{post}_4"], [f"{post}_hw"],
                             name=f"{post}/Slice_1"),
            helper.make_node("Concat", [f"{post}_nc", f"{post}_hw"], [f"{post}_sizes"], axis=0, name=f"{post}/Concat"),
            helper.make_node(
                "Resize", [SCORES, "", "", f"{post}_sizes"], [f"{post}_upsampled"], name=f"{post}/Resize",
                mode="linear" if linear else "nearest",
                coordinate_transformation_mode="pytorch_half_pixel" if linear else "asymmetric",
                **({} if linear else {"nearest_mode": "floor"}),
            ),
        ]
        scores = f"{post}_upsampled"
    tail += [
        helper.make_node("ArgMax", [scores], [f"{post}_index"], axis=1, keepdims=0, name=f"{post}/ArgMax"),
        # Through float: TensorRT casts to uint8 only from float32/float16.
        helper.make_node("Cast", [f"{post}_index"], [f"{post}_index_f"], to=TensorProto.FLOAT, name=f"{post}/Cast"),
        helper.make_node("Cast", [f"{post}_index_f"], [OUTPUT_LABELS], to=TensorProto.UINT8, name=f"{post}/Cast_1"),
    ]
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body + tail)
    graph.input.insert(0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", "H", "W", 3]))
    graph.output.append(helper.make_tensor_value_info(OUTPUT_LABELS, TensorProto.UINT8, ["N", "H", "W"]))
    del graph.value_info[:]
    return model


# --------------------------------------------------------------------------------------------
# Classes, normalisation and the whole import
# --------------------------------------------------------------------------------------------
CLASS_PRESETS = ("voc", "cityscapes", "camvid")


@dataclass
class ClassList:
    """Class names, their colours (``None``: the default palette) and the dataset they name."""

    names: List[str]
    palette: Optional[List[Tuple[int, int, int]]] = None
    dataset: Optional[str] = None


def read_classes(spec: str) -> ClassList:
    """``voc``, ``cityscapes``, ``camvid`` (the datasets' own lists and colours), or a text file:
    one class a line, ``NAME`` or ``NAME R G B`` (commas allowed), ``#`` comments; colours for
    all classes or none."""
    key = spec.lower()
    if key == "voc":
        from fcn_deploy.data.voc import VOC_CLASSES, VOC_PALETTE

        return ClassList(list(VOC_CLASSES), [tuple(c) for c in VOC_PALETTE], "voc")
    if key == "cityscapes":
        from fcn_deploy.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

        return ClassList(list(CITYSCAPES_CLASSES), [tuple(c) for c in CITYSCAPES_PALETTE], "cityscapes")
    if key == "camvid":
        from fcn_deploy.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE

        return ClassList(list(CAMVID_CLASSES), [tuple(c) for c in CAMVID_PALETTE], "camvid")
    if not os.path.isfile(spec):
        raise ImportError_(f"--classes {spec}: neither {', '.join(CLASS_PRESETS)} nor a file")
    try:
        with open(spec, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"--classes {spec}: cannot read it: {exc}") from None
    names: List[str] = []
    colours: List[Optional[Tuple[int, int, int]]] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
            rgb = tuple(int(p) for p in parts[-3:])
            if any(v > 255 for v in rgb):
                raise ImportError_(f"--classes {spec} line {number}: colour {rgb} is outside 0..255")
            names.append(" ".join(parts[:-3]))
            colours.append(rgb)  # type: ignore[arg-type]
        else:
            names.append(" ".join(parts))
            colours.append(None)
    if not names:
        raise ImportError_(f"--classes {spec}: no class names in it (one a line: NAME or NAME R G B)")
    given = [c for c in colours if c is not None]
    if given and len(given) != len(names):
        raise ImportError_(f"--classes {spec}: {len(given)} of {len(names)} classes have a colour; give all or none")
    return ClassList(names, given or None, None)  # type: ignore[arg-type]


def normalization_from(mean: Sequence[float], std: Sequence[float], channel_order: str = "RGB",
                       scale: float = 1.0) -> Normalization:
    """``x = (pixel / scale - mean) / std`` (channels in ``channel_order``) as a
    :class:`Normalization`, whose mean and std are in 0..255 pixel units."""
    if len(mean) != 3 or len(std) != 3:
        raise ImportError_(f"--mean and --std take three values each (one per channel), not {len(mean)} and {len(std)}")
    if not scale > 0:
        raise ImportError_(f"--scale must be positive, not {scale}")
    if any(not s > 0 for s in std):
        raise ImportError_(f"--std values must be positive, not {list(std)}")
    return Normalization(channel_order.upper(), tuple(float(m) * scale for m in mean),
                         tuple(float(s) * scale for s in std))


def _class_count_error(name: str, output: str, scores: int, named: int) -> ImportError_:
    return ImportError_(f"{name}: output {output} gives {scores} class scores but --classes names {named} classes")


@dataclass
class ImportResult:
    path: str
    metadata: ModelMetadata
    seconds: float
    num_classes: int
    resized: Optional[str]  # the upsampling added, or None when the scores are at the frame's size
    score_size: str  # e.g. "45x60 scores for a 360x480 input"
    agreement: Optional[float] = None
    calibration_images: int = 0
    ir_version: int = 0
    tensorrt: Any = None  # fcn-deploy check's CheckReport; None for a CPU-only (u8s8) graph
    dropped_outputs: List[str] = field(default_factory=list)


def import_onnx(
    source_path: str,
    output: str,
    *,
    normalization: Normalization,
    classes: Optional[ClassList] = None,
    output_name: Optional[str] = None,
    input_size: Optional[Tuple[int, int]] = None,
    resize: str = "bilinear",
    model_name: Optional[str] = None,
    source_facts: Optional[Dict[str, Any]] = None,
    precision: str = "fp32",
    keep_fp32: Sequence[str] = (),
    calib_frames: Optional[Sequence[np.ndarray]] = None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    int8_scheme: str = "s8s8",
    model: Optional[onnx.ModelProto] = None,
) -> ImportResult:
    """Import the segmentation ONNX at ``source_path`` into a deployable fcn-deploy ONNX ``output``.

    ``normalization``: what the source graph expects of its input. ``classes``: the class names
    (and colours), whose count must be the scores' channel count. ``output_name``: the score
    output (see :func:`read_source`). ``input_size``: the (H, W) the model was trained or
    validated at, recorded as its training scale. ``resize``: ``bilinear`` or ``nearest``,
    used when the scores are smaller than the input. ``model``: the source already loaded
    (``source_path`` then only names it). ``source_facts`` go into the metadata's ``source``.
    Precision options as :func:`fcn_deploy.converters.onnx_export.export`. ``output`` is
    written atomically once every check has passed.
    """
    from .onnx_export import check_export_options, finalize, precision_variant, tool_versions
    from .tensorrt_check import check_onnx
    from fcn_deploy.runtime.tensorrt_compat import tensorrt_int8_problem
    from fcn_deploy.runtime.metadata import class_names, default_palette

    if resize not in RESIZE_MODES:
        raise ImportError_(f"--resize {resize}: choose from {', '.join(RESIZE_MODES)}")
    if not str(output).lower().endswith(".onnx"):
        raise ImportError_(f"output {output} must end in .onnx (the runtime picks the backend by suffix)")
    start = time.perf_counter()
    name = os.path.basename(source_path)
    source = read_source(model if model is not None else load_source(source_path), source_path, output_name)
    check_export_options(precision, calibration=bool(calib_frames), keep_fp32=keep_fp32, int8_scheme=int8_scheme,
                         opset=source.opset)
    declared = source.output_dims[1]
    if classes is not None and isinstance(declared, int) and len(classes.names) != declared:
        # Before the probe: the graph says its class count, no need to run it (seconds on a ResNet).
        raise _class_count_error(name, source.output_name, declared, len(classes.names))
    dynamic = make_dynamic(source)
    found = probe(dynamic, source)
    n = found.num_classes
    if classes is not None and len(classes.names) != n:
        raise _class_count_error(name, source.output_name, n, len(classes.names))
    if n > 256:
        raise ImportError_(f"{name}: {n} classes do not fit uint8 labels")
    resized = None if found.full_resolution else resize
    deploy = deployment_graph(dynamic, source, normalization, resized)
    facts = training_scale_facts(classes.dataset if classes else None,
                                 {"val_size": list(input_size)} if input_size else None)
    meta32 = ModelMetadata(
        model_name=model_name or os.path.splitext(name)[0],
        num_classes=n,
        classes=class_names(n, classes.names if classes else None),
        palette=classes.palette if classes and classes.palette else default_palette(n),
        normalization=normalization,
        input_layout=LAYOUT_RAW_BGR,
        output=OUTPUT_LABELS,
        precision="fp32",
        dataset=classes.dataset if classes else None,
        mean_iu=None,
        source={
            "imported": True,
            "onnx": os.path.abspath(source_path) if model is None else None,
            "sha256": sha256_file(source_path) if model is None else None,
            "output_name": source.output_name,
            "input_name": source.input_name,
            "input_dims": [d if isinstance(d, int) else str(d) for d in source.input_dims],
            "trained": True,
            **(source_facts or {}),
        },
        exporter={**tool_versions("onnxruntime"), "opset": source.opset, "importer": f"fcn-deploy {fcn_deploy.__version__}"},
        extra={
            "imported": {"scores": found.stride_text(), "resize": resized,
                         "dropped_outputs": source.other_outputs},
            "training_scale": facts,
        },
    )
    fp32 = finalize(deploy, meta32)
    result, meta, agreement = precision_variant(fp32, meta32, precision, keep_fp32=keep_fp32,
                                                calib_frames=calib_frames, progress=progress,
                                                int8_scheme=int8_scheme)
    tensorrt = None
    if tensorrt_int8_problem(meta.int8_scheme, output) is None:
        tensorrt = check_onnx(result, label=os.path.basename(str(output)))
    path = onnx_passes.save_atomic(result, output)
    return ImportResult(
        path=path, metadata=meta, seconds=time.perf_counter() - start, num_classes=n, resized=resized,
        score_size=found.stride_text(), agreement=agreement, calibration_images=len(calib_frames or ()),
        ir_version=result.ir_version, tensorrt=tensorrt, dropped_outputs=source.other_outputs,
    )
