"""The size a frame goes into the network at: by default, the scale the model learned.

An FCN takes any input size, but it learns objects at the scale of its training images: a
car 100 pixels wide in training is recognised best when it is about 100 pixels wide again.
A camera that sees a road scene like the training set's, at a higher resolution, shows the
same car larger; fed at its own size the frame costs several times the compute and scores
less (docs/runtime.md's table per input scale). jetson-inference and DeepStream always resize to
one fixed network size; the exported graphs here take any height, width and aspect ratio,
so the rule only fixes the *scale*:

**The rule.** The model's *reference size* (H, W) is where its objects have the training
scale: its dataset's frames at the scale training validated at (each image's own size,
scale 1, unless ``--val-size`` said otherwise), clamped into the random-scale range of the
training crops. A frame is resized so that its short side equals the reference's short
side, keeping its aspect ratio (a 1280x720 frame and a CamVid model, reference 360x480:
input 360x640). Labels come back at the frame's own size. Frames of the training dataset
itself are at scale 1 by definition (VOC's images vary in size, not in scale), so they are
scaled by the reference scale only, which is 1 for every model trained with a scale range
that contains it: evaluation on the training dataset stays the standard protocol.

Why the validation scale and not the middle of the scale range: the checkpoint is the one
that scored best at that scale, and across the training range accuracy is flat while the
cost grows with the square of the scale, so the cheapest point of the plateau is the one
training already chose.

No rounding to a multiple: every exported graph takes any size exactly (the edge nets pad
to a multiple of 32 inside the graph and crop the labels back; the VGG nets pad by 100 and
crop, as in the paper), so each side is rounded to the nearest pixel, and a frame already at
the reference size is not touched at all.

**Facts, not conclusions, in the file.** The exporter records ``extra["training_scale"]``
(:func:`training_scale_facts`): the dataset, its frames' size, the training crop, the
random-scale range, the validation size and the reference derived from them. A file
exported before that (the bundled ONNX until it is re-exported) falls back to the frame size
of its dataset (:data:`DATASET_IMAGE_SIZES`). A model that learned no scale (an untrained
zoo export, or one trained on images of unknown size, most likely the user's own camera
frames) gets its frames at their own size.

**Engines.** A TensorRT engine accepts only the sizes of its optimisation profile (from its
sidecar; for ONNX Runtime's TensorRT provider, the profile it was given). A size outside
is fitted into the profile, aspect ratio kept where the profile allows it; a size forced
with ``HxW`` outside the profile is an error. :func:`default_profile` is what
``fcn-deploy build`` builds when not told: it covers what the rule gives for common cameras.

Torch-free: the runtime, the exporter and ``fcn-deploy build`` share it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import FcnDeployError
from .metadata import LAYOUT_RAW_BGR, ModelMetadata

log = logging.getLogger(__name__)

Size = Tuple[int, int]  # (height, width)
NATIVE = "native"
# What ``--input-size`` takes: None (the rule), "native", or a forced (height, width).
InputSizeSpec = Union[None, str, Size]

# The frames of the datasets fcn-deploy trains on, (H, W) at scale 1: what a model trained on
# them saw at scale 1 and what their val/test splits are scored at. VOC's images vary (at
# most 500 pixels a side); 375x500 is the common landscape frame.
DATASET_IMAGE_SIZES: Dict[str, Size] = {
    "camvid": (360, 480),
    "cityscapes": (1024, 2048),
    "voc": (375, 500),
    "voc_aug": (375, 500),
    "sbd": (375, 500),
    "synthetic": (96, 128),
}

# Frame sizes (H, W) of common cameras: VGA webcams, 720p (Jetson CSI cameras' default mode)
# and 1080p. The default engine profile covers what the rule gives for each of them.
COMMON_CAMERAS: Tuple[Size, ...] = ((480, 640), (720, 1280), (1080, 1920))
# The camera the default profile is tuned for (its ``opt``): the CSI camera's 1280x720.
PROFILE_CAMERA: Size = (720, 1280)
# The typical frame when nothing says otherwise (CamVid's), and the smallest profile side.
DEFAULT_SIZE: Size = (360, 480)
MIN_SIDE = 32
# The largest side --input-size takes: twice an 8K frame's width. One frame that size is 800 MB
# as uint8 BGR before the network (whose activations are tens of times that); a larger one is a
# typo, refused before the model loads rather than found as an allocation failure mid-run.
MAX_SIDE = 16384


def _size(value: Any) -> Optional[Size]:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
            return int(value[0]), int(value[1])
    return None


def _range(value: Any) -> Optional[Tuple[float, float]]:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
            lo, hi = float(value[0]), float(value[1])
            return (lo, hi) if lo <= hi else (hi, lo)
    return None


def size_text(size: Size) -> str:
    """``(360, 640)`` -> ``"360x640"`` (height x width, as ``--input-size`` takes it)."""
    return f"{int(size[0])}x{int(size[1])}"


def frame_text(size: Size) -> str:
    """``(720, 1280)`` -> ``"1280x720"``: a camera frame, width first, as cameras are named."""
    return f"{int(size[1])}x{int(size[0])}"


# -- the facts recorded at export --------------------------------------------------------------
def dataset_image_size(dataset: Optional[str], options: Optional[Mapping[str, Any]] = None) -> Optional[Size]:
    """The (H, W) of ``dataset``'s frames at scale 1, or ``None`` when unknown (a folder of
    the user's own images, say). A synthetic dataset's ``size`` option wins over the table."""
    if not dataset:
        return None
    name = str(dataset).lower()
    if name == "synthetic" and options and _size(options.get("size")):
        return _size(options.get("size"))
    if name in DATASET_IMAGE_SIZES:
        return DATASET_IMAGE_SIZES[name]
    for known, size in DATASET_IMAGE_SIZES.items():  # "camvid-subset", "cityscapes_fine"
        if known in name:
            return size
    return None


def reference_scale(image_size: Optional[Size], scale_range: Optional[Tuple[float, float]],
                    eval_size: Optional[Size]) -> Optional[float]:
    """The scale of the dataset's frames at which the model's objects have their training
    scale: the validation scale (1, or ``eval_size``'s short side over the frames' short
    side), clamped into the random-scale range. ``None`` without the frames' size."""
    if image_size is None:
        return None
    scale = min(eval_size) / min(image_size) if eval_size else 1.0
    if scale_range is not None:
        scale = min(max(scale, scale_range[0]), scale_range[1])
    return scale


