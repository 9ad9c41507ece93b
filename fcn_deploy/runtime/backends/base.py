"""The one interface every inference backend implements, and the input checks they share.

A backend is handed raw camera frames, ``N x H x W x 3`` uint8 in OpenCV's BGR order, whatever
graph it runs: when the graph folds the pre-processing in (the deployment default) the frames
go in as they are; when it does not, :func:`normalize_frames` does the same arithmetic in
numpy first. What comes back is what the graph's ``output`` metadata says: ``N x H x W`` uint8
labels, or ``N x C x H x W`` float32 logits (:meth:`Backend.infer_labels` always gives labels).

Every backend also has an asynchronous pair, :meth:`Backend.submit` and :meth:`Backend.result`,
and says in :attr:`Backend.in_flight` how many frames it can usefully hold between the two. A
video pipeline submits frame ``k + 1`` before it collects frame ``k``, so that on an
accelerator the copy-in of one frame, the compute of another and the copy-out of a third
overlap. A backend that runs one frame at a time keeps the default: ``submit`` runs the graph
at once and keeps the output for ``result``, so the same caller works on every backend.

Inputs are checked against the graph's input spec *before* the engine sees them, so a wrong
rank, channel count or dtype is one clear :class:`~fcn_deploy.errors.FcnDeployError` instead
of an engine's stack trace.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from ...errors import FcnDeployError
from ...normalization import Normalization, normalize_pixels
from ..metadata import LAYOUT_RAW_BGR, ModelMetadata

Dim = Union[int, str, None]


class BackendError(FcnDeployError):
    """A model file that cannot be opened, a device that is missing, or an input that does not fit."""


# The precisions a backend can be asked to compute a graph's floating-point layers in. ``fp32``
# (the default) is a promise: no engine may quietly lower it (OpenVINO would run an FP32 graph
# in bfloat16 on a CPU with AVX512_BF16 or AMX unless told not to). ``bf16`` is asked for by name
# and refused, in one line, by an engine or a device that cannot run it. An INT8 graph's integer
# convolutions stay integer either way; an FP16 graph's precision is its own
# (``fcn-deploy export --fp16``).
EXECUTION_PRECISIONS = ("fp32", "bf16")


def check_execution_precision(precision: Optional[str]) -> str:
    """``None`` -> ``"fp32"``; a name of :data:`EXECUTION_PRECISIONS` (any case) as it is;
    anything else one :class:`BackendError` line."""
    name = "fp32" if precision is None else str(precision).strip().lower()
    if name not in EXECUTION_PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; expected {' or '.join(EXECUTION_PRECISIONS)}")
    return name


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as the model declares it.

    ``shape`` holds an ``int`` for a fixed dimension and the dimension's name (``"N"``,
    ``"H"``, ``"W"``) or ``None`` for a dynamic one; ``dtype`` is a numpy dtype name.
    """

    name: str
    shape: Tuple[Dim, ...]
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = "x".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.name} {dims} {self.dtype}"


