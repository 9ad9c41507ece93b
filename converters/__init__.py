"""Converters: PyTorch -> ONNX, ONNX passes (simplify, FP16, INT8 Q/DQ), ONNX -> TensorRT.

Modules, one job each:

* :mod:`converters.resolve`: what ``--model`` names (bundled model, checkpoint, zoo name) as
  a network with what is known about its weights;
* :mod:`converters.deploy_graph`: the network with the pre-processing and arg-max folded in;
* :mod:`converters.onnx_export`: trace, check and write it (``fcn-deploy export``);
* :mod:`converters.onnx_passes`: graph hygiene (plain dynamic dims, IR version, onnxslim,
  checker, metadata, atomic save);
* :mod:`converters.onnx_rewrites`: exact rewrites that make the graph cheaper;
* :mod:`converters.onnx_fp16`: float16 graphs with float32 I/O;
* :mod:`converters.onnx_int8`: INT8 Q/DQ from calibration images;
* :mod:`converters.calibration`: calibration images from a folder or a dataset;
* :mod:`converters.onnx_verify`: run an exported graph in ONNX Runtime;
* :mod:`converters.compare`: ONNX against PyTorch or another ONNX (``fcn-deploy compare``);
* :mod:`converters.tensorrt_check`: what TensorRT's ONNX parser of each release would refuse,
  without TensorRT (``fcn-deploy check``), with :mod:`converters.tensorrt_dla` for the DLA's
  rules and :mod:`converters.tensorrt_operators`, the parser's operator matrices as data;
* :mod:`converters.tensorrt_shapes`: optimisation profiles;
* :mod:`converters.tensorrt_build`: ONNX -> TensorRT engine with its sidecar (``fcn-deploy build``).

Nothing is imported here, so importing one converter does not pull in the others' tools.
"""
