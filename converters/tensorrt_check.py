"""What TensorRT's ONNX parser would refuse, found where the ONNX is written: no TensorRT, no GPU.

No machine that writes an ONNX here can run TensorRT, and a graph the parser refuses is
otherwise only found on the Jetson. So :func:`check_onnx` reads the graph and applies, per
release, what the parser of that release accepts:

* **operators**: each release's operator support matrix (onnx-tensorrt ``docs/operators.md``,
  shipped as data in :mod:`fcn_deploy.converters.tensorrt_operators`). TensorRT 10 and 11 are checked
  against the 10.0 matrix, the nearest published (JetPack 6.1/6.2 carry 10.3). Operators from
  other domains (``com.microsoft`` ...) are not ONNX operators to the parser: it imports them
  only as plugins of that name.
* **data types**: the types the matrix lists apply to an operator's data inputs, the inputs
  that share the first input's type constraint in the ONNX schema (or the output's): not a
  Reshape's ``shape``, a Slice's ``starts`` or a Gather's ``indices``, which the parser reads
  as shape values. The matrices' notes say the parser narrows INT64 to INT32 (8.x) and DOUBLE
  to FLOAT before an operator sees them, so those count as the narrower type. A Cast checks
  both its source and its target type; a Constant or ConstantOfShape the type it makes.
* **UINT8** (parser code and TensorRT's ``DataType`` documentation, not the matrices):
  UINT8 exists only at the network's boundary. A UINT8 tensor may only go into a Cast to FP32
  or FP16 (everywhere: "use the IdentityLayer to convert uint8 network-level inputs"), a Cast
  to UINT8 only comes from FP32 or FP16 (8.5's Cast importer asserts both), and from 8.6 on
  ``ModelImporter.cpp`` refuses any node whose UINT8 output is not a graph output ("TensorRT
  does not support UINT8 types for intermediate tensors!"). So a uint8 camera frame must go
  straight into a Cast: even a Transpose of it before the Cast is refused.
* **initializer inputs**: where a matrix restriction says an input "must be an initializer"
  (or "a constant tensor"), that input, found by name in the ONNX schema at the graph's opset,
  must be a graph initializer or a Constant node's output (the parser imports both as weights).
* **Q/DQ**: symmetric INT8 only: every QuantizeLinear/DequantizeLinear needs a zero point of 0
  whose type the DequantizeLinear row lists (INT8; 10.0 adds FP8 and INT4; never UINT8, which
  is also ONNX's type when the zero point is left out, and which 8.x refuses outright), and
  positive scales (``QuantDequantLinearHelper`` in ``builtin_op_importers.cpp``; the DLA-only
  parser flag that admits asymmetric UINT8 is not one ``fcn-deploy build`` sets).
* **opset**: the range each matrix's header names (up to 17 for 8.5 and 8.6; 9 to 20 for 10.0).
* **restrictions** the matrices state about attributes: Resize modes, pooling rank and
  dilations, MaxPool's ``Indices`` output, ScatterND's ``reduction``.

With ``dla=True`` :mod:`fcn_deploy.converters.tensorrt_dla` adds the DLA's rules.

The check is conservative for 11 (a later parser accepts a few more things, such as UINT8
constants) and covers the top-level graph; If/Loop bodies are not entered.

:func:`check_onnx` returns a :class:`CheckReport`; :func:`require_tensorrt_conformance` raises
one :class:`TensorRTConformanceError` line for ``export`` and ``build`` to stop on.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from fcn_deploy.errors import FcnDeployError

from .tensorrt_dla import DLA_RELEASES, check_dla
from .tensorrt_graph import Graph, load_model
from .tensorrt_report import ERROR, MATRIX, RELEASES, CheckReport, Problem
from .tensorrt_rules import PARSER_RULES, Finding


class TensorRTConformanceError(FcnDeployError):
    """The ONNX uses something the TensorRT parser of a supported release refuses."""


def parse_releases(values: Optional[Iterable[str]]) -> Optional[Tuple[str, ...]]:
    """``["8.6,10", "11"]`` (``--tensorrt``, repeatable or comma-separated) -> ``("8.6", "10", "11")``
    in :data:`RELEASES` order; ``None`` when nothing was given. ``10.3`` means 10, ``11.0`` 11."""
    given = [v.strip() for value in (values or ()) for v in str(value).split(",") if v.strip()]
    if not given:
        return None
    chosen = set()
    for value in given:
        release = value if value in RELEASES else None
        if release is None and re.fullmatch(r"(1[01])(\.\d+)*", value):
            release = value.split(".")[0]
        if release is None and re.fullmatch(r"8\.[56](\.\d+)*", value):
            release = value[:3]
        if release is None:
            raise FcnDeployError(f"--tensorrt {value}: choose from {', '.join(RELEASES)}")
        chosen.add(release)
    return tuple(r for r in RELEASES if r in chosen)


def release_for_version(version: Sequence[int]) -> str:
    """The release whose rules apply to a running TensorRT ``(major, minor)``: 8.6.x -> ``8.6``,
    earlier 8.x -> ``8.5``, 9.x and 10.x -> ``10``, 11 and later -> ``11``."""
    major, minor = int(version[0]), int(version[1]) if len(version) > 1 else 0
    if major >= 11:
        return "11"
    if major >= 9:
        return "10"
    return "8.6" if (major, minor) >= (8, 6) else "8.5"


def profile_for(model: Any, shapes: Sequence[str]) -> Dict[str, Dict[str, List[int]]]:
    """The optimisation profile ``--shapes`` values give for ``model``'s inputs, checked against
    the graph as ``fcn-deploy build`` checks it (:func:`converters.tensorrt_shapes.resolve_profile`)."""
    from fcn_deploy.runtime.metadata import ModelMetadata, has_fcn_deploy_metadata

    from .tensorrt_shapes import resolve_profile

    props = {p.key: p.value for p in model.metadata_props}
    metadata = ModelMetadata.from_props(props) if has_fcn_deploy_metadata(props) else None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [
        (value.name, tuple(
            int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim
        ))
        for value in model.graph.input if value.name not in initializers
    ]
    return resolve_profile(inputs, metadata, list(shapes))


def merge(findings: Iterable[Finding], graph: Graph, releases: Sequence[str], severity: str = ERROR) -> List[Problem]:
    """One :class:`Problem` per distinct message, naming every release it applies to, in the
    order first found (graph-level problems first)."""
    merged: Dict[Tuple[str, Optional[int], str, bool], Set[str]] = {}
    for found_releases, rule, index, message, from_matrix in findings:
        merged.setdefault((rule, index, message, from_matrix), set()).update(found_releases)
    problems = []
    ordered = sorted(merged.items(), key=lambda item: -1 if item[0][1] is None else item[0][1])
    for (rule, index, message, from_matrix), found in ordered:
        node = graph.nodes[index] if index is not None else None
        problems.append(Problem(
            releases=tuple(r for r in releases if r in found),
            rule=rule,
            message=message,
            node=node.name if node is not None else "",
            op_type=node.op_type if node is not None else "",
            severity=severity,
            from_matrix=from_matrix,
        ))
    return problems


def check_onnx(
    model: Union[Any, str, "os.PathLike[str]"],
    releases: Optional[Sequence[str]] = None,
    *,
    dla: bool = False,
    profile: Optional[Mapping[str, Mapping[str, Sequence[int]]]] = None,
    gpu_fallback: bool = True,
    label: Optional[str] = None,
) -> CheckReport:
    """Check ``model`` (an ``onnx.ModelProto`` or a path) against TensorRT's ONNX parser.

    ``releases``: some of :data:`RELEASES` (default: all; with ``dla``, those that have a DLA,
    :data:`converters.tensorrt_dla.DLA_RELEASES`). ``dla``: add the DLA's rules; ``profile``
    is the optimisation profile ``{input: {"min": [...], "opt": [...], "max": [...]}}``
    (:func:`converters.tensorrt_shapes.resolve_profile`), which the DLA needs static; layers
    the DLA cannot run are notes with ``gpu_fallback`` (as ``fcn-deploy build --dla`` builds),
    errors without. ``label`` names the model in the lines (default: the file's name).
    """
    if not isinstance(model, (str, os.PathLike)):
        proto, default_label = model, ""
    else:
        proto, default_label = load_model(model), os.path.basename(os.fspath(model))
    if releases is None:
        if dla:
            releases = DLA_RELEASES
        else:
            releases = RELEASES
    unknown = [r for r in releases if r not in RELEASES]
    if unknown or not releases:
        raise FcnDeployError(
            f"unknown TensorRT release {', '.join(map(str, unknown)) or '(none given)'}; choose from {', '.join(RELEASES)}"
        )
    releases = tuple(r for r in RELEASES if r in set(releases))
    graph = Graph(proto)
    findings: List[Finding] = []
    for rule in PARSER_RULES:
        findings.extend(rule(graph, releases))
    problems = merge(findings, graph, releases)
    if dla:
        problems += check_dla(graph, releases, profile, gpu_fallback)
    return CheckReport(
        releases=releases,
        opset=graph.opset,
        nodes=len(graph.nodes),
        problems=problems,
        label=default_label if label is None else label,
        dla=dla,
    )


def require_tensorrt_conformance(
    model: Union[Any, str, "os.PathLike[str]"],
    releases: Optional[Sequence[str]] = None,
    *,
    dla: bool = False,
    profile: Optional[Mapping[str, Mapping[str, Sequence[int]]]] = None,
    gpu_fallback: bool = True,
    label: Optional[str] = None,
) -> CheckReport:
    """:func:`check_onnx`, raising one :class:`TensorRTConformanceError` line when any release
    refuses the graph (for ``export`` before it writes and ``build`` before TensorRT parses)."""
    report = check_onnx(model, releases, dla=dla, profile=profile, gpu_fallback=gpu_fallback, label=label)
    if not report.ok:
        raise TensorRTConformanceError(report.error_summary())
    return report


__all__ = [
    "CheckReport",
    "Graph",
    "MATRIX",
    "Problem",
    "RELEASES",
    "TensorRTConformanceError",
    "check_onnx",
    "load_model",
    "parse_releases",
    "profile_for",
    "release_for_version",
    "require_tensorrt_conformance",
]
