"""What DeepStream's ``nvinfer`` needs to run an exported FCN as a semantic-segmentation model.

nvinfer does its own pre-processing (scaling to the network size, colour conversion,
``y = net-scale-factor * (x - offsets[c])``) and, for ``network-type=2`` (segmentation), its
own arg-max over a float ``N x C x H x W`` output, so our deployment graph (uint8 BGR frames in,
uint8 labels out) cannot be fed to it. The input is the exporter's plain variant instead
(``--logits``: float NCHW normalised input, per-class scores out), and here:

* a Softmax over the classes is appended (output ``scores``): the per-class scores become
  probabilities, so ``segmentation-threshold`` (the minimum winning score; below it a pixel is
  left unlabelled) means the same on every model. The arg-max is unchanged;
* nvinfer has one scale factor for all channels. With one standard deviation for all
  channels (the bundled model's ``(x - 127) / 128``) it is ``net-scale-factor = 1/std``; with a
  standard deviation per channel (torchvision's ImageNet weights), ``net-scale-factor = 1`` and
  a per-channel ``Mul`` by ``1/std`` is put in front of the graph, so the arithmetic stays exact.
  The file's metadata records the normalisation the graph now expects, so fcn-deploy's own
  backends still run it correctly;
* ``config_infer_primary_fcn.txt`` (nvinfer's key file), ``labels.txt`` and a deepstream-app
  config with ``[segvisual]`` are written next to it.

Frames keep their aspect ratio, as in fcn-deploy's own runtime: the network size
(``infer-dims``) is the runtime's input-size rule applied to the camera's size (the streammux
runs at the camera's size, ``--deepstream-source-size``, default 1920x1080): the short side
goes to the model's training short side (a 16:9 camera and the bundled CamVid model: 360x640),
and nvinfer scales with ``maintain-aspect-ratio=1`` and ``symmetric-padding=1``, so a frame
whose aspect ratio differs from the network's is padded on both sides, never squashed.
:func:`letterbox` is that scaling in numpy, for measuring what it does to accuracy.

The keys are those of NVIDIA's ``gstnvinfer_property_parser.h``; the tests check them against
that list.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.fileio import atomic_write
from fcn_deploy.normalization import Normalization
from fcn_deploy.runtime.input_size import rule_size, training_scale
from fcn_deploy.runtime.metadata import LAYOUT_NORMALIZED, OUTPUT_LOGITS, ModelMetadata

ONNX_FILE = "fcn_scores.onnx"
INFER_CONFIG = "config_infer_primary_fcn.txt"
APP_CONFIG = "deepstream_app_fcn.txt"
LABELS = "labels.txt"
SCORES = "scores"
# metadata precision -> nvinfer network-mode (0 FP32, 1 INT8, 2 FP16) and its engine-name suffix
NETWORK_MODES = {"fp32": (0, "fp32"), "fp16": (2, "fp16")}
COLOR_FORMATS = {"RGB": 0, "BGR": 1}
DEFAULT_SOURCE_SIZE = (1080, 1920)  # (H, W) of the streammux: a 1080p camera
# nvinfer's scaling-filter values (NvBufSurfTransform_Inter): 1 is bilinear, as fcn-deploy enlarges.
SCALING_FILTER_BILINEAR = 1


@dataclass
class DeepStreamFiles:
    folder: str
    onnx_path: str
    infer_config: str
    app_config: str
    labels: str
    keys: Dict[str, str]


def scale_and_offsets(norm: Normalization) -> Tuple[float, List[float], Optional[List[float]]]:
    """nvinfer's ``net-scale-factor`` and ``offsets`` for ``norm``, and the per-channel factors
    the graph must apply itself (``None`` when one scale factor is exact)."""
    stds = [float(s) for s in norm.std]
    if max(stds) - min(stds) <= 1e-9 * max(stds):
        return 1.0 / stds[0], [float(m) for m in norm.mean], None
    return 1.0, [float(m) for m in norm.mean], [1.0 / s for s in stds]


def scores_graph(model: onnx.ModelProto, meta: ModelMetadata) -> Tuple[onnx.ModelProto, ModelMetadata]:
    """The logits graph with Softmax scores (and the per-channel scaling nvinfer cannot do)."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise FcnDeployError("the DeepStream variant needs a graph with one input and one output")
    _, _, per_channel = scale_and_offsets(meta.normalization)
    norm = meta.normalization
    if per_channel is not None:
        inp = graph.input[0].name
        scaled = inp + "_scaled"
        for node in graph.node:
            node.input[:] = [scaled if name == inp else name for name in node.input]
        factors = numpy_helper.from_array(np.asarray(per_channel, np.float32).reshape(1, 3, 1, 1), "nvinfer_channel_scale")
        graph.initializer.append(factors)
        graph.node.insert(0, helper.make_node("Mul", [inp, factors.name], [scaled], name="nvinfer_channel_scale"))
        norm = Normalization(norm.channel_order, tuple(norm.mean), (1.0, 1.0, 1.0))
    out = graph.output[0]
    logits = out.name
    for node in graph.node:
        node.output[:] = [logits + "_raw" if name == logits else name for name in node.output]
    graph.node.append(helper.make_node("Softmax", [logits + "_raw"], [SCORES], axis=1, name="class_scores"))
    out.name = SCORES
    extra = dict(meta.extra)
    extra["deepstream"] = {"scores": "softmax over classes", "channel_scale_in_graph": per_channel is not None}
    new_meta = ModelMetadata(**{**{f: getattr(meta, f) for f in meta.__dataclass_fields__},
                                "normalization": norm, "extra": extra})
    del model.metadata_props[:]
    for key, value in new_meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model, new_meta


