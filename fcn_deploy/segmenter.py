"""``Segmenter``: the Python API of the runtime, one object from a model name to label maps.

::

    from fcn_deploy import Segmenter

    with Segmenter("camvid") as seg:          # a bundled name, an .onnx or .engine file
        labels = seg(frame)                   # BGR uint8 H x W x 3 -> uint8 H x W class indices
        picture = seg.overlay(frame, labels)  # the colours of seg.palette over the frame

What users of the field expect (Ultralytics' ``YOLO("model.onnx")(frame)``, jetson-inference's
``segNet.Process`` and, its most asked-for feature, the class mask back as a numpy array),
built from the same parts as ``fcn-deploy run``, so that the two never disagree:

* the model is opened by :func:`fcn_deploy.runtime.backends.open_backend` (ONNX Runtime or
  TensorRT; a URI such as a remote server's goes to it unchanged, whichever backends it knows);
* each frame goes into the network at the size
  :class:`~fcn_deploy.runtime.input_size.InputSizer` chooses (by default the scale the model
  was trained at; ``input_size="native"`` or ``(H, W)`` as ``--input-size`` takes them), and
  its labels come back at the frame's own size, nearest-neighbour, as ``--labels-dir`` writes
  them;
* frames of one input size are batched into one backend call, within the batch sizes the
  model accepts.

What :meth:`Segmenter.predict` takes and gives:

=================================  =================================================================
a BGR ``H x W x 3`` uint8 array     one ``H x W`` uint8 array
an ``N x H x W x 3`` uint8 array    an ``N x H x W`` uint8 array
a list (or tuple) of arrays/paths   a list, one ``H x W`` array per item, each at its item's size
an image file (``str``/``Path``)    one ``H x W`` array
a folder                            a dict ``{Path: H x W array}`` in file-name order (the
                                    names say which labels are whose); an unreadable image is
                                    skipped with a warning and left out, as ``run`` does
=================================  =================================================================

No PyTorch: this module is part of the runtime's import closure (numpy, OpenCV, the backends).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .errors import FcnDeployError
from .runtime.backends import Backend, open_backend
from .runtime.input_size import (
    InputSizer,
    InputSizeSpec,
    Size,
    backend_batch_limit,
    backend_batch_minimum,
    pad_batch,
    parse_input_size,
    resize_frame,
)
from .runtime.metadata import ModelMetadata
from .runtime.model_files import ONNX, default_device, model_kind, resolve_model_file
from .runtime.sources import IMAGE_EXTENSIONS, Frame, open_source, quiet_opencv
from .runtime.stats import FrameStatistics
from .runtime.visualize import VisualOptions, Visualizer
from .runtime.zones import parse_zones

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
# Frames per backend call when the model allows any batch: enough to amortise a call, small
# enough that a folder of large images does not hold gigabytes of float activations at once.
DEFAULT_BATCH = 8


class Segmenter:
    """An exported FCN, opened once, that turns frames into class-index maps.

    ``model``: a bundled model's name (``"camvid"``), an ``.onnx`` or ``.engine`` file, or any
    URI :func:`~fcn_deploy.runtime.backends.open_backend` opens. ``device``: ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ``"tensorrt"`` (default: a GPU for an engine, else the CPU, where
    the faster installed engine of ONNX Runtime and OpenVINO runs an ONNX file, as in
    ``fcn-deploy run``: :attr:`engine_choice` says which and why; ``"ort-cpu"`` or
    ``"openvino"`` names one).
    ``input_size``: ``None`` (the model's training scale), ``"native"`` (each frame's own
    size), ``(H, W)`` or ``"HxW"`` (one size for every frame). ``batch_size``: the most frames
    per backend call (default 8, and never more than the model's own limit). Other keyword
    arguments go to the backend (``threads=2`` for ONNX Runtime on the CPU, ``contexts=`` for
    a TensorRT engine).

    Every failure (a missing file, an unknown device, a frame of the wrong shape or dtype) is
    one :class:`~fcn_deploy.errors.FcnDeployError`. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, model: PathLike = "camvid", device: Optional[str] = None, *,
                 input_size: Union[InputSizeSpec, str] = None, batch_size: Optional[int] = None,
                 precision: str = "fp32", **backend_options: Any) -> None:
        spec = os.fspath(model)
        if "://" in spec:  # a URI: open_backend decides what it is (no file to resolve here)
            target, kind_device = spec, "cpu"
        else:
            path = resolve_model_file(spec)
            target, kind_device = str(path), default_device(model_kind(path))
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise FcnDeployError(f"batch_size must be a positive integer, not {batch_size!r}")
        if isinstance(input_size, str):
            input_size = parse_input_size(input_size, "input_size")
        self.device = device or kind_device
        self.engine_choice: Optional[str] = None
        if "://" not in spec and model_kind(target) == ONNX and self.device.strip().lower() == "cpu":
            # As `fcn-deploy run`: the faster installed CPU engine for this model, measured once.
            from .runtime.engine_choice import choose_cpu_backend

            self.device, self.engine_choice = choose_cpu_backend(
                target, backend_options.get("threads"), spinning=backend_options.get("spinning", True),
                precision=precision)
            log.info("%s", self.engine_choice)
        self._backend: Optional[Backend] = open_backend(target, self.device, precision=precision, **backend_options)
        try:
            if self._backend.metadata is None:
                raise FcnDeployError(f"{target} carries no fcn-deploy metadata; export it with `fcn-deploy export`")
            self._sizer = InputSizer.for_backend(self._backend, input_size)
            self.max_batch, self._min_batch = _batch_limits(self._backend)
            if batch_size is not None:
                self.max_batch = min(batch_size, self.max_batch) if self.max_batch else batch_size
            elif not self.max_batch:
                self.max_batch = DEFAULT_BATCH
        except BaseException:
            self._backend.close()
            raise
        self.model = spec
        self.skipped: List[Path] = []  # images the last folder or stream could not read
        self._visualizers: Dict[Tuple[Tuple[str, Any], ...], Visualizer] = {}
        self._statistics: Dict[Tuple[str, ...], FrameStatistics] = {}

    # -- what the model is ------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The opened :class:`~fcn_deploy.runtime.backends.Backend` (for ``submit``/``result``,
        ``providers``, ``input_spec``)."""
        if self._backend is None:
            raise FcnDeployError("this Segmenter is closed")
        return self._backend

    @property
    def metadata(self) -> ModelMetadata:
        """The model's :class:`~fcn_deploy.runtime.metadata.ModelMetadata`: name, classes,
        palette, normalisation, training dataset and its mean IU, exporter versions."""
        return self.backend.metadata  # type: ignore[return-value]

    @property
    def classes(self) -> List[str]:
        """Class names; label ``i`` is ``classes[i]``."""
        return list(self.metadata.classes)

    @property
    def palette(self) -> List[Tuple[int, int, int]]:
        """One RGB colour per class (``palette[i]`` for label ``i``)."""
        return [tuple(c) for c in self.metadata.palette]  # type: ignore[misc]

    def input_size_for(self, height: int, width: int) -> Size:
        """The (H, W) a frame of ``height`` x ``width`` goes into the network at."""
        return self._sizer.size_for((int(height), int(width)))

    # -- segmentation -----------------------------------------------------------------------
    def __call__(self, source: Any) -> Any:
        """Same as :meth:`predict`."""
        return self.predict(source)

    def predict(self, source: Any) -> Any:
        """Class-index maps (uint8, each at its frame's size) for ``source``: see the module
        docstring for what each kind of input gives back."""
        if isinstance(source, np.ndarray):
            if source.ndim == 4:
                if source.shape[3] != 3:
                    raise FcnDeployError(f"a batch of frames has shape {'x'.join(map(str, source.shape))}; "
                                         "expected BGR uint8 N x H x W x 3")
                frames = [_check_frame(f, f"frame {i}") for i, f in enumerate(source)]
                return np.stack(self._segment(frames)) if frames else np.zeros((0,) + source.shape[1:3], np.uint8)
            return self._segment([_check_frame(source, "frame")])[0]
        if isinstance(source, (str, os.PathLike)):
            path = Path(os.fspath(source)).expanduser()
            if path.is_dir():
                return dict(self.stream(path))
            return self._segment([read_image(path)])[0]
        if isinstance(source, (list, tuple)):
            frames = [_as_frame(item, f"item {i}") for i, item in enumerate(source)]
            return self._segment(frames)
        raise FcnDeployError(
            f"cannot segment a {type(source).__name__}: give a BGR uint8 H x W x 3 array, a list of them, "
            "an image file or a folder"
        )

    def stream(self, images: Union[PathLike, Iterable[PathLike]]) -> Iterator[Tuple[Path, np.ndarray]]:
        """``(path, labels)`` for each image of a folder (in name order) or of an iterable of
        paths, a batch at a time, without holding every result in memory.

        An image that cannot be read is skipped with a warning (and counted in
        :attr:`skipped`); a folder without images is an error.
        """
        if isinstance(images, (str, os.PathLike)):
            folder = Path(os.fspath(images)).expanduser()
            paths = image_files(folder)
        else:
            paths = [Path(os.fspath(p)) for p in images]
        self.skipped = []
        batch: List[Tuple[Path, np.ndarray]] = []
        for path in paths:
            try:
                batch.append((path, read_image(path)))
            except FcnDeployError as exc:
                log.warning("skipped %s", exc)
                self.skipped.append(path)
                continue
            if len(batch) >= self.max_batch:
                yield from zip([p for p, _ in batch], self._segment([f for _, f in batch]))
                batch = []
        if batch:
            yield from zip([p for p, _ in batch], self._segment([f for _, f in batch]))

    def video(self, uri: str, decode: str = "auto", loop: bool = False) -> Iterator[Tuple[Frame, np.ndarray]]:
        """``(frame, labels)`` for each frame of a video source: a file, an ``rtsp://`` stream, a
        camera, anything ``fcn-deploy run --source`` takes. ``decode`` is ``run --decode``'s
        (``auto``, ``nvidia``, ``gstreamer``, ``ffmpeg``): a GStreamer decoder scales the frame
        to the input size before it reaches Python, and the labels still come back at the
        source's own size (``frame.shape``)."""
        with open_source(uri, loop=loop, decode=decode, scale=self._sizer.decoder_scale) as source:
            if source.decode_note:
                log.info("%s", source.decode_note)
            for frame in source:
                yield frame, self._segment([frame.image], [frame.shape])[0]

    def _segment(self, frames: Sequence[np.ndarray], shapes: Optional[Sequence[Size]] = None) -> List[np.ndarray]:
        """Labels for checked frames: grouped by network input size, batched, mapped back.

        ``shapes``: each frame's own (height, width) where a decoder already scaled it (a
        :class:`Frame`'s ``shape``); the input size follows from it, as for an unscaled frame,
        and the labels come back at it. Default: the frames' own sizes."""
        backend = self.backend
        shapes = [f.shape[:2] for f in frames] if shapes is None else shapes
        sizes = [self._sizer.size_for(shape) for shape in shapes]
        results: List[Optional[np.ndarray]] = [None] * len(frames)
        by_size: Dict[Size, List[int]] = {}
        for index, size in enumerate(sizes):
            by_size.setdefault(size, []).append(index)
        for size, indices in by_size.items():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start:start + self.max_batch]
                batch = np.stack([resize_frame(frames[i], size) for i in chunk])
                batch = pad_batch(batch, self._min_batch)  # a fixed-batch graph: padded, extra rows dropped
                labels = backend.infer_labels(batch)
                for row, i in enumerate(chunk):
                    height, width = shapes[i]
                    out = labels[row]
                    if out.shape != (height, width):
                        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_NEAREST)
                    results[i] = np.ascontiguousarray(out, dtype=np.uint8)
        return results  # type: ignore[return-value]

    # -- pictures ---------------------------------------------------------------------------
    def overlay(self, frame: np.ndarray, labels: np.ndarray, **options: Any) -> np.ndarray:
        """``frame`` with the class colours of ``labels`` drawn over it (BGR uint8, the frame's
        size), as ``fcn-deploy run`` draws it.

        ``options`` are :class:`~fcn_deploy.runtime.visualize.VisualOptions` fields:
        ``alpha=0.5``, ``mode="overlay"|"mask"|"side-by-side"``, ``legend=True``,
        ``classes=[...]``, ``ignore=[...]``, ``upscale="nearest"|"linear"``.
        """
        frame = _check_frame(frame, "frame")
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise FcnDeployError(
                f"labels must be an H x W uint8 array (what predict returns), not {labels.dtype} "
                f"{'x'.join(map(str, labels.shape))}"
            )
        key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
        visualizer = self._visualizers.get(key)
        if visualizer is None:
            try:
                visual = VisualOptions(**{"hud": False, **options})
            except TypeError as exc:
                raise FcnDeployError(f"overlay: {exc}") from None
            visualizer = Visualizer(self.metadata.classes, self.metadata.palette, visual)
            self._visualizers[key] = visualizer
        return visualizer.render(frame, labels)

    # -- numbers ----------------------------------------------------------------------------
    def stats(self, labels: np.ndarray, zones: Sequence[str] = ()) -> Dict[str, Any]:
        """The share of each class in ``labels`` (what :meth:`predict` returns), and in each zone:
        ``{"classes": {name: share}, "zones": {zone: {name: share}}}``, the same numbers as the
        ``classes`` and ``zones`` of ``fcn-deploy run --stats`` (:mod:`fcn_deploy.runtime.stats`).

        ``zones`` are ``--zone`` texts, ``"NAME=x1,y1,x2,y2,..."`` (fractions of the frame, or pixels).
        """
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise FcnDeployError(f"labels must be an H x W uint8 array (what predict returns), not {labels.dtype} "
                                 f"{'x'.join(map(str, labels.shape))}")
        key = tuple(zones)
        statistics = self._statistics.get(key)
        if statistics is None:
            statistics = FrameStatistics(self.classes, parse_zones(list(zones)))
            self._statistics[key] = statistics
        return statistics.shares(labels)

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend's session or engine (waits for frames in flight); idempotent."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._backend is None:
            return f"Segmenter({self.model!r}, closed)"
        return (f"Segmenter({self.model!r}, {self.metadata.model_name}, {len(self.classes)} classes, "
                f"device={self.device!r}, providers={self._backend.providers})")


