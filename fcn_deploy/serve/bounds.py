"""The largest request ``fcn-deploy serve`` takes: batch and frame size, from the model.

A server that allocates whatever a request declares can be stopped by one request (Triton 2.51
aborted with ``std::bad_alloc`` on a JSON request declaring ``[1, 100000, 100000, 3]``). The
bound comes from the model, as the user would state it:

* **batch**: ``--max-batch`` (Triton's ``max_batch_size``, which Triton itself enforces), and at
  most a TensorRT engine's profile maximum;
* **frame** (height and width, each): a TensorRT engine's optimisation-profile maximum (it
  accepts nothing larger), a fixed-size graph's own size, else :data:`FRAME_FACTOR` times the
  long side of the model's reference size (its training scale,
  :func:`fcn_deploy.runtime.input_size.training_scale`; CamVid's 360x480 gives 1920), else
  that factor times :data:`~fcn_deploy.runtime.input_size.DEFAULT_SIZE`'s long side. Clients
  resize frames to the reference scale before sending them (the runtime's input-size rule
  gives 360x640 for a 1080p camera and a CamVid model), so four times the training scale
  leaves room for native-size frames of common cameras while a request needing gigabytes is
  refused. ``--max-frame HxW`` overrides it.

Both are checked twice: by the front door of ``fcn-deploy serve`` before Triton reads the
request (:mod:`fcn_deploy.serve.gate`), and again by the model (:mod:`~.triton_model`)
before the backend runs it.

Torch-free and Python 3.8-compatible, as the model imports it inside Triton's stub.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

FRAME_FACTOR = 4


@dataclass(frozen=True)
class InputBounds:
    """The largest batch and frame (height, width) one request may carry."""

    max_batch: int
    max_height: int
    max_width: int
    why: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"max_batch": self.max_batch, "max_height": self.max_height, "max_width": self.max_width,
                "why": self.why}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "InputBounds":
        return cls(int(d["max_batch"]), int(d["max_height"]), int(d["max_width"]), str(d.get("why", "")))

    def max_elements(self) -> int:
        """Values in the largest request: a full batch of the largest 3-channel frames."""
        return self.max_batch * self.max_height * self.max_width * 3

    def describe(self) -> str:
        return f"batch <= {self.max_batch}, frame <= {self.max_height}x{self.max_width}"

    def refuse(self, shape: Sequence[int], layout: Optional[str]) -> Optional[str]:
        """Why a request of ``shape`` (batch first, in the graph's ``layout``) is refused, or ``None``."""
        from ..runtime.input_size import spatial_axes

        h_axis, w_axis = spatial_axes(layout)
        if len(shape) != 4:
            return f"expected a 4-D batch of frames, got shape {list(shape)}"
        if any(int(d) < 1 for d in shape):
            return f"shape {list(shape)} has an empty or negative dimension"
        batch, height, width = int(shape[0]), int(shape[h_axis]), int(shape[w_axis])
        if batch > self.max_batch or height > self.max_height or width > self.max_width:
            return (f"shape {list(shape)} is larger than this server takes ({self.describe()}; "
                    "fcn-deploy serve --max-batch / --max-frame set it)")
        return None


def parse_frame(text: str) -> Tuple[int, int]:
    """``"1080x1920"`` (height x width) -> ``(1080, 1920)``; ValueError otherwise."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--max-frame must be HEIGHTxWIDTH in pixels, e.g. 1080x1920, not {text!r}")
    return int(parts[0]), int(parts[1])


def model_bounds(model_path: str, metadata: Any, max_batch: int, max_frame: Optional[Tuple[int, int]] = None) -> InputBounds:
    """The bounds for ``model_path`` (see the module docstring)."""
    if max_frame is not None:
        return InputBounds(max_batch, max_frame[0], max_frame[1], "--max-frame")
    from ..runtime.input_size import DEFAULT_SIZE, profile_from_shapes, size_text, training_scale

    layout = getattr(metadata, "input_layout", None)
    if str(model_path).endswith((".engine", ".plan")):
        from ..runtime.engine_cache import read_sidecar

        shapes = [next(iter(p.values())) for p in read_sidecar(model_path).profiles if isinstance(p, dict) and p]
        profile = profile_from_shapes(shapes, layout)
        if profile is not None:
            batches = [int(s["max"][0]) for s in shapes if isinstance(s, dict) and s.get("max")]
            batch = min([max_batch] + batches)
            return InputBounds(batch, profile.max[0], profile.max[1], "the engine's optimisation profile")
    reference = training_scale(metadata).reference_size
    base = reference or DEFAULT_SIZE
    side = FRAME_FACTOR * max(base)
    what = f"training scale {size_text(base)}" if reference else f"no training scale; default {size_text(base)}"
    return InputBounds(max_batch, side, side, f"{FRAME_FACTOR} x the long side of the model's {what}")