def training_scale_facts(dataset: Optional[str], recipe: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """What the exporter records as ``extra["training_scale"]`` for a model trained on
    ``dataset`` with the training ``recipe`` of its checkpoint (``None`` for a network that
    was never trained here): the facts, and the reference size the rule derives from them.

    Every size is ``[height, width]``; ``reference_size`` is ``None`` when the model learned
    no scale this can know (then frames are fed at their own size).
    """
    recipe = recipe or {}
    name = recipe.get("dataset") or dataset
    image = dataset_image_size(name, recipe.get("dataset_options"))
    crop, scales, val = _size(recipe.get("crop")), _range(recipe.get("scale_range")), _size(recipe.get("val_size"))
    scale = reference_scale(image, scales, val)
    if image is not None and scale is not None:
        reference: Optional[Size] = (int(round(image[0] * scale)), int(round(image[1] * scale)))
    else:
        reference = val  # validated at a fixed size, on frames of unknown size: that size
    return {
        "dataset": name,
        "image_size": list(image) if image else None,
        "crop": list(crop) if crop else None,
        "scale_range": list(scales) if scales else None,
        "eval_size": list(val) if val else None,
        "reference_scale": scale,
        "reference_size": list(reference) if reference else None,
    }


@dataclass(frozen=True)
class TrainingScale:
    """Where a model's objects have their training scale, as the runtime reads it.

    ``reference_size`` is ``None`` for a model that learned no known scale; ``scale`` is the
    reference scale of its own dataset's frames (1 unless training validated elsewhere);
    ``why`` says where the numbers come from, for messages.
    """

    reference_size: Optional[Size]
    scale: float = 1.0
    dataset: Optional[str] = None
    why: str = ""


def scale_from_facts(facts: Mapping[str, Any], dataset: Optional[str] = None) -> TrainingScale:
    """A :class:`TrainingScale` from recorded facts (:func:`training_scale_facts`)."""
    reference = _size(facts.get("reference_size"))
    scale = facts.get("reference_scale")
    scale = float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0 else 1.0
    dataset = facts.get("dataset") or dataset
    if reference is None:
        return TrainingScale(None, scale, dataset, "the model records no training scale")
    image = _size(facts.get("image_size"))
    what = f"{dataset} frames {size_text(image)}" if dataset and image else f"validated at {size_text(reference)}"
    if image and scale != 1.0:
        what += f" at scale {scale:g}"
    return TrainingScale(reference, scale, dataset, f"the model's training scale, {what}")


def training_scale(metadata: Optional[ModelMetadata]) -> TrainingScale:
    """The training scale of a model from its metadata (see the module docstring)."""
    if metadata is None:
        return TrainingScale(None, why="the model carries no fcn-deploy metadata")
    extra = metadata.extra if isinstance(metadata.extra, Mapping) else {}
    facts = extra.get("training_scale")
    if isinstance(facts, Mapping):
        return scale_from_facts(facts, metadata.dataset)
    for place in (extra, metadata.exporter):  # an explicit size from an older exporter
        explicit = _size(place.get("input_size")) if isinstance(place, Mapping) else None
        if explicit:
            return TrainingScale(explicit, 1.0, metadata.dataset, f"the model's input size, {size_text(explicit)}")
    image = dataset_image_size(metadata.dataset)
    if image is not None:
        return TrainingScale(image, 1.0, metadata.dataset,
                             f"the model's training scale, {metadata.dataset} frames {size_text(image)}")
    return TrainingScale(None, 1.0, metadata.dataset, "the model records no training scale")


# -- the rule ----------------------------------------------------------------------------------
def rule_size(frame: Size, reference: Size) -> Size:
    """``frame`` (H, W) resized so that its short side is ``reference``'s, aspect ratio kept."""
    h, w = int(frame[0]), int(frame[1])
    factor = min(reference) / min(h, w)
    return max(1, int(round(h * factor))), max(1, int(round(w * factor)))


def scaled_size(frame: Size, factor: float) -> Size:
    """``frame`` (H, W) times ``factor``, each side rounded to the nearest pixel (at least 1)."""
    return max(1, int(round(frame[0] * factor))), max(1, int(round(frame[1] * factor)))


def resize_frame(image: np.ndarray, size: Size) -> np.ndarray:
    """``image`` at ``size`` (H, W): area averaging to shrink (no aliasing), bilinear to enlarge."""
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    shrink = size[0] * size[1] < h * w
    import cv2  # here, not at the top: `build` and `check` read the rule on machines without OpenCV

    try:
        return cv2.resize(image, (int(size[1]), int(size[0])),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    except (cv2.error, MemoryError) as exc:  # OpenCV's "(-4:Insufficient memory) Failed to allocate N bytes"
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        raise FcnDeployError(f"cannot resize a {w}x{h} frame to the input size {size[1]}x{size[0]} (WxH): "
                             f"{why.split(' error: ', 1)[-1]}; choose a smaller --input-size") from None


# -- engine profiles -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """The spatial part of an optimisation profile: the (H, W) an engine accepts, and its opt."""

    min: Size
    opt: Size
    max: Size

    def contains(self, size: Size) -> bool:
        return all(lo <= s <= hi for s, lo, hi in zip(size, self.min, self.max))

    def fit(self, size: Size) -> Size:
        """``size`` moved into the profile: scaled as a whole (aspect ratio kept) to the nearest
        size inside, then clamped side by side where the profile's shape cannot hold that
        aspect ratio."""
        if self.contains(size):
            return int(size[0]), int(size[1])
        h, w = size
        down = min(self.max[0] / h, self.max[1] / w)
        up = max(self.min[0] / h, self.min[1] / w)
        if down < 1:
            h, w = math.floor(h * down), math.floor(w * down)
        elif up > 1:
            h, w = math.ceil(h * up), math.ceil(w * up)
        return (min(max(h, self.min[0]), self.max[0]), min(max(w, self.min[1]), self.max[1]))

    def describe(self) -> str:
        return f"min {size_text(self.min)}, opt {size_text(self.opt)}, max {size_text(self.max)}"

    @classmethod
    def from_nhw(cls, shapes: Mapping[str, Sequence[int]]) -> "Profile":
        """From ``{"min": (N, H, W), "opt": ..., "max": ...}``, the ``profile_shapes`` that ONNX
        Runtime's TensorRT provider is given."""
        return cls(*(  # type: ignore[arg-type]
            (int(shapes[key][1]), int(shapes[key][2])) for key in ("min", "opt", "max")
        ))

    def to_shapes(self, batch: int = 1) -> Dict[str, Tuple[int, int, int]]:
        """``{"min": (N, H, W), ...}``: what ONNX Runtime's TensorRT provider takes as ``profile_shapes``."""
        return {key: (batch,) + tuple(getattr(self, key)) for key in ("min", "opt", "max")}


def default_profile(reference: Optional[Size]) -> Profile:
    """The profile ``fcn-deploy build`` uses when not told, for a model of ``reference`` size
    (:data:`DEFAULT_SIZE` when it has none).

    It holds every size the rule gives for :data:`COMMON_CAMERAS` and the reference itself,
    from half the smallest of them to twice the largest (kept within the largest camera
    frame, unless the rule's own sizes are larger), so ``native`` on a 720p camera and a 2x
    ``--input-size`` fit too; ``opt`` is the rule's size for :data:`PROFILE_CAMERA`.
    """
    reference = reference or DEFAULT_SIZE
    sizes = [rule_size(camera, reference) for camera in COMMON_CAMERAS] + [tuple(reference)]
    cap = max(COMMON_CAMERAS)
    low = tuple(max(MIN_SIDE, min(s[axis] for s in sizes) // 2) for axis in (0, 1))
    high = tuple(
        max(max(s[axis] for s in sizes), min(2 * max(s[axis] for s in sizes), cap[axis])) for axis in (0, 1)
    )
    return Profile(low, rule_size(PROFILE_CAMERA, reference), high)  # type: ignore[arg-type]


def spatial_axes(layout: Optional[str]) -> Tuple[int, int]:
    """The (H, W) axes of a graph input in ``layout``."""
    return (1, 2) if layout in (None, LAYOUT_RAW_BGR) else (2, 3)


def profile_from_shapes(shapes: Iterable[Mapping[str, Sequence[int]]], layout: Optional[str]) -> Optional[Profile]:
    """One spatial :class:`Profile` from the optimisation profiles of one input (``{"min":
    [N, H, W, 3], "opt": ..., "max": ...}`` each, in ``layout``): the range every one of them
    accepts (an engine built with ``--contexts 2`` has one profile per context)."""
    h_axis, w_axis = spatial_axes(layout)
    found = [s for s in shapes if isinstance(s, Mapping) and all(k in s for k in ("min", "opt", "max"))]
    if not found:
        return None

    def pick(shape: Sequence[int]) -> Size:
        return int(shape[h_axis]), int(shape[w_axis])

    low = tuple(max(pick(s["min"])[a] for s in found) for a in (0, 1))
    high = tuple(min(pick(s["max"])[a] for s in found) for a in (0, 1))
    opt = pick(found[0]["opt"])
    return Profile(low, opt, high)  # type: ignore[arg-type]


def backend_profile(backend: Any) -> Optional[Profile]:
    """The sizes ``backend`` accepts: a fixed-size graph's one size, the ``profile_shapes``
    of ONNX Runtime's TensorRT provider (when the backend keeps them), a TensorRT engine's
    optimisation profile from its sidecar, or ``None`` (any size)."""
    metadata = getattr(backend, "metadata", None)
    layout = metadata.input_layout if metadata is not None else None
    h_axis, w_axis = spatial_axes(layout)
    spec = getattr(backend, "input_spec", None)
    shape = getattr(spec, "shape", ())
    if len(shape) == 4 and isinstance(shape[h_axis], int) and isinstance(shape[w_axis], int):
        fixed = (int(shape[h_axis]), int(shape[w_axis]))
        return Profile(fixed, fixed, fixed)
    given = getattr(backend, "profile_shapes", None)  # ONNX Runtime's TensorRT provider, where it keeps them
    if isinstance(given, Mapping) and all(k in given for k in ("min", "opt", "max")):
        return Profile.from_nhw(given)
    sidecar = getattr(backend, "sidecar", None)
    profiles = getattr(sidecar, "profiles", None) or []
    name = getattr(spec, "name", None)
    per_input = [p[name] if name in p else next(iter(p.values())) for p in profiles if isinstance(p, Mapping) and p]
    return profile_from_shapes(per_input, layout)


def _batch_bounds(backend: Any) -> Optional[Tuple[int, int]]:
    """``(fewest, most)`` frames ``backend`` takes in one call, or ``None`` for any batch: a
    fixed batch dimension, the batch of ONNX Runtime's TensorRT provider's ``profile_shapes``,
    or what every optimisation profile of a TensorRT engine accepts."""
    spec = getattr(backend, "input_spec", None)
    shape = getattr(spec, "shape", ())
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return int(shape[0]), int(shape[0])
    given = getattr(backend, "profile_shapes", None)
    if isinstance(given, Mapping) and "max" in given:
        return int(given["min"][0]) if "min" in given else 1, int(given["max"][0])
    sidecar = getattr(backend, "sidecar", None)
    profiles = getattr(sidecar, "profiles", None) or []
    name = getattr(spec, "name", None)
    batches = [(p[name] if name in p else next(iter(p.values()))) for p in profiles if isinstance(p, Mapping) and p]
    if not batches:
        return None
    return min(int(b["min"][0]) for b in batches), min(int(b["max"][0]) for b in batches)


def backend_batch_limit(backend: Any) -> Optional[int]:
    """The most frames ``backend`` takes in one call, or ``None`` when there is no limit."""
    bounds = _batch_bounds(backend)
    return bounds[1] if bounds else None


def backend_batch_minimum(backend: Any) -> int:
    """The fewest frames ``backend`` takes in one call (1 for any batch): a fixed batch
    dimension, or the smallest batch of the optimisation profiles (a DLA engine built with
    ``--max-batch N`` has the static batch N). A caller with fewer frames pads the batch and
    drops the padded results, as DeepStream does with a partial batch."""
    bounds = _batch_bounds(backend)
    return max(1, bounds[0]) if bounds else 1


def pad_batch(frames: np.ndarray, minimum: int) -> np.ndarray:
    """``frames`` (N x ...) with its last frame repeated up to ``minimum`` frames."""
    if len(frames) >= minimum:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], minimum - len(frames), axis=0)])


