"""The model under test, in every form a backend runs: a PyTorch module, cached ONNX variants.

The benchmarks compare *the same work*: for each size every backend runs the same graph.
By default that is the deployment graph, which takes raw ``N x H x W x 3`` uint8 BGR frames
and returns ``N x H x W`` uint8 labels, with the pre-processing (cast, channel order,
mean/std, transpose) and the arg-max inside it. ONNX Runtime and TensorRT run the exported
graph; PyTorch runs the exporter's own :class:`~converters.deploy_graph.DeployGraph` around
the same network with the same grouped upsampling, so nothing is left out on one side.
``graph="logits"`` times the plain network instead (normalised float input, logits out) on
every backend, with the host-side normalisation outside the timed region.

Exports are cached in a work directory under a key made of everything that shapes the
file (model identity or checkpoint sha256, precision, graph, calibration set, fcn-deploy
and torch versions), so a second run does not export again.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.fileio import user_cache_root
from fcn_deploy.runtime.model_files import MODEL_SUFFIXES, RUNTIME_KINDS, read_metadata

log = logging.getLogger(__name__)

GRAPHS = ("labels", "logits")
RANDOM_INIT_SEED = 0


def default_workdir() -> str:
    """Where exported variants are cached: ``benchmarks/`` in :func:`fcn_deploy.fileio.user_cache_root`."""
    return os.path.join(user_cache_root(), "benchmarks")


@dataclass
class ModelSource:
    """What ``--model`` named: a network PyTorch can run, or a finished file.

    ``kind``: ``zoo`` (random weights, seeded so that every run builds the same network),
    ``checkpoint`` (a training checkpoint or the bundled ``camvid``), ``onnx`` or ``engine``
    (an exported file, run as it is).
    """

    spec: str
    kind: str
    name: str
    num_classes: int
    resolved: Any = None  # converters.resolve.ResolvedModel for zoo and checkpoint
    file: Optional[str] = None
    file_precision: Optional[str] = None
    file_graph: Optional[str] = None
    model_options: Dict[str, Any] = field(default_factory=dict)
    dataset: Optional[str] = None
    mean_iu: Optional[float] = None
    # An imported file (``fcn-deploy import``): the ONNX it came from, as the user brought it, its
    # input dims and the normalisation it wants; the peer path runs that file.
    imported_from: Optional[str] = None
    imported_input_dims: Optional[List[Any]] = None
    imported_normalization: Any = None

    @property
    def has_torch_model(self) -> bool:
        return self.resolved is not None

    def identity(self) -> Dict[str, Any]:
        """What decides the weights, for the export cache key."""
        if self.kind == "checkpoint":
            return {"checkpoint_sha256": self.resolved.checkpoint_sha256}
        return {"zoo": self.name, "num_classes": self.num_classes, "options": self.model_options,
                "random_init_seed": RANDOM_INIT_SEED}

    def describe(self) -> str:
        if self.kind == "zoo":
            return f"{self.name} (random weights, seed {RANDOM_INIT_SEED}, {self.num_classes} classes)"
        if self.kind == "checkpoint":
            trained = f", trained on {self.dataset}" if self.dataset else ""
            return f"{self.name} from {self.spec}{trained}"
        return f"{self.name} ({self.kind} file {self.file}, {self.file_precision})"



def open_source(spec: str, num_classes: int = 11, options: Optional[Dict[str, Any]] = None) -> ModelSource:
    """Resolve ``--model``: an exported file, the bundled ``camvid``, a checkpoint, or a zoo name."""
    options = dict(options or {})
    kind = MODEL_SUFFIXES.get(os.path.splitext(spec)[1].lower())
    if kind in RUNTIME_KINDS:
        meta = read_metadata(spec)
        origin = meta.source.get("onnx") if meta.source.get("imported") else None
        return ModelSource(
            spec=spec, kind=kind, name=meta.model_name,
            num_classes=meta.num_classes, file=os.path.abspath(spec), file_precision=meta.precision,
            file_graph="labels" if meta.folds_argmax and meta.folds_preprocessing else "logits",
            model_options=dict(meta.source.get("model_options") or {}), dataset=meta.dataset, mean_iu=meta.mean_iu,
            imported_from=origin if origin and os.path.isfile(origin) else None,
            imported_input_dims=meta.source.get("input_dims"), imported_normalization=meta.normalization,
        )
    try:
        import torch
        from fcn_deploy.converters.resolve import resolve_model
    except ImportError as exc:
        raise FcnDeployError(f"--model {spec} needs PyTorch and the exporter ({exc}); "
                             "or give an exported .onnx/.engine file") from None

    torch.manual_seed(RANDOM_INIT_SEED)  # a zoo model's random weights, the same in every run
    resolved = resolve_model(spec, num_classes, **options)
    return ModelSource(
        spec=spec, kind="checkpoint" if resolved.trained else "zoo",
        name=getattr(resolved.model, "name", spec), num_classes=resolved.num_classes, resolved=resolved,
        model_options=dict(resolved.model_options), dataset=resolved.dataset, mean_iu=resolved.mean_iu,
    )


# --------------------------------------------------------------------------------------------
# Work: GFLOPs of the graph that is timed
# --------------------------------------------------------------------------------------------
class FlopCounter:
    """GFLOPs per image at each size, of the network as deployed (grouped upsampling).

    Counted on a meta-device copy, so even VGG16 at full size takes milliseconds. A source
    given as a file is rebuilt from its metadata (name, classes, options) for counting only.
    Returns ``None`` when torch is not installed.
    """

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self._meta = None
        self._cache: Dict[Tuple[int, int], Optional[float]] = {}

    def _meta_model(self):
        if self._meta is None:
            from fcn_deploy.models import build_model
            from fcn_deploy.models.upsampling import convert_upsampling_to_grouped

            if self.source.has_torch_model:
                net = copy.deepcopy(self.source.resolved.model)
            else:
                opts = {k: v for k, v in self.source.model_options.items() if k not in ("pretrained", "pretrained_backbone")}
                net = build_model(self.source.name, self.source.num_classes, **opts)
            convert_upsampling_to_grouped(net)  # needs real weights: it checks they are diagonal
            self._meta = net.to("meta").eval()
        return self._meta

    def gflops(self, height: int, width: int) -> Optional[float]:
        key = (height, width)
        if key not in self._cache:
            try:
                from fcn_deploy.models.flops import count_flops

                self._cache[key] = round(count_flops(self._meta_model(), height, width), 4)
            except ImportError:
                self._cache[key] = None
            except Exception as exc:  # a model the counter cannot trace: say so, keep going
                log.warning("cannot count the GFLOPs of %s: %s", self.source.name, exc)
                self._cache[key] = None
        return self._cache[key]


# --------------------------------------------------------------------------------------------
# PyTorch: the same graph as the export
# --------------------------------------------------------------------------------------------
def torch_module(source: ModelSource, precision: str, graph: str, capturable: bool = False):
    """The network as the exporter traces it, for PyTorch to run (on the CPU, float32).

    ``labels``: :class:`~converters.deploy_graph.DeployGraph` with the pre-processing and the
    arg-max folded in, uint8 frames in, uint8 labels out. ``logits``: the bare network.
    ``fp16`` casts the network's weights and its input to half, and its logits back to
    float, as the FP16 ONNX keeps float32 at its boundary. ``capturable`` swaps the channel
    order with ``flip`` instead of an index list, which would copy a host tensor to the GPU
    on every call and so cannot be captured in a CUDA graph (same result, same work).
    """
    import torch
    import torch.nn as nn
    from fcn_deploy.converters.deploy_graph import DeployGraph
    from fcn_deploy.models.upsampling import convert_upsampling_to_grouped

    if graph not in GRAPHS:
        raise FcnDeployError(f"unknown graph {graph!r}; expected one of {', '.join(GRAPHS)}")
    model = source.resolved.model
    net = copy.deepcopy(model).eval()
    convert_upsampling_to_grouped(net)
    if precision == "fp16":

        class HalfNet(nn.Module):
            """The half-precision network behind float32 input and output."""

            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.net = inner

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x.to(torch.float16)).to(torch.float32)

        net = HalfNet(net.half())
    elif precision != "fp32":
        raise FcnDeployError(f"PyTorch runs fp32 or fp16, not {precision}")
    module: nn.Module = net
    if graph == "labels":
        graph_class = _capturable_deploy_graph() if capturable else DeployGraph
        module = graph_class(net, model.normalization, fold_preprocessing=True, fold_argmax=True)
    return module.eval()


def _capturable_deploy_graph():
    import torch
    from fcn_deploy.converters.deploy_graph import DeployGraph

    class CapturableDeployGraph(DeployGraph):
        """:class:`DeployGraph` with the BGR -> RGB swap as ``flip(1)`` (see :func:`torch_module`)."""

        def swap_channels(self, x: torch.Tensor) -> torch.Tensor:
            return x.flip(1)

    return CapturableDeployGraph


@functools.lru_cache(maxsize=None)
def exporter_fingerprint() -> str:
    """A digest of the code that writes an exported graph (``converters/`` and the models).

    Part of the cache key, so that a changed exporter never times a stale file.
    """
    import fcn_deploy.converters as converters
    import fcn_deploy.models

    digest = hashlib.sha256()
    for package in (converters, fcn_deploy.models):
        folder = os.path.dirname(package.__file__)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# ONNX variants, cached
# --------------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """Where INT8 calibration frames come from: a folder or ``DATASET[:ROOT]`` (train split),
    and which INT8 scheme each backend gets.

    ``scheme`` ``auto`` gives each backend the INT8 graph it is built for: ``u8s8`` to ONNX
    Runtime's CPU provider and OpenVINO on the CPU (integer kernels on x86), ``s8s8`` to
    everything on a GPU (TensorRT accepts nothing else). ``s8s8`` or ``u8s8`` forces one, e.g. to score the TensorRT graph
    on the CPU.
    """

    source: str = "synthetic"
    images: int = 16
    size: Optional[Tuple[int, int]] = None
    scheme: str = "auto"

    def key(self) -> Dict[str, Any]:
        return {"source": self.source, "images": self.images, "size": list(self.size) if self.size else None}

    def scheme_for(self, backend: str) -> str:
        if self.scheme != "auto":
            return self.scheme
        return "u8s8" if backend in ("ort-cpu", "openvino") else "s8s8"


class ExportCache:
    """ONNX variants of one model in a work directory, exported once and reused.

    A file's name carries the model, precision and graph (for people) and a hash of the
    full key (for correctness); ``NAME.key.json`` beside it holds the key itself.
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)

    def key(self, source: ModelSource, precision: str, graph: str, calibration: Optional[Calibration],
            int8_scheme: str = "s8s8") -> Dict[str, Any]:
        import torch

        import fcn_deploy
        from fcn_deploy.converters.onnx_passes import DEFAULT_OPSET

        key = {"model": source.identity(), "precision": precision, "graph": graph, "opset": DEFAULT_OPSET,
               "fcn_deploy": fcn_deploy.__version__, "exporter": exporter_fingerprint(), "torch": torch.__version__}
        if precision == "int8":
            key["calibration"] = calibration.key() if calibration else None
            key["int8_scheme"] = int8_scheme
        return key

    def path_for(self, source: ModelSource, precision: str, graph: str, calibration: Optional[Calibration],
                 int8_scheme: str = "s8s8") -> str:
        key = self.key(source, precision, graph, calibration, int8_scheme)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        label = f"{precision}-{int8_scheme}" if precision == "int8" else precision
        return os.path.join(self.workdir, f"{source.name}-{graph}-{label}-{digest}.onnx")

    def onnx(self, source: ModelSource, precision: str, graph: str = "labels",
             calibration: Optional[Calibration] = None, int8_scheme: str = "s8s8") -> str:
        """The ONNX file of ``source`` at ``precision``: the given file, a cached one, or a new export."""
        if not source.has_torch_model:
            if source.kind != "onnx":
                raise FcnDeployError(f"{source.spec} is a {source.kind} file, not an ONNX graph")
            if precision != source.file_precision or graph != source.file_graph:
                raise FcnDeployError(
                    f"{source.spec} is a {source.file_precision} {source.file_graph} graph; give a zoo name "
                    "or checkpoint to export other variants"
                )
            return source.file
        if precision == "int8" and calibration is None:
            calibration = Calibration()
        path = self.path_for(source, precision, graph, calibration, int8_scheme)
        if os.path.isfile(path):
            log.info("using cached %s", path)
            return path
        from fcn_deploy.converters.onnx_export import export

        frames = None
        if precision == "int8":
            from fcn_deploy.converters.calibration import load_calibration_frames

            frames = load_calibration_frames(calibration.source, calibration.images, calibration.size)
        log.info("exporting %s %s (%s graph) to %s", source.name, precision, graph, path)
        folded = graph == "labels"
        result = export(source.resolved, path, precision=precision, fold_preprocessing=folded,
                        fold_argmax=folded, calib_frames=frames,
                        int8_scheme=int8_scheme if precision == "int8" else "s8s8")
        with open(path + ".key.json", "w") as f:
            json.dump({"key": self.key(source, precision, graph, calibration, int8_scheme),
                       "seconds": round(result.seconds, 2),
                       "agreement_with_fp32": result.agreement}, f, indent=1, sort_keys=True)
        return result.path


