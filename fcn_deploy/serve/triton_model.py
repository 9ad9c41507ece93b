"""The Triton Python-backend model that ``fcn-deploy serve`` hosts: our own backends, inside Triton.

``fcn-deploy serve`` copies this file to ``REPO/NAME/1/model.py``. Triton's Python backend runs
it in its stub process (``triton_python_backend_stub``, the Python of the ``fcn-deploy`` that
started the server), and Triton's dynamic batcher hands :meth:`TritonPythonModel.execute` the
requests it has gathered; the ones with the same frame size are stacked into one batch for the
backend (ONNX Runtime, or TensorRT for an engine), which is where batching pays.

Tensors cross the stub through DLPack (``np.from_dlpack`` on the request's tensor,
``pb_utils.Tensor.from_dlpack`` for the answer), never through the stub's own numpy
conversions (``as_numpy()``, ``pb_utils.Tensor(name, array)``): those are compiled against
numpy 1.x, and with numpy 2 in the model's Python they hand back empty tensors (measured with
Triton 2.51's stub: ``as_numpy`` fails with "cannot reshape array of size 0"). DLPack is an ABI
that does not depend on numpy's, so the model runs in the very environment fcn-deploy is
installed in, numpy 1.x or 2.x.

The model config's ``parameters`` say what to open: ``fcn_deploy_model_path``,
``fcn_deploy_device`` and ``fcn_deploy_threads``.
"""
import json
from typing import Any, Dict, List

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


def _from_triton(tensor: Any) -> np.ndarray:
    if hasattr(np, "from_dlpack"):
        return np.from_dlpack(tensor)
    return tensor.as_numpy()  # numpy < 1.22 has no DLPack; the stub's own path works with numpy 1.x


def _to_triton(name: str, array: np.ndarray) -> Any:
    array = np.ascontiguousarray(array)
    if hasattr(array, "__dlpack__"):
        return pb_utils.Tensor.from_dlpack(name, array)
    return pb_utils.Tensor(name, array)


class TritonPythonModel:
    """Triton's Python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args: Dict[str, str]) -> None:
        from fcn_deploy.runtime.backends import open_backend

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        options: Dict[str, Any] = {}
        if params.get("fcn_deploy_threads"):
            options["threads"] = int(params["fcn_deploy_threads"])
        self.backend = open_backend(params["fcn_deploy_model_path"], params.get("fcn_deploy_device") or "cpu",
                                    **options)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests: List[Any]) -> List[Any]:
        responses: List[Any] = [None] * len(requests)
        arrays: Dict[int, np.ndarray] = {}
        groups: Dict[tuple, List[int]] = {}
        for i, request in enumerate(requests):
            try:
                array = _from_triton(pb_utils.get_input_tensor_by_name(request, self.input_name))
            except Exception as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"bad input: {exc}"))
                continue
            arrays[i] = array
            groups.setdefault((array.dtype.str,) + tuple(array.shape[1:]), []).append(i)
        for members in groups.values():
            try:
                batch = np.concatenate([arrays[i] for i in members]) if len(members) > 1 else arrays[members[0]]
                output = self.backend.run_graph(batch)
            except Exception as exc:  # one line back to the client; the server keeps serving
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
                continue
            start = 0
            for i in members:
                count = arrays[i].shape[0]
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[_to_triton(self.output_name, output[start:start + count])])
                start += count
        return responses

    def finalize(self) -> None:
        self.backend.close()