# -- what the runtime calls --------------------------------------------------------------------
def parse_input_size(text: Optional[str], option: str = "--input-size") -> InputSizeSpec:
    """``None``/``""``/``"auto"`` -> ``None`` (the rule); ``"native"``; ``"HxW"`` -> ``(H, W)``."""
    if text is None or not str(text).strip() or str(text).strip().lower() == "auto":
        return None
    value = str(text).strip().lower()
    if value == NATIVE:
        return NATIVE
    parts = value.replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise FcnDeployError(f"{option}: bad value {text!r}; expected native or HEIGHTxWIDTH, e.g. 360x640")
    if max(int(p) for p in parts) > MAX_SIDE:
        raise FcnDeployError(f"{option} {text}: at most {MAX_SIDE} pixels a side (one frame of {text} would "
                             f"take {int(parts[0]) * int(parts[1]) * 3 / 1e9:.0f} GB before the network)")
    return int(parts[0]), int(parts[1])


class InputSizer:
    """Chooses the network input size of each frame, and says once per frame size why.

    ``spec``: ``None`` for the rule, ``"native"`` for each frame's own size, ``(H, W)`` to
    force one size. ``scale``: the model's :class:`TrainingScale`. ``profile``: the sizes the
    engine accepts (``None``: any). ``own_dataset``: the frames are the model's training
    dataset's, so the rule scales them by the reference scale instead of matching the
    reference size. ``announce``: log each new decision (INFO; WARNING when a profile forces
    a change); evaluation turns it off and reports :meth:`summary` instead.
    """

    def __init__(self, spec: InputSizeSpec = None, scale: Optional[TrainingScale] = None,
                 profile: Optional[Profile] = None, own_dataset: bool = False, announce: bool = True) -> None:
        if spec is not None and spec != NATIVE and _size(spec) is None:
            raise FcnDeployError(f"input size {spec!r}: expected None, 'native' or (height, width)")
        self.spec = spec if spec in (None, NATIVE) else _size(spec)
        self.scale = scale or TrainingScale(None)
        self.profile = profile
        self.own_dataset = own_dataset
        self.announce = announce
        self._sizes: Dict[Size, Size] = {}
        if isinstance(self.spec, tuple) and profile is not None and not profile.contains(self.spec):
            raise FcnDeployError(
                f"input size {size_text(self.spec)} is outside the engine's profile ({profile.describe()}); "
                "choose a size inside it or rebuild the engine with fcn-deploy build --shapes"
            )

    @classmethod
    def for_backend(cls, backend: Any, spec: InputSizeSpec = None, profile: Optional[Profile] = None,
                    own_dataset: bool = False, announce: bool = True) -> "InputSizer":
        """The sizer for an opened backend: its metadata's training scale, and its profile
        (``profile`` where given, e.g. the one handed to ONNX Runtime's TensorRT provider)."""
        return cls(spec, training_scale(getattr(backend, "metadata", None)),
                   profile if profile is not None else backend_profile(backend), own_dataset, announce)

    @classmethod
    def for_model_file(cls, path: Any, spec: InputSizeSpec = None) -> Optional["InputSizer"]:
        """The sizer read from a model file alone (an ONNX file's metadata, an engine's sidecar
        and its profile), before any engine opens it; ``None`` where the file says nothing
        (a Triton URL, a file the backend will refuse with its own message).

        Why: ``run`` opens its sources before the model, so that a camera that will not open
        is one line at once, not after the engine choice; a GStreamer decoder that scales
        needs the input size then. The backend's sizer, made later, is the one that sizes
        frames: where it differs, the pipeline resizes on the CPU as without the decoder.
        """
        from types import SimpleNamespace

        from ..errors import FcnDeployError as _Error
        from .model_files import ENGINE, model_kind, read_metadata

        try:
            metadata = read_metadata(path)
            sidecar = None
            if model_kind(path) == ENGINE:
                from .engine_cache import read_sidecar

                sidecar = read_sidecar(path)
        except (_Error, OSError, ValueError):
            return None
        stand_in = SimpleNamespace(metadata=metadata, sidecar=sidecar)  # what backend_profile reads
        return cls(spec, training_scale(metadata), backend_profile(stand_in), announce=False)

    @property
    def uses_rule(self) -> bool:
        """True when the size follows the model's training scale (not native, not forced)."""
        return self.spec is None and self.scale.reference_size is not None

    def _wanted(self, frame: Size) -> Size:
        if isinstance(self.spec, tuple):
            return self.spec
        if not self.uses_rule:
            return frame
        if self.own_dataset:
            return scaled_size(frame, self.scale.scale)
        return rule_size(frame, self.scale.reference_size)  # type: ignore[arg-type]

    def fitted(self, frame: Size) -> Size:
        """What :meth:`size_for` gives a frame of (H, W) ``frame``, without saying it."""
        wanted = self._wanted((int(frame[0]), int(frame[1])))
        return self.profile.fit(wanted) if self.profile is not None else wanted

    def decoder_scale(self, source: Tuple[int, int]) -> Optional[Tuple[int, int]]:
        """The (width, height) a decoder that scales (GStreamer's videoscale, nvvidconv) should
        deliver a source of (width, height) ``source`` at: the input size, or None where frames
        go in at their own size (nothing to scale)."""
        height, width = self.fitted((source[1], source[0]))
        return None if (width, height) == (int(source[0]), int(source[1])) else (width, height)

    def size_for(self, frame: Size) -> Size:
        """The (H, W) to feed a frame of (H, W) ``frame`` at; never outside the profile."""
        key = (int(frame[0]), int(frame[1]))
        size = self._sizes.get(key)
        if size is None:
            wanted = self._wanted(key)
            size = self.fitted(key)
            self._sizes[key] = size
            if self.announce:
                level = logging.WARNING if size != wanted else logging.INFO
                log.log(level, "%s", self.explain(key))
        return size

    def explain(self, frame: Size) -> str:
        """One line: what a frame of (H, W) ``frame`` is fed at, and why."""
        key = (int(frame[0]), int(frame[1]))
        wanted = self._wanted(key)
        size = self.profile.fit(wanted) if self.profile is not None else wanted
        if isinstance(self.spec, tuple):
            why = f"--input-size {size_text(self.spec)}"
        elif self.spec == NATIVE:
            why = "--input-size native"
        elif self.uses_rule and self.own_dataset:
            why = f"frames of the model's training dataset, at its training scale {self.scale.scale:g}"
        elif self.uses_rule:
            why = f"{self.scale.why}; --input-size native keeps them"
        else:
            why = self.scale.why
        text = (f"{frame_text(key)} frames fed at their own size" if size == key
                else f"{frame_text(key)} frames -> input {size_text(size)} (HxW)")
        if size != wanted:
            text += (f", not {size_text(wanted)}, to fit the engine's profile ({self.profile.describe()}; "  # type: ignore[union-attr]
                     "fcn-deploy build --shapes makes another)")
        return f"{text}: {why}"

    def summary(self) -> str:
        """What the sizer does to every frame, in a few words, for reports."""
        if isinstance(self.spec, tuple):
            return f"input {size_text(self.spec)}"
        if self.spec == NATIVE or not self.uses_rule:
            return "each frame's own size"
        if self.own_dataset:
            return "each frame's own size" if self.scale.scale == 1.0 else f"each frame x {self.scale.scale:g}"
        return f"short side {min(self.scale.reference_size)}: {self.scale.why}"  # type: ignore[arg-type]


