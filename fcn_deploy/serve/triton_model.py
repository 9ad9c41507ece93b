"""The Triton Python-backend model that ``fcn-deploy serve`` hosts: our own backends, inside Triton.

``fcn-deploy serve`` copies this file to ``REPO/NAME/1/model.py`` and writes its settings beside
it (``REPO/NAME/1/serve.json``, :func:`fcn_deploy.serve.server.write_python_model`). Triton's
Python backend runs it in its stub process, and Triton's dynamic batcher hands
:meth:`TritonPythonModel.execute` the requests it has gathered; the ones with the same frame
size are stacked into one batch for the backend (ONNX Runtime, or TensorRT for an engine),
which is where batching pays.

**Which Python packages the stub sees.** The stub (``triton_python_backend_stub``) embeds the
libpython of the interpreter that runs ``fcn-deploy``, but it starts that interpreter
*isolated* (pybind11's ``PyConfig_InitIsolatedConfig``): ``PYTHONPATH`` and the user's site are
ignored, and because the stub is not inside a virtual environment, its ``sys.path`` is the
base interpreter's alone. From a venv, or with fcn-deploy installed editable (whose modules
are found by an import hook that a ``.pth`` file installs), neither onnxruntime nor
fcn_deploy could be imported. So the server records its own interpreter's ``sys.path`` and
site folders in ``serve.json``, and :func:`adopt_python` below makes the stub's ``sys.path``
that one *before anything else is imported* (the stub imports this module first, then
``triton_python_backend_utils``, which already needs numpy). Site folders go through
:func:`site.addsitedir`, which runs their ``.pth`` files: that is what installs an editable
install's import hook. The base interpreter's own site-packages are dropped unless the
serving interpreter had them (a venv made with ``--system-site-packages``), so the model sees
exactly the packages ``fcn-deploy`` itself sees, never the system interpreter's.
(Triton's other way, ``EXECUTION_ENV_PATH``, does not help: it sources a venv's ``activate``
script, which an isolated interpreter ignores.)

**Tensors** cross the stub through DLPack (``np.from_dlpack`` on the request's tensor,
``pb_utils.Tensor.from_dlpack`` for the answer), never through the stub's own numpy
conversions (``as_numpy()``, ``pb_utils.Tensor(name, array)``): those are compiled against
numpy 1.x, and with numpy 2 in the model's Python they hand back empty tensors (measured with
Triton 2.51's stub: ``as_numpy`` fails with "cannot reshape array of size 0"). DLPack is an ABI
that does not depend on numpy's. One wrinkle, fixed in :func:`_to_triton`: the stub marks a
capsule it consumed ``"used_dlpack"``, where the DLPack protocol (and numpy) expect
``"used_dltensor"``; numpy's capsule destructor then logged "PyCapsule_GetPointer called with
incorrect name" with a traceback, once per inference.

**Bounds.** ``serve.json`` also says the largest batch and frame the model accepts
(:class:`fcn_deploy.serve.bounds.InputBounds`); a request outside them gets an error reply
(INVALID_ARG) before the backend runs it, and the server keeps serving. (HTTP requests were
already checked by ``serve``'s front door, :mod:`fcn_deploy.serve.gate`; gRPC ones reach the
model directly.)
"""
import json
import os
import site
import sys

SETTINGS_FILE = "serve.json"


def read_settings(folder: str) -> dict:
    """``serve.json`` beside this file: what ``fcn-deploy serve`` wrote for this model."""
    with open(os.path.join(folder, SETTINGS_FILE), encoding="utf-8") as f:
        return json.load(f)


def adopt_python(python: dict) -> None:
    """Make this (isolated) interpreter's ``sys.path`` the serving interpreter's; see the module docstring."""
    if not python.get("sys_path"):
        return  # no settings (initialize says so in one line): leave the stub's path as it is
    version = "%d.%d" % sys.version_info[:2]
    if python.get("version") and python["version"] != version:
        raise RuntimeError("fcn-deploy serve ran on Python %s but Triton's stub embeds Python %s"
                           % (python["version"], version))
    wanted = [p for p in python.get("sys_path", []) if p and os.path.isdir(p)]
    own_sites = set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        own_sites.add(site.getusersitepackages())
    # Keep what the stub itself put on the path (the model's folders, triton_python_backend_utils'),
    # drop the base interpreter's site folders and the working directory ("").
    stub_added = [p for p in sys.path if p and p not in wanted and p not in own_sites]
    sys.path[:] = wanted + stub_added
    known = set(sys.path)
    for folder in python.get("site_dirs", []):
        if os.path.isdir(folder) and folder not in own_sites:
            site.addsitedir(folder, known)  # runs its .pth files: editable installs' import hooks


_HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = read_settings(_HERE) if os.path.isfile(os.path.join(_HERE, SETTINGS_FILE)) else {}
adopt_python(SETTINGS.get("python", {}))

import ctypes  # noqa: E402  (after adopt_python: numpy and the stub's utilities come from the serving Python)
from typing import Any, Dict, List  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402  (provided by Triton's Python backend)

_USED = b"used_dltensor"  # a static name: PyCapsule_SetName keeps the pointer, not a copy
_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype, _capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_capsule_rename = ctypes.pythonapi.PyCapsule_SetName
_capsule_rename.restype, _capsule_rename.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]
_USED_NAME = ctypes.c_char_p(_USED)


def _from_triton(tensor: Any) -> np.ndarray:
    if hasattr(np, "from_dlpack"):
        return np.from_dlpack(tensor)
    return tensor.as_numpy()  # numpy < 1.22 has no DLPack; the stub's own path works with numpy 1.x


def _to_triton(name: str, array: np.ndarray) -> Any:
    """``array`` as the stub's tensor, through a DLPack capsule that is then marked consumed
    under the protocol's name, so that numpy's destructor leaves it be (module docstring)."""
    array = np.ascontiguousarray(array)
    if not hasattr(array, "__dlpack__"):
        return pb_utils.Tensor(name, array)
    capsule = array.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    if _capsule_name(capsule) != _USED:  # the stub's "used_dlpack"
        _capsule_rename(capsule, _USED_NAME)
    return tensor


def _error(message: str) -> Any:
    """An error reply; INVALID_ARG (HTTP 400) where this stub's TritonError takes a code."""
    if hasattr(pb_utils.TritonError, "INVALID_ARG"):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


class TritonPythonModel:
    """Triton's Python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args: Dict[str, str]) -> None:
        from fcn_deploy.runtime.backends import open_backend
        from fcn_deploy.serve.bounds import InputBounds

        if not SETTINGS:
            raise RuntimeError(f"{SETTINGS_FILE} is missing beside {__file__}: this model is written by fcn-deploy serve")
        config = json.loads(args["model_config"])
        model = SETTINGS["model"]
        options: Dict[str, Any] = {}
        if model.get("threads"):
            options["threads"] = int(model["threads"])
        self.bounds = InputBounds.from_dict(SETTINGS["bounds"])
        self.backend = open_backend(model["path"], model.get("device") or "cpu", **options)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.layout = self.backend.metadata.input_layout

    def execute(self, requests: List[Any]) -> List[Any]:
        responses: List[Any] = [None] * len(requests)
        arrays: Dict[int, np.ndarray] = {}
        groups: Dict[tuple, List[int]] = {}
        for i, request in enumerate(requests):
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
                refused = self.bounds.refuse(tuple(tensor.shape()), self.layout)
                if refused:
                    responses[i] = _error(refused)
                    continue
                array = _from_triton(tensor)
            except Exception as exc:
                responses[i] = _error(f"bad input: {exc}")
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
                    responses[i] = _error(message)
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