def infer_keys(meta: ModelMetadata, onnx_name: str, size: Tuple[int, int], batch_size: int = 1,
               threshold: float = 0.0) -> Dict[str, str]:
    """The ``[property]`` keys of nvinfer's config, in the order they are written."""
    scale, offsets, _ = scale_and_offsets(meta.normalization)
    mode, mode_name = NETWORK_MODES[meta.precision]
    order = meta.normalization.channel_order.upper()
    h, w = size
    return {
        "gpu-id": "0",
        "gie-unique-id": "1",
        "process-mode": "1",
        "network-type": "2",
        "onnx-file": onnx_name,
        "model-engine-file": f"{onnx_name}_b{batch_size}_gpu0_{mode_name}.engine",
        "labelfile-path": LABELS,
        "batch-size": str(batch_size),
        "network-mode": str(mode),
        "infer-dims": f"3;{h};{w}",
        "model-color-format": str(COLOR_FORMATS[order]),
        "net-scale-factor": repr(float(scale)),
        "offsets": ";".join(repr(float(o)) for o in offsets),
        "num-detected-classes": str(meta.num_classes),
        "output-blob-names": SCORES,
        "segmentation-threshold": repr(float(threshold)),
        "segmentation-output-order": "0",
        "maintain-aspect-ratio": "1",
        "symmetric-padding": "1",
        "scaling-filter": str(SCALING_FILTER_BILINEAR),
        "output-tensor-meta": "0",
    }


def infer_config_text(meta: ModelMetadata, keys: Dict[str, str]) -> str:
    lines = [
        f"# nvinfer config for {meta.model_name} ({meta.precision}), written by fcn-deploy export --deepstream.",
        "# Semantic segmentation: network-type=2; nvinfer scales frames to infer-dims, computes",
        "# net-scale-factor * (pixel - offsets) per channel, and takes the arg-max of the scores.",
        "# The engine is built on first use and cached as model-engine-file, next to this file.",
        "[property]",
    ]
    lines += [f"{k}={v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def app_config_text(size: Tuple[int, int], source_size: Tuple[int, int] = DEFAULT_SOURCE_SIZE,
                    source: str = "file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.mp4") -> str:
    """deepstream-app: one source, a streammux at the camera's size (so nvinfer sees whole
    frames and keeps their aspect ratio), nvinfer with our config, nvsegvisual drawing the
    classes at the network's size, a display."""
    h, w = size
    source_h, source_w = source_size
    return f"""# deepstream-app -c {APP_CONFIG}   (written by fcn-deploy export --deepstream)
[application]
enable-perf-measurement=1
perf-measurement-interval-sec=5

[tiled-display]
enable=1
rows=1
columns=1
width={source_w}
height={source_h}

[source0]
enable=1
# 3 = URI (file://, rtsp://); for a CSI camera on a Jetson use type=5 and camera-csi-sensor-id=0
type=3
uri={source}
num-sources=1

[streammux]
# the camera's own size: nvinfer scales each frame to infer-dims keeping its aspect ratio
batch-size=1
width={source_w}
height={source_h}
batched-push-timeout=40000
live-source=0

[primary-gie]
enable=1
gie-unique-id=1
batch-size=1
config-file={INFER_CONFIG}

[segvisual]
enable=1
width={w}
height={h}

[osd]
enable=0

[sink0]
enable=1
# 2 = EGL window on the Jetson's display; 1 = fakesink (no display)
type=2
sync=0
"""