def _shape_text(shape: Tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def check_array(x: Any, spec: TensorSpec, what: str = "input") -> np.ndarray:
    """Return ``x`` as a numpy array that fits ``spec``, or raise one clear :class:`BackendError`."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.ndim != spec.rank:
        raise BackendError(
            f"{what} has rank {x.ndim} (shape {_shape_text(x.shape)}); the model expects rank "
            f"{spec.rank}: {spec.describe()}"
        )
    for axis, (size, want) in enumerate(zip(x.shape, spec.shape)):
        if size < 1:
            raise BackendError(f"{what} has an empty dimension {axis} (shape {_shape_text(x.shape)})")
        if isinstance(want, int) and want > 0 and size != want:
            raise BackendError(
                f"{what} has size {size} on axis {axis} (shape {_shape_text(x.shape)}); the model "
                f"expects {want} there: {spec.describe()}"
            )
    if x.dtype != np.dtype(spec.dtype):
        raise BackendError(f"{what} is {x.dtype}; the model expects {spec.dtype}: {spec.describe()}")
    return np.ascontiguousarray(x)


FRAMES_SPEC = TensorSpec("frames", ("N", "H", "W", 3), "uint8")


def check_frames(frames: Any) -> np.ndarray:
    """Check that ``frames`` is a batch of BGR uint8 frames, ``N x H x W x 3``."""
    if not isinstance(frames, np.ndarray):
        frames = np.asarray(frames)
    if frames.ndim != 4:
        hint = " (one frame? pass frame[None])" if frames.ndim == 3 else ""
        raise BackendError(
            f"input has rank {frames.ndim} (shape {_shape_text(frames.shape)}); expected a batch of "
            f"frames N x H x W x 3, uint8 BGR{hint}"
        )
    if frames.shape[-1] != 3:
        raise BackendError(
            f"input has {frames.shape[-1]} channels (shape {_shape_text(frames.shape)}); expected "
            "N x H x W x 3, uint8 BGR"
        )
    return check_array(frames, FRAMES_SPEC, "input")


def normalize_frames(frames: np.ndarray, normalization: Normalization) -> np.ndarray:
    """BGR uint8 ``N x H x W x 3`` frames -> normalised float32 ``N x 3 x H x W``.

    The same operations, in the same order and precision, as the pre-processing that the
    exporter folds into a graph: cast, reorder channels, subtract the mean, divide by the
    standard deviation, transpose.
    """
    try:
        return normalize_pixels(frames, normalization, "BGR")
    except ValueError:
        raise BackendError(f"unknown channel order {normalization.channel_order!r} in the model's normalisation") from None


def check_layout(path: str, meta: ModelMetadata, spec: TensorSpec, out: TensorSpec) -> None:
    """The metadata's input layout and output kind must describe the graph itself (its input
    ``spec`` and output ``out``), or one clear :class:`BackendError`: a file whose metadata
    was edited or copied onto another graph would otherwise fail deep in the engine."""
    raw = meta.input_layout == LAYOUT_RAW_BGR
    where = f"{path}: graph input {spec.describe()}"
    if spec.rank != 4:
        raise BackendError(f"{where} has rank {spec.rank}; the metadata says {meta.input_layout} (rank 4)")
    channels = spec.shape[3] if raw else spec.shape[1]
    if isinstance(channels, int) and channels != 3:
        raise BackendError(f"{where} has {channels} channels; the metadata says {meta.input_layout} (3 channels)")
    if spec.dtype != ("uint8" if raw else "float32"):
        raise BackendError(f"{where} is {spec.dtype}; the metadata says {meta.input_layout}")
    want_rank, want_dtype = (3, "uint8") if meta.output == "labels" else (4, "float32")
    if out.rank != want_rank or out.dtype != want_dtype:
        raise BackendError(f"{path}: metadata says output {meta.output} but the graph output is {out.describe()}")


class Backend(abc.ABC):
    """An opened model on a device.

    Attributes every backend sets: ``path`` (the model file), ``device`` (``"cpu"``,
    ``"cuda"``, ``"tensorrt"``), ``providers`` (what actually runs it, e.g. ONNX Runtime's
    execution providers in priority order), ``metadata`` (:class:`ModelMetadata`, or ``None``
    for a foreign graph opened with ``require_metadata=False``), ``input_spec`` and
    ``output_spec`` (:class:`TensorSpec` of the graph's own input and output). ``precision``
    is what the floating-point layers were asked to run in (:data:`EXECUTION_PRECISIONS`), and
    :attr:`execution_precision` what the engine says it compiled.

    Use as a context manager, or call :meth:`close`.
    """

    path: str
    device: str
    providers: List[str]
    metadata: Optional[ModelMetadata]
    input_spec: TensorSpec
    output_spec: TensorSpec
    precision: str = "fp32"

    @property
    def execution_precision(self) -> str:
        """The precision the engine runs the graph in, as the engine reports it where it can
        (OpenVINO reads it back from the compiled model). Here: the graph's own types, which
        an engine without a precision switch (ONNX Runtime's CPU provider) runs as they are."""
        return self.metadata.precision if self.metadata is not None else "fp32"

    @abc.abstractmethod
    def run_graph(self, x: np.ndarray) -> np.ndarray:
        """Run the graph on its own input (already in the graph's layout and dtype).

        Implementations check ``x`` with :func:`check_array` against ``input_spec`` first.
        """

    def close(self) -> None:
        """Release the session or engine; the backend cannot be used afterwards.

        A backend with frames in flight waits for them first: a session or engine is never
        freed while the accelerator still works on it.
        """

    # -- frames in flight ------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """How many frames :meth:`submit` can usefully hold before their :meth:`result` is taken.

        1 here: the graph runs when a frame is submitted. Backends that overlap frames (several
        TensorRT execution contexts, ONNX Runtime's asynchronous runs) return more.
        """
        return 1

    def submit(self, x: np.ndarray) -> int:
        """Start the graph on ``x`` (the graph's own input, as :meth:`prepare` makes it).

        Returns a ticket for :meth:`result`. Each ticket is collected once; submitting more
        than :attr:`in_flight` frames before collecting them is allowed (a backend may wait
        for an earlier frame to finish first). An input that does not fit raises here; a
        failure of the run itself raises here or from :meth:`result`. This default runs the
        graph at once and keeps its output until :meth:`result` takes it; it expects one
        calling thread.
        """
        output = self.run_graph(x)
        done = self.__dict__.setdefault("_sync_outputs", {})
        ticket = self.__dict__.get("_sync_next_ticket", 0)
        self._sync_next_ticket = ticket + 1
        done[ticket] = output
        return ticket

    def result(self, ticket: int) -> np.ndarray:
        """The graph's output for the frame submitted as ``ticket`` (waits until it is ready)."""
        try:
            return self.__dict__.get("_sync_outputs", {}).pop(ticket)
        except KeyError:
            raise BackendError(f"no frame in flight with ticket {ticket}") from None

    # -- what callers use ------------------------------------------------------------------
    @property
    def output_kind(self) -> str:
        """``"labels"`` or ``"logits"``: what :meth:`infer` returns."""
        if self.metadata is None:
            raise BackendError(f"{self.path} carries no fcn-deploy metadata; use run_graph()")
        return self.metadata.output

    def prepare(self, frames: Any) -> np.ndarray:
        """Frames (``N x H x W x 3`` uint8 BGR) -> the graph's input."""
        if self.metadata is None:
            raise BackendError(
                f"{self.path} carries no fcn-deploy metadata, so its input layout and "
                "normalisation are unknown; export it with `fcn-deploy export` or call run_graph()"
            )
        frames = check_frames(frames)
        if self.metadata.folds_preprocessing:
            return frames
        return normalize_frames(frames, self.metadata.normalization)

    def infer(self, frames: Any) -> np.ndarray:
        """Segment a batch of BGR uint8 frames (``N x H x W x 3``).

        Returns ``N x H x W`` uint8 labels or ``N x C x H x W`` float32 logits, as
        :attr:`output_kind` says.
        """
        return self.run_graph(self.prepare(frames))

    def infer_labels(self, frames: Any) -> np.ndarray:
        """Like :meth:`infer`, but always ``N x H x W`` uint8 labels (arg-max on the host if needed)."""
        return self.to_labels(self.infer(frames))

    def to_labels(self, output: np.ndarray) -> np.ndarray:
        """The graph's output (from :meth:`infer` or :meth:`result`) -> ``N x H x W`` uint8 labels.

        A labels graph's output is returned as it is; a logits graph's is arg-maxed over the
        classes on the host.
        """
        if self.output_kind == "labels":
            return output
        return output.argmax(axis=1).astype(np.uint8)

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        name = self.metadata.model_name if self.metadata else "foreign graph"
        return f"{type(self).__name__}({self.path!r}, {name}, device={self.device!r}, providers={self.providers})"
