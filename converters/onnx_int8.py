"""FP32 -> INT8 Q/DQ ONNX by static quantisation on real images.

TensorRT 10/11 build INT8 only from explicit QuantizeLinear/DequantizeLinear pairs (the
implicit calibrators are gone in 11), and accept only signed, symmetric INT8: zero point 0
everywhere. Hence ONNX Runtime's ``quantize_static`` with:

* QDQ format, QInt8 activations and weights, ``ActivationSymmetric`` and ``WeightSymmetric``;
* per-channel weight scales (what TensorRT uses for convolutions);
* float biases (``QuantizeBias`` off): TensorRT folds the bias in float itself and has no
  use for an INT32 DequantizeLinear;
* only the ops that profit: convolutions, matrix products, the skip additions and max pools.
  The bilinear deconvolutions and the folded pre-processing stay in float, so the input
  normalisation and the upsampling are exact.

:func:`check_symmetric_int8` then checks every zero point of the result.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from fcn_deploy.runtime.metadata import ModelMetadata

from .onnx_passes import ExportError
from .onnx_verify import graph_input

log = logging.getLogger(__name__)

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm", "Add", "MaxPool"]


def check_symmetric_int8(model: onnx.ModelProto) -> int:
    """Every Q/DQ node must use an INT8 zero point of 0; return how many Q/DQ nodes there are.

    A missing zero point would mean uint8, which TensorRT rejects as well.
    """
    inits = {i.name: i for i in model.graph.initializer}
    consts = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    count = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        count += 1
        if len(node.input) < 3 or not node.input[2]:
            raise ExportError(f"{node.op_type} {node.name} has no zero point (uint8 by default); TensorRT needs int8")
        tensor = inits.get(node.input[2]) or consts.get(node.input[2])
        if tensor is None:
            raise ExportError(f"{node.op_type} {node.name}: zero point {node.input[2]} is not a constant")
        if tensor.data_type != TensorProto.INT8:
            raise ExportError(
                f"{node.op_type} {node.name}: zero point is {TensorProto.DataType.Name(tensor.data_type)}, not INT8"
            )
        if np.any(numpy_helper.to_array(tensor) != 0):
            raise ExportError(f"{node.op_type} {node.name}: non-zero zero point; TensorRT needs symmetric INT8")
    if count == 0:
        raise ExportError("quantisation inserted no Q/DQ nodes")
    return count


def _reader(frames: Sequence[np.ndarray], input_name: str, metadata: ModelMetadata,
            progress: Callable[[Iterable], Iterable]):
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        """Feeds one calibration frame at a time, in the graph's own input layout."""

        def __init__(self) -> None:
            self._frames = iter(progress(frames))

        def get_next(self):
            frame = next(self._frames, None)
            if frame is None:
                return None
            return {input_name: graph_input(frame[None], metadata)}

    return FrameReader()


class _QuietQuantizer(logging.Filter):
    """onnxruntime.quantization logs every bias copy on the root logger, and advises a
    pre-processing step that the export has already done (simplification, shape inference)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return record.levelno >= logging.ERROR or not (
            text.startswith("Created a copy of") or text.startswith("Please consider")
        )


@contextlib.contextmanager
def _quiet_root_logger():
    # A logger's own filters see exactly the records logged on it: here, the root logger.
    quiet, root = _QuietQuantizer(), logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def quantize_int8(
    model: onnx.ModelProto,
    frames: Sequence[np.ndarray],
    metadata: ModelMetadata,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    exclude_nodes: Sequence[str] = (),
) -> onnx.ModelProto:
    """Symmetric per-channel INT8 Q/DQ copy of FP32 ``model``, calibrated on BGR uint8 ``frames``.

    ``progress`` wraps the frame iterator (the CLI passes a tqdm bar; library code stays
    silent). ``exclude_nodes`` names nodes left in float.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not frames:
        raise ExportError("INT8 quantisation needs calibration images")
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="fcn-deploy-int8-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save_model(model, src)
        try:
            with _quiet_root_logger():
                quantize_static(
                    src,
                    dst,
                    _reader(frames, input_name, metadata, progress),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=QUANTIZED_OPS,
                    nodes_to_exclude=list(exclude_nodes),
                    extra_options={
                        "ActivationSymmetric": True,
                        "WeightSymmetric": True,
                        "QuantizeBias": False,
                        # Not "CalibMaxIntermediateOutputs": in onnxruntime 1.32 it drops the
                        # ranges collected so far instead of merging them. MinMax keeps only
                        # per-tensor minima and maxima per frame anyway.
                    },
                )
        except ExportError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"INT8 quantisation failed: {type(exc).__name__}: {first}") from None
        quantized = onnx.load_model(dst)
    count = check_symmetric_int8(quantized)
    log.info("int8: %d Q/DQ nodes, all zero points 0", count)
    return quantized
