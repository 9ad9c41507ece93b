"""The deployment runtime: backends, video sources and sinks, the pipeline, visualisation.

Never imports torch: it runs on a Jetson with only TensorRT or a CPU box with only ONNX
Runtime. Engines (onnxruntime, tensorrt) are imported only when a backend is opened.
"""