# -- inputs ------------------------------------------------------------------------------------
def _check_frame(frame: Any, what: str) -> np.ndarray:
    """``frame`` as a contiguous BGR uint8 ``H x W x 3`` array, or one clear error."""
    if not isinstance(frame, np.ndarray):
        raise FcnDeployError(f"{what} is a {type(frame).__name__}; expected a numpy array, BGR uint8 H x W x 3")
    shape = "x".join(map(str, frame.shape))
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 4)):
        channels = 1 if frame.ndim == 2 else frame.shape[2]
        fix = "cv2.COLOR_GRAY2BGR" if channels == 1 else "cv2.COLOR_BGRA2BGR"
        raise FcnDeployError(f"{what} has {channels} channel(s) (shape {shape}); expected BGR H x W x 3: "
                             f"convert it with cv2.cvtColor(frame, {fix})")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise FcnDeployError(f"{what} has shape {shape}; expected BGR uint8 H x W x 3")
    if min(frame.shape[:2]) < 1:
        raise FcnDeployError(f"{what} is empty (shape {shape})")
    if frame.dtype != np.uint8:
        raise FcnDeployError(f"{what} is {frame.dtype}; expected uint8 BGR (as cv2.imread gives), not normalised "
                             "floats: the model does its own normalisation")
    return np.ascontiguousarray(frame)