def random_frames(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A batch of random BGR uint8 frames: the input every latency configuration gets."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)


def timing_frames(spec: Optional[str], batch: int, height: int, width: int) -> np.ndarray:
    """``batch`` BGR uint8 frames of ``height x width``: the first images of ``spec`` (a folder
    or ``DATASET[:ROOT]``, spread over it and resized) when given, else :func:`random_frames`."""
    if not spec:
        return random_frames(batch, height, width)
    from fcn_deploy.converters.calibration import load_calibration_frames

    images = load_calibration_frames(spec, batch, (height, width))
    return np.stack([images[i % len(images)] for i in range(batch)])


# --------------------------------------------------------------------------------------------
# The peers' path: the same checkpoint exported plainly, quantised by each engine's own tool
# --------------------------------------------------------------------------------------------
PEER_INT8_TOOLS = {"onnxruntime": "onnxruntime.quantization.quantize_static (default settings)",
                   "openvino": "NNCF nncf.quantize (default settings)"}


class PeerExports:
    """What a user of the common path gets from the same checkpoint, cached like :class:`ExportCache`.

    FP32: ``torch.onnx.export`` of the trained network as it is, with default settings but for
    ``dynamo=False`` (the TorchScript exporter; torch 2.13's default dynamo exporter needs
    onnxscript, which is not installed here): float32 ``N x 3 x H x W`` input at the one size
    it is exported at, logits out, no pre-processing or arg-max folded in, no rewrite (the
    upsamplers stay ``ConvTranspose``), no simplification. INT8: each engine's own post-training
    quantisation of that file with its default settings, calibrated on the same frames as our
    INT8 graphs, normalised in numpy: ONNX Runtime's ``quantize_static`` (an ONNX file) and
    OpenVINO's NNCF ``quantize`` (an OpenVINO IR, ``.xml`` + ``.bin``).
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)

    def _path(self, source: ModelSource, what: str, shape: Tuple[int, int, int], calibration: Optional[Calibration],
              suffix: str) -> str:
        import torch

        key = {"model": source.identity(), "peer": what, "shape": list(shape), "torch": torch.__version__}
        if calibration is not None:
            key["calibration"] = calibration.key()
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        n, h, w = shape
        return os.path.join(self.workdir, f"peer-{source.name}-{what}-{n}x{h}x{w}-{digest}{suffix}")

    def fp32(self, source: ModelSource, shape: Tuple[int, int, int]) -> str:
        """The plain FP32 export at ``shape`` (N, H, W), made once."""
        import torch

        path = self._path(source, "fp32", shape, None, ".onnx")
        if os.path.isfile(path):
            log.info("using cached %s", path)
            return path
        model = copy.deepcopy(source.resolved.model).eval()
        n, h, w = shape
        log.info("exporting %s plainly (torch.onnx.export, TorchScript exporter) to %s", source.name, path)
        tmp = path + ".tmp.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # What the TorchScript exporter says about itself (deprecated; "Constant folding -
            # Only steps=1 can be constant folded ...") tells a benchmark's reader nothing.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(model, (torch.zeros(n, 3, h, w),), tmp, dynamo=False)
        os.replace(tmp, path)
        return path

    def _calibration_inputs(self, source: ModelSource, shape: Tuple[int, int, int],
                            calibration: Calibration) -> List[np.ndarray]:
        """The calibration frames at the export's size, normalised in numpy, one batch each."""
        import cv2

        from fcn_deploy.converters.calibration import load_calibration_frames
        from fcn_deploy.runtime.backends.base import normalize_frames

        n, h, w = shape
        frames = load_calibration_frames(calibration.source, calibration.images, (h, w))
        frames = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
        batches = [np.stack(frames[i:i + n]) for i in range(0, len(frames) - n + 1, n)]
        return [normalize_frames(b, source.resolved.model.normalization) for b in batches]

    def int8_onnxruntime(self, source: ModelSource, shape: Tuple[int, int, int], calibration: Calibration) -> str:
        """ONNX Runtime's ``quantize_static`` of the plain export, default settings (QDQ,
        uint8 activations, int8 weights, MinMax calibration)."""
        path = self._path(source, "int8-ort", shape, calibration, ".onnx")
        if os.path.isfile(path):
            log.info("using cached %s", path)
            return path
        from onnxruntime.quantization import CalibrationDataReader, quantize_static

        from fcn_deploy.converters.onnx_int8 import quiet_quantizer_logs

        plain = self.fp32(source, shape)
        inputs = self._calibration_inputs(source, shape, calibration)
        import onnxruntime as ort

        name = ort.InferenceSession(plain, providers=["CPUExecutionProvider"]).get_inputs()[0].name

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([{name: x} for x in inputs])

            def get_next(self):
                return next(self.items, None)

        log.info("quantising %s with onnxruntime.quantization.quantize_static to %s", plain, path)
        tmp = path + ".tmp.onnx"
        with quiet_quantizer_logs():  # its advice ("Please consider pre-processing") is for its own users
            quantize_static(plain, tmp, Reader())
        os.replace(tmp, path)
        return path

    def int8_openvino(self, source: ModelSource, shape: Tuple[int, int, int], calibration: Calibration) -> str:
        """NNCF's post-training quantisation of the plain export read by OpenVINO, default
        settings; saved as an OpenVINO IR (the ``.xml`` path is returned)."""
        path = self._path(source, "int8-nncf", shape, calibration, ".xml")
        if os.path.isfile(path) and os.path.isfile(path[:-4] + ".bin"):
            log.info("using cached %s", path)
            return path
        from fcn_deploy.runtime.backends.openvino import import_openvino

        ov = import_openvino()
        import nncf

        plain = self.fp32(source, shape)
        inputs = self._calibration_inputs(source, shape, calibration)
        from fcn_deploy.runtime.backends.openvino import shared_core

        model = shared_core().read_model(plain)
        log.info("quantising %s with NNCF %s to %s", plain, nncf.__version__, path)
        quantized = nncf.quantize(model, nncf.Dataset(inputs))
        ov.save_model(quantized, path)
        return path
