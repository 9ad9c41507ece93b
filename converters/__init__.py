"""Converters: PyTorch -> ONNX and ONNX passes (simplify, FP16, INT8 Q/DQ), later ONNX -> TensorRT.

Modules, one job each:

* :mod:`converters.onnx_export`: resolve a model name/checkpoint, trace it with the
  pre-processing and arg-max folded in, check and write it (``fcn-deploy export``);
* :mod:`converters.onnx_passes`: graph hygiene (plain dynamic dims, IR version, onnxslim,
  checker, metadata, atomic save);
* :mod:`converters.onnx_fp16`: float16 graphs with float32 I/O;
* :mod:`converters.onnx_int8`: symmetric INT8 Q/DQ from calibration images;
* :mod:`converters.calibration`: calibration images from a folder or a dataset;
* :mod:`converters.onnx_verify`: run an exported graph in ONNX Runtime;
* :mod:`converters.compare`: ONNX against PyTorch or another ONNX (``fcn-deploy compare``).

Nothing is imported here, so importing one converter does not pull in the others' tools.
"""
