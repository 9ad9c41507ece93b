"""Optimisation-profile shapes for ``fcn-deploy build``: parsing ``--shapes`` and the defaults.

A TensorRT engine built from an ONNX with dynamic dimensions needs, for every dynamic input,
the smallest, the typical and the largest shape it will see (``min``/``opt``/``max``):
TensorRT tunes its kernels for ``opt`` and accepts anything between ``min`` and ``max``.

``--shapes`` takes ``[NAME:]min=1x3x256x256,opt=1x3x512x512,max=1x3x1024x1024`` (the input
name may be left out when the graph has one dynamic input), or ``[NAME:]1x3x512x512`` for one
fixed shape. Without it the shapes come from the model's metadata (:func:`default_profile`).

Pure Python: no TensorRT, no onnx; tested everywhere.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from fcn_deploy.errors import FcnDeployError
from fcn_deploy.runtime.input_size import DEFAULT_SIZE, training_scale
from fcn_deploy.runtime.input_size import default_profile as spatial_profile
from fcn_deploy.runtime.metadata import LAYOUT_RAW_BGR, ModelMetadata

Shape = Tuple[int, ...]
Dim = Optional[int]  # None: dynamic
KEYS = ("min", "opt", "max")

# The typical frame when the metadata names none: CamVid's 480x360, what the bundled model
# is trained on.
DEFAULT_OPT_HW = DEFAULT_SIZE


class ShapeError(FcnDeployError):
    """A ``--shapes`` value that cannot be used."""


def parse_shape(text: str) -> Shape:
    """``"1x3x512x512"`` -> ``(1, 3, 512, 512)``; every dimension a positive integer."""
    text = text.strip()
    parts = text.lower().split("x")
    if not text or any(not p.strip().isdigit() for p in parts):
        raise ShapeError(f"bad shape {text!r}: expected positive integers joined by 'x', e.g. 1x3x512x512")
    dims = tuple(int(p) for p in parts)
    if any(d < 1 for d in dims):
        raise ShapeError(f"bad shape {text!r}: every dimension must be at least 1")
    return dims


_NAMED = re.compile(r"^(?:(?P<name>.+?):)?(?P<spec>(?:min|opt|max)=.*)$", re.IGNORECASE)
_NAMED_FIXED = re.compile(r"^(?:(?P<name>.+):)?(?P<spec>[0-9xX ]+)$")


def parse_shapes_arg(text: str) -> Tuple[Optional[str], Dict[str, Shape]]:
    """One ``--shapes`` value -> ``(input name or None, {"min": ..., "opt": ..., "max": ...})``."""
    text = text.strip()
    match = _NAMED.match(text)
    if match is None:
        fixed = _NAMED_FIXED.match(text)
        if fixed is None:
            raise ShapeError(
                f"bad --shapes {text!r}: expected [NAME:]min=AxBxCxD,opt=...,max=... or [NAME:]AxBxCxD"
            )
        shape = parse_shape(fixed.group("spec"))
        return fixed.group("name"), {key: shape for key in KEYS}
    shapes: Dict[str, Shape] = {}
    for item in match.group("spec").split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in KEYS:
            raise ShapeError(f"bad --shapes item {item.strip()!r} in {text!r}: expected min=..., opt=... or max=...")
        if key in shapes:
            raise ShapeError(f"--shapes {text!r} gives {key} twice")
        shapes[key] = parse_shape(value)
    missing = [k for k in KEYS if k not in shapes]
    if missing:
        raise ShapeError(f"--shapes {text!r} lacks {', '.join(missing)} (give min, opt and max, or one fixed shape)")
    check_profile(shapes, text)
    return match.group("name"), shapes


def check_profile(shapes: Mapping[str, Shape], where: str) -> None:
    """Same rank for min/opt/max, and min <= opt <= max on every axis."""
    ranks = {len(shapes[k]) for k in KEYS}
    if len(ranks) != 1:
        raise ShapeError(f"{where}: min, opt and max have different ranks")
    for axis, (lo, mid, hi) in enumerate(zip(*(shapes[k] for k in KEYS))):
        if not lo <= mid <= hi:
            raise ShapeError(f"{where}: axis {axis} needs min <= opt <= max, got {lo}, {mid}, {hi}")


def _spatial_axes(layout: str) -> Tuple[int, int]:
    return (1, 2) if layout == LAYOUT_RAW_BGR else (2, 3)


def typical_size(metadata: Optional[ModelMetadata]) -> Tuple[int, int]:
    """The (H, W) the model is meant to run at: its reference size (the training scale, see
    :mod:`fcn_deploy.runtime.input_size`), else the INT8 calibration frames' size, else
    :data:`DEFAULT_OPT_HW`."""
    reference = training_scale(metadata).reference_size
    if reference is not None:
        return reference
    calibration = metadata.extra.get("calibration") if metadata is not None and isinstance(metadata.extra, Mapping) else None
    size = calibration.get("size") if isinstance(calibration, Mapping) else None
    if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    return DEFAULT_OPT_HW


def default_profile(dims: Sequence[Dim], metadata: Optional[ModelMetadata], max_batch: int = 1) -> Dict[str, Shape]:
    """min/opt/max for one input of declared ``dims`` (``None`` for dynamic).

    Fixed dimensions stay as declared. A dynamic batch is 1 to ``max_batch``, optimised for
    ``max_batch`` (one camera runs frame by frame; N cameras batched by the runtime run N at
    a time: ``fcn-deploy build --max-batch N``). Dynamic H and W (placed by the metadata's input layout)
    cover what the runtime's input-size rule gives for common cameras and the model's
    typical size (:func:`fcn_deploy.runtime.input_size.default_profile`), so the runtime
    never has to ask the engine for a size outside it.
    """
    layout = metadata.input_layout if metadata is not None else None
    h_axis, w_axis = _spatial_axes(layout) if layout else (len(dims) - 2, len(dims) - 1)
    spatial = spatial_profile(typical_size(metadata))
    per_axis = {h_axis: 0, w_axis: 1}
    shapes: Dict[str, List[int]] = {k: [] for k in KEYS}
    for axis, dim in enumerate(dims):
        if dim is not None:
            lo = mid = hi = int(dim)
        elif axis in per_axis:
            lo, mid, hi = (getattr(spatial, key)[per_axis[axis]] for key in KEYS)
        elif axis == 0:
            lo, mid, hi = 1, max_batch, max_batch
        else:
            raise ShapeError(
                f"cannot choose a default size for dynamic axis {axis} of an input {_dims_text(dims)}; give --shapes"
            )
        for key, value in zip(KEYS, (lo, mid, hi)):
            shapes[key].append(value)
    return {k: tuple(v) for k, v in shapes.items()}


def _dims_text(dims: Sequence[Dim]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def resolve_profile(
    inputs: Sequence[Tuple[str, Sequence[Dim]]],
    metadata: Optional[ModelMetadata],
    shapes_args: Sequence[str] = (),
    max_batch: int = 1,
) -> Dict[str, Dict[str, List[int]]]:
    """One optimisation profile: ``{input name: {"min": [...], "opt": [...], "max": [...]}}``
    for every dynamic input among ``inputs`` (name, declared dims), from ``--shapes`` where
    given, else from the defaults (batch up to ``max_batch``). Checks rank and fixed
    dimensions against the graph."""
    if max_batch < 1:
        raise ShapeError(f"--max-batch must be at least 1, not {max_batch}")
    dynamic = [(name, list(dims)) for name, dims in inputs if any(d is None for d in dims)]
    names = [name for name, _ in inputs]
    given: Dict[str, Dict[str, Shape]] = {}
    for text in shapes_args:
        name, shapes = parse_shapes_arg(text)
        if name is None:
            if len(dynamic) != 1:
                raise ShapeError(
                    f"--shapes {text!r} names no input, but the graph has {len(dynamic)} dynamic inputs "
                    f"({', '.join(n for n, _ in dynamic) or 'none'}); write NAME:min=..."
                )
            name = dynamic[0][0]
        if name not in names:
            raise ShapeError(f"--shapes names input {name!r}; the graph's inputs are {', '.join(names)}")
        if name in given:
            raise ShapeError(f"--shapes gives input {name!r} twice")
        given[name] = shapes
    profile: Dict[str, Dict[str, List[int]]] = {}
    for name, dims in inputs:
        if name not in given and all(d is not None for d in dims):
            continue
        shapes = given.get(name) or default_profile(dims, metadata, max_batch)
        for key in KEYS:
            shape = shapes[key]
            if len(shape) != len(dims):
                raise ShapeError(
                    f"--shapes {key} {'x'.join(map(str, shape))} has rank {len(shape)}; input {name} is "
                    f"{_dims_text(dims)} (rank {len(dims)})"
                )
            for axis, (s, d) in enumerate(zip(shape, dims)):
                if d is not None and s != d:
                    raise ShapeError(
                        f"--shapes {key} {'x'.join(map(str, shape))}: axis {axis} of input {name} is fixed at {d}"
                    )
        profile[name] = {key: [int(v) for v in shapes[key]] for key in KEYS}
    return profile


def profile_text(profile: Mapping[str, Mapping[str, Sequence[int]]]) -> str:
    """``{"frames": {...}}`` -> ``"frames: min=1x180x240x3 opt=... max=..."`` for messages."""
    return "; ".join(
        f"{name}: " + " ".join(f"{k}={'x'.join(str(v) for v in shapes[k])}" for k in KEYS)
        for name, shapes in profile.items()
    ) or "fixed shapes"