def shared_input_size(sizer: "InputSizer", frames: Sequence[Size]) -> Size:
    """One input size for frames of several streams that go into the network in one batch.

    A batch is one tensor, so its frames share a size. When the rule (or ``--input-size``)
    gives every stream's frame size the same input size, that is it: same-size cameras keep
    their aspect ratio. Otherwise streams of different sizes meet at the engine profile's
    ``opt`` size, else at the model's reference size (where its objects have the training
    scale), else at the largest frame; each stream's labels are scaled back to its own size.
    ``native`` cannot batch frames of different sizes and says so.
    """
    wanted = sorted({sizer.fitted(frame) for frame in frames})
    if len(wanted) == 1:
        return sizer.size_for(frames[0])  # said once, as for one stream
    shapes = ", ".join(frame_text(f) for f in sorted(set(frames)))
    if sizer.spec == NATIVE:
        raise FcnDeployError(
            f"--input-size native cannot batch streams of different sizes ({shapes}); give --input-size HxW"
        )
    if sizer.profile is not None:
        size, why = sizer.profile.opt, "the engine profile's opt size"
    elif sizer.scale.reference_size is not None:
        size, why = tuple(sizer.scale.reference_size), sizer.scale.why
    else:
        size, why = max(wanted, key=lambda s: s[0] * s[1]), "the largest frame"
    log.info("streams of sizes %s batched at input %s (HxW): %s; --input-size HxW sets another",
             shapes, size_text(size), why)
    return int(size[0]), int(size[1])