def network_size(meta: ModelMetadata, source_size: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """nvinfer's ``infer-dims`` (H, W) for a camera of ``source_size`` (H, W): the runtime's rule
    (short side to the model's training short side, aspect ratio kept), or None where the model
    records no training scale."""
    reference = training_scale(meta).reference_size
    return rule_size(source_size, reference) if reference is not None else None


def letterbox(image: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """``image`` scaled into ``size`` (H, W) as nvinfer does with ``maintain-aspect-ratio=1`` and
    ``symmetric-padding=1``: the largest size that fits with the aspect ratio kept, bilinear,
    centred, the rest black. Returns the network input and the content box (top, left,
    height, width), where the labels are read back from."""
    import cv2

    h, w = image.shape[:2]
    factor = min(size[0] / h, size[1] / w)
    ch, cw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    top, left = (size[0] - ch) // 2, (size[1] - cw) // 2
    out = np.zeros((size[0], size[1]) + image.shape[2:], dtype=image.dtype)
    out[top:top + ch, left:left + cw] = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR)
    return out, (top, left, ch, cw)


def write_deepstream(logits_onnx: str, folder: str, *, size: Optional[Tuple[int, int]] = None,
                     source_size: Tuple[int, int] = DEFAULT_SOURCE_SIZE, threshold: float = 0.0,
                     overwrite: bool = False) -> DeepStreamFiles:
    """The DeepStream files in ``folder`` from an exported logits graph (``export --logits``).

    ``source_size`` (H, W) is the camera's, the streammux's size. ``size`` (H, W) is nvinfer's
    ``infer-dims``: by default the runtime's input-size rule for that camera (for the bundled
    model and a 1080p camera, 360x640). Existing files are replaced only with ``overwrite``.
    """
    from fcn_deploy.runtime.model_files import read_metadata

    meta = read_metadata(logits_onnx)
    if meta.input_layout != LAYOUT_NORMALIZED or meta.output != OUTPUT_LOGITS:
        raise FcnDeployError(f"{logits_onnx} takes {meta.input_layout} and gives {meta.output}; DeepStream needs the "
                             "float NCHW -> scores variant (fcn-deploy export --logits)")
    if meta.precision not in NETWORK_MODES:
        raise FcnDeployError(f"a {meta.precision} graph for DeepStream needs nvinfer's own INT8 calibration; "
                             "export fp32 or --fp16")
    if size is None:
        size = network_size(meta, source_size)
        if size is None:
            raise FcnDeployError(f"{meta.model_name} records no training scale; give the network input size (HxW)")
    names = {name: os.path.join(folder, name) for name in (ONNX_FILE, INFER_CONFIG, APP_CONFIG, LABELS)}
    existing = [p for p in names.values() if os.path.exists(p)]
    if existing and not overwrite:
        raise FcnDeployError(f"{existing[0]} exists; pass --overwrite to replace the DeepStream files")
    model, new_meta = scores_graph(onnx.load(logits_onnx), meta)
    os.makedirs(folder, exist_ok=True)
    from .onnx_passes import save_atomic

    save_atomic(model, names[ONNX_FILE])
    keys = infer_keys(new_meta, ONNX_FILE, tuple(size), threshold=threshold)
    atomic_write(names[INFER_CONFIG], infer_config_text(new_meta, keys))
    atomic_write(names[LABELS], "".join(f"{c}\n" for c in new_meta.classes))
    atomic_write(names[APP_CONFIG], app_config_text(tuple(size), tuple(source_size)))
    return DeepStreamFiles(folder, names[ONNX_FILE], names[INFER_CONFIG], names[APP_CONFIG], names[LABELS], keys)