def _as_frame(item: Any, what: str) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        return read_image(Path(os.fspath(item)).expanduser())
    return _check_frame(item, what)


def read_image(path: Path) -> np.ndarray:
    """An image file as BGR uint8, or one clear error (missing, a folder, not an image)."""
    if not path.exists():
        raise FcnDeployError(f"no such image: {path}")
    if path.is_dir():
        raise FcnDeployError(f"{path} is a folder; give an image file")
    with quiet_opencv():
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FcnDeployError(f"cannot read image {path}: corrupt, unreadable or not an image")
    return image


def image_files(folder: Path) -> List[Path]:
    """The images of ``folder`` (by suffix), sorted by name; an error when there are none."""
    if folder.is_file():
        raise FcnDeployError(f"{folder} is a file; give a folder of images (or a list of image paths)")
    if not folder.is_dir():
        raise FcnDeployError(f"no such folder: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise FcnDeployError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def _batch_limits(backend: Backend) -> Tuple[int, int]:
    """``(most frames per call, fewest frames per call)`` the model accepts; 0 where there is
    no limit (any batch) and 1 where any batch will do.

    A graph with a fixed batch dimension takes exactly that many frames, a static-batch engine
    (DLA) its profile's batch; a TensorRT engine (or ONNX Runtime's TensorRT provider) takes
    at most its optimisation profile's largest batch (the video pipeline reads the same).
    """
    return backend_batch_limit(backend) or 0, backend_batch_minimum(backend)
