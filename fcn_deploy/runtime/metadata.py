"""What an exported model says about itself: the ``metadata_props`` of a fcn-deploy ONNX file.

One definition serves both sides: the exporter (``converters``) writes
:meth:`ModelMetadata.to_props` into the ONNX file, and the runtime reads it back with
:meth:`ModelMetadata.from_props` from ONNX Runtime's ``custom_metadata_map`` (or from a
TensorRT engine's sidecar JSON through :meth:`ModelMetadata.from_dict`). Every value in
``metadata_props`` is JSON, so lists, numbers and nested objects survive the round trip.

Torch-free and onnx-free: a Jetson with only TensorRT, or a CPU box with only ONNX Runtime,
reads it.

The two facts the runtime cannot do without are how to feed the graph and what comes back:

``input_layout``
    ``"NHWC_BGR_UINT8"``: the graph takes raw camera frames (``N x H x W x 3`` uint8, BGR) and
    does the casting, channel reordering, mean/std and transpose itself (the deployment
    default). ``"NCHW_FLOAT32"``: the graph takes ``N x 3 x H x W`` float32 already normalised
    as ``normalization`` says (the plain network, for parity work and foreign tools).
``output``
    ``"labels"``: ``N x H x W`` uint8 class indices (the arg-max folded into the graph).
    ``"logits"``: ``N x C x H x W`` float32 class scores.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import FcnDeployError
from ..normalization import Normalization
from ..palette import voc_colormap

FORMAT = "fcn-deploy"
FORMAT_VERSION = 1

LAYOUT_RAW_BGR = "NHWC_BGR_UINT8"
LAYOUT_NORMALIZED = "NCHW_FLOAT32"
INPUT_LAYOUTS = (LAYOUT_RAW_BGR, LAYOUT_NORMALIZED)
OUTPUT_LABELS = "labels"
OUTPUT_LOGITS = "logits"
OUTPUT_KINDS = (OUTPUT_LABELS, OUTPUT_LOGITS)
PRECISIONS = ("fp32", "fp16", "int8")
# The Q/DQ scheme of an INT8 graph (``extra["calibration"]["scheme"]``): ``s8s8``, symmetric,
# which TensorRT builds (and a file from before schemes were recorded is); ``u8s8``, uint8
# activations for ONNX Runtime on CPUs, which TensorRT refuses.
INT8_SCHEMES = ("s8s8", "u8s8")
# How the graph writes its learned upsamplers (``extra["upsampling"]``).
UPSAMPLING_FORMS = ("subpixel", "deconv")

RGB = Tuple[int, int, int]


def default_palette(num_classes: int) -> List[RGB]:
    """The VOC colour map, for a model that carries no palette of its own (an untrained export)."""
    return voc_colormap(num_classes)


@dataclass
class ModelMetadata:
    """The fcn-deploy metadata of one exported model (see the module docstring).

    ``palette`` is RGB, one triple per class. ``mean_iu`` is a fraction in [0, 1] measured on
    ``dataset`` by training, or ``None`` for an untrained export. ``source`` records where
    the weights came from (``checkpoint`` path, its ``sha256``, ``model_options``) so that
    ``fcn-deploy compare`` can rebuild the PyTorch model; ``exporter`` the tool versions;
    ``extra`` anything a later step adds (quantisation report, TensorRT build facts), and
    ``extra["training_scale"]``: the dataset frames' size, the training crop, the random-scale
    range and the reference size derived from them, from which the runtime chooses the input
    size of each frame (:mod:`fcn_deploy.runtime.input_size`).
    """

    model_name: str
    num_classes: int
    classes: List[str]
    palette: List[RGB]
    normalization: Normalization
    input_layout: str = LAYOUT_RAW_BGR
    output: str = OUTPUT_LABELS
    precision: str = "fp32"
    dataset: Optional[str] = None
    mean_iu: Optional[float] = None
    source: Dict[str, Any] = field(default_factory=dict)
    exporter: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_layout not in INPUT_LAYOUTS:
            raise FcnDeployError(f"unknown input_layout {self.input_layout!r}; expected one of {INPUT_LAYOUTS}")
        if self.output not in OUTPUT_KINDS:
            raise FcnDeployError(f"unknown output kind {self.output!r}; expected one of {OUTPUT_KINDS}")
        if self.precision not in PRECISIONS:
            raise FcnDeployError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        if len(self.classes) != self.num_classes or len(self.palette) != self.num_classes:
            raise FcnDeployError(
                f"metadata of {self.model_name}: {self.num_classes} classes but "
                f"{len(self.classes)} names and {len(self.palette)} palette colours"
            )
        self.palette = [tuple(int(v) for v in colour) for colour in self.palette]
        self.classes = [str(c) for c in self.classes]

    @property
    def folds_preprocessing(self) -> bool:
        return self.input_layout == LAYOUT_RAW_BGR

    @property
    def folds_argmax(self) -> bool:
        return self.output == OUTPUT_LABELS

    @property
    def int8_scheme(self) -> Optional[str]:
        """The INT8 graph's Q/DQ scheme (see :data:`INT8_SCHEMES`); ``None`` for FP32/FP16."""
        if self.precision != "int8":
            return None
        return (self.extra.get("calibration") or {}).get("scheme", "s8s8")

    # -- plain dict (the sidecar JSON of a TensorRT engine) ------------------------------
    def to_dict(self) -> Dict[str, Any]:
        d = {"format": FORMAT, "format_version": FORMAT_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Normalization):
                value = asdict(value)
            elif f.name == "palette":
                value = [list(c) for c in value]
            d[f.name] = value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "model") -> "ModelMetadata":
        if d.get("format") != FORMAT:
            raise FcnDeployError(f"{where} carries no fcn-deploy metadata (format={d.get('format')!r})")
        version = d.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise FcnDeployError(
                f"{where} has fcn-deploy metadata version {version!r}; this fcn-deploy reads "
                f"up to {FORMAT_VERSION}: upgrade fcn-deploy"
            )
        try:
            norm = d["normalization"]
            kwargs = {f.name: d[f.name] for f in fields(cls) if f.name in d}
            kwargs["normalization"] = Normalization(norm["channel_order"], tuple(norm["mean"]), tuple(norm["std"]))
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise FcnDeployError(f"{where} has malformed fcn-deploy metadata: {type(exc).__name__}: {exc}") from None

    # -- ONNX metadata_props: every value a JSON document --------------------------------
    def to_props(self) -> Dict[str, str]:
        return {key: json.dumps(value, sort_keys=True) for key, value in self.to_dict().items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str = "model") -> "ModelMetadata":
        decoded: Dict[str, Any] = {}
        for key, text in props.items():
            try:
                decoded[key] = json.loads(text)
            except ValueError:
                decoded[key] = text  # a foreign plain-string prop; ignored unless it is one of ours
        return cls.from_dict(decoded, where)


def has_fcn_deploy_metadata(props: Mapping[str, str]) -> bool:
    """True when ``props`` (an ONNX ``metadata_props`` map) were written by fcn-deploy."""
    return props.get("format") == json.dumps(FORMAT)


def class_names(num_classes: int, names: Optional[Sequence[str]] = None) -> List[str]:
    """``names`` as a list, or ``class_0 ... class_{C-1}`` for a model without class names."""
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    return [f"class_{i}" for i in range(num_classes)]
