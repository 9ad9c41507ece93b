"""Converters: PyTorch -> ONNX, ONNX passes (simplify, FP16, INT8 Q/DQ), ONNX -> TensorRT.

Modules, one job each:

* :mod:`fcn_deploy.converters.resolve`: what ``--model`` names (bundled model, checkpoint, zoo name) as
  a network with what is known about its weights;
* :mod:`fcn_deploy.converters.deploy_graph`: the network with the pre-processing and arg-max folded in;
* :mod:`fcn_deploy.converters.onnx_export`: trace, check and write it (``fcn-deploy export``);
* :mod:`fcn_deploy.converters.onnx_passes`: graph hygiene (plain dynamic dims, IR version, onnxslim,
  checker, metadata, atomic save);
* :mod:`fcn_deploy.converters.onnx_rewrites`: exact rewrites that make the graph cheaper;
* :mod:`fcn_deploy.converters.onnx_fp16`: float16 graphs with float32 I/O;
* :mod:`fcn_deploy.converters.onnx_int8`: INT8 Q/DQ from calibration images;
* :mod:`fcn_deploy.converters.calibration`: calibration images from a folder or a dataset;
* :mod:`fcn_deploy.converters.onnx_verify`: run an exported graph in ONNX Runtime;
* :mod:`fcn_deploy.converters.compare`: ONNX against PyTorch or another ONNX (``fcn-deploy compare``);
* :mod:`fcn_deploy.converters.tensorrt_check`: what TensorRT's ONNX parser of each release would refuse,
  without TensorRT (``fcn-deploy check``), with :mod:`fcn_deploy.converters.tensorrt_dla` for the DLA's
  rules and :mod:`fcn_deploy.converters.tensorrt_operators`, the parser's operator matrices as data;
* :mod:`fcn_deploy.converters.tensorrt_shapes`: optimisation profiles;
* :mod:`fcn_deploy.converters.tensorrt_build`: ONNX -> TensorRT engine with its sidecar (``fcn-deploy build``).

Nothing is imported here, so importing one converter does not pull in the others' tools.
"""
