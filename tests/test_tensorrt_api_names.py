"""Every TensorRT attribute fcn-deploy touches exists in each release where that code runs.

TensorRT cannot be installed here, but the names each release's Python module defines can:
``../shared/tensorrt-api/*.txt`` (see its README) lists them for TensorRT 8.6.1, 10.3.0,
10.13.3.9 and 11.4.0.106. This file builds, from one list, a stand-in ``tensorrt`` module in
which every attribute lookup (on the module, an enum, a builder, a network, an engine, a
context...) raises ``AttributeError`` unless the release has that name, and drives the real
builder (:mod:`fcn_deploy.converters.tensorrt_build`) and the real runtime backend
(:mod:`fcn_deploy.runtime.backends.tensorrt`) through it. Touching ``BuilderFlag.FP16`` on
11.4, ``STRONGLY_TYPED`` or ``ParserError.node_name`` on 8.6, or any removed API, fails here.

The stand-in engine computes its output with ONNX Runtime on the same ONNX, over a
host-memory stand-in for CUDA, so the backend's data path (pinned staging buffers, async
copies, per-call output sizes, buffer reuse and regrowth, two contexts) is checked for
numbers too. Only the GPU itself is simulated; tests/test_tensorrt_gpu.py runs the real one.
"""
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fcn_deploy.converters import tensorrt_build as tb  # noqa: E402
from fcn_deploy.runtime import engine_cache as ec  # noqa: E402
from fcn_deploy.runtime import tensorrt_compat as compat  # noqa: E402
from fcn_deploy.runtime.backends import tensorrt as trt_backend  # noqa: E402
from fcn_deploy.runtime.backends.base import BackendError  # noqa: E402
from fcn_deploy.runtime.cuda_memory import CudaMemory, DeviceBuffer, HostBuffer, Stream  # noqa: E402
from fcn_deploy.converters.tensorrt_check import TensorRTConformanceError, check_onnx, release_for_version  # noqa: E402
from onnx_helpers import exported_onnx  # noqa: E402

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10

REPO = Path(__file__).resolve().parents[1]
API_DIR = Path(os.environ.get("FCN_DEPLOY_TENSORRT_API", REPO.parent / "shared" / "tensorrt-api"))
VERSIONS = ("8.6.1", "10.3.0", "10.13.3.9", "11.4.0.106")
if not all((API_DIR / f"{v}.txt").is_file() for v in VERSIONS):
    pytest.skip(f"TensorRT name lists not found in {API_DIR} (set FCN_DEPLOY_TENSORRT_API)", allow_module_level=True)

ALL = (8, 10, 11)
# Names the code uses that a release has although its list cannot show them. `strings` only
# sees identifiers kept in the string table: compilers build short ones (up to ~16 bytes) with
# immediate stores instead, and `__version__` lives in the package's Python __init__, not in
# the compiled module. Each entry is documented in NVIDIA's Python API for those releases.
# Kept minimal: test_known_unlisted_is_minimal fails on an entry a list does show, and on any
# name whose absence is the point of these tests.
KNOWN_UNLISTED = {
    "__version__": ALL,  # tensorrt.__version__
    "Builder": ALL,  # tensorrt.Builder
    "Runtime": ALL,  # tensorrt.Runtime
    "INPUT": ALL,  # TensorIOMode.INPUT
    "DLA": ALL,  # DeviceType.DLA
    "INT8": (8,),  # BuilderFlag.INT8: set on 8.x only
    "name": ALL,  # ITensor.name; pybind11 enum .name
    "shape": ALL,  # ITensor.shape
    "num_errors": ALL,  # OnnxParser.num_errors
    "serialize": ALL,  # ITimingCache.serialize
}
MUST_BE_ABSENT = {
    "11.4.0.106": {"FP16", "EXPLICIT_BATCH", "execute_async_v2", "build_engine", "max_workspace_size"},
    "10.3.0": {"execute_async_v2", "build_engine", "max_workspace_size", "get_binding_index", "num_bindings"},
    "8.6.1": {"STRONGLY_TYPED", "node_name", "node_operator"},
}
REMOVED_APIS = ("execute_async_v2", "execute_v2", "max_workspace_size", "build_engine", "get_binding_index",
                "num_bindings", "binding_is_input", "set_binding_shape", "get_binding_shape", "platform_has_fast_fp16",
                "max_batch_size", "int8_calibrator")


class Release:
    def __init__(self, version: str) -> None:
        text = (API_DIR / f"{version}.txt").read_text()
        self.version = version
        self.major = int(version.split(".")[0])
        self.version_tuple = compat.version_tuple(version)
        self.names = set(text.split())
        # pybind docstring constants, e.g. _ZN8tensorrt14ParserErrorDocL9node_nameE
        self.documented = {m.group(2)[: int(m.group(1))] for m in re.finditer(r"DocL(\d+)([A-Za-z_]\w*)", text)}
        self.touched = set()

    def listed(self, name: str) -> bool:
        return name in self.names or name in self.documented

    def has(self, name: str) -> bool:
        return self.listed(name) or self.major in KNOWN_UNLISTED.get(name, ())


_RELEASES = {}


def release(version: str) -> Release:
    if version not in _RELEASES:
        _RELEASES[version] = Release(version)
    rel = _RELEASES[version]
    rel.touched = set()
    return rel


# -- the stand-in tensorrt module -----------------------------------------------------------
def _check(rel: Release, name: str) -> None:
    if not rel.has(name):
        raise AttributeError(f"TensorRT {rel.version} has no attribute {name!r}")
    rel.touched.add(name)


class Guarded:
    """Public attribute reads and writes only for names the release has."""

    def __init__(self, rel: Release) -> None:
        object.__setattr__(self, "_rel", rel)

    def __getattribute__(self, name):
        if not name.startswith("_") or name == "__version__":
            _check(object.__getattribute__(self, "_rel"), name)
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            _check(object.__getattribute__(self, "_rel"), name)
        object.__setattr__(self, name, value)


def _get(obj, name):
    """Read an attribute of a stand-in without the guard (the stand-in's own bookkeeping)."""
    return object.__getattribute__(obj, name)


class Member(Guarded):
    def __init__(self, rel, enum, name, value):
        super().__init__(rel)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_enum", enum)
        object.__setattr__(self, "_value", value)

    def __int__(self):
        return _get(self, "_value")

    def __repr__(self):
        return f"{_get(self, '_enum')}.{_get(self, 'name')}"


class Enum(Guarded):
    def __init__(self, rel, name, members):
        super().__init__(rel)
        for value, member in enumerate(members):
            object.__setattr__(self, member, Member(rel, name, member, value))


ENUMS = {
    "NetworkDefinitionCreationFlag": ["EXPLICIT_BATCH", "EXPLICIT_PRECISION", "STRONGLY_TYPED"],
    "BuilderFlag": ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME",
                    "BF16"],
    "MemoryPoolType": ["WORKSPACE", "DLA_MANAGED_SRAM"],
    "DeviceType": ["GPU", "DLA"],
    "TensorIOMode": ["NONE", "INPUT", "OUTPUT"],
    "DataType": ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "INT64"],
    "Severity": ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"],
}
ONNX_TO_TRT = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8"}
NUMPY_OF = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8, "INT8": np.int8}


class FakeTensorRT(Guarded):
    def __init__(self, rel: Release, device: "FakeDevice") -> None:
        super().__init__(rel)
        object.__setattr__(self, "__version__", rel.version)
        object.__setattr__(self, "_device", device)
        object.__setattr__(self, "_deserialized", 0)
        for name, members in ENUMS.items():
            object.__setattr__(self, name, Enum(rel, name, members))

        class ILogger:
            def __init__(self):
                pass

        object.__setattr__(self, "ILogger", ILogger)
        object.__setattr__(self, "Builder", lambda logger: FakeBuilder(self, logger))
        object.__setattr__(self, "OnnxParser", lambda network, logger: FakeParser(self, network, logger))
        object.__setattr__(self, "Runtime", lambda logger: FakeRuntime(self, logger))

    def _member(self, enum, name):
        return _get(_get(self, enum), name)


class FakeTensor(Guarded):
    def __init__(self, rel, name, shape):
        super().__init__(rel)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "shape", tuple(shape))


class FakeNetwork(Guarded):
    def __init__(self, trt, flags):
        super().__init__(_get(trt, "_rel"))
        object.__setattr__(self, "_flags", flags)
        object.__setattr__(self, "_io", None)

    @property
    def num_inputs(self):
        return len(_get(self, "_io")["inputs"])

    def get_input(self, index):
        spec = _get(self, "_io")["inputs"][index]
        return FakeTensor(_get(self, "_rel"), spec["name"], [d if isinstance(d, int) else -1 for d in spec["dims"]])


class FakeParserError(Guarded):
    def __init__(self, rel, index, node, op, desc=None):
        super().__init__(rel)
        object.__setattr__(self, "_info", (index, node, op, desc or f"No importer registered for op: {op}"))

    def desc(self):
        return _get(self, "_info")[3]

    def node(self):
        return _get(self, "_info")[0]

    def node_name(self):
        return _get(self, "_info")[1]

    def code(self):
        return 8


class FakeParser(Guarded):
    def __init__(self, trt, network, logger):
        super().__init__(_get(trt, "_rel"))
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_network", network)
        object.__setattr__(self, "_logger", logger)
        object.__setattr__(self, "_errors", [])

    def parse_from_file(self, path):
        model = onnx.load(path)

        def spec(value):
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
            dtype = ONNX_TO_TRT[f"tensor({onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name})"
                                .replace("float32", "float").replace("float64", "double")]
            return {"name": value.name, "dims": dims, "dtype": dtype}

        object.__setattr__(_get(self, "_network"), "_io", {
            "inputs": [spec(i) for i in model.graph.input],
            "outputs": [spec(o) for o in model.graph.output],
            "onnx": os.fspath(path),
        })
        # What this release's parser refuses, by fcn-deploy check's reading of its rules.
        rel = _get(self, "_rel")
        index_of = {node.name: i for i, node in enumerate(model.graph.node)}
        report = check_onnx(model, (release_for_version(rel.version_tuple),))
        for problem in report.errors:
            index = index_of.get(problem.node, -1)
            _get(self, "_errors").append(FakeParserError(rel, index, problem.node, problem.op_type, problem.message))
            trt = _get(self, "_trt")
            _get(self, "_logger").log(trt._member("Severity", "ERROR"), problem.message)
        return not _get(self, "_errors")

    @property
    def num_errors(self):
        return len(_get(self, "_errors"))

    def get_error(self, index):
        return _get(self, "_errors")[index]


class FakeProfile(Guarded):
    def __init__(self, rel):
        super().__init__(rel)
        object.__setattr__(self, "_shapes", {})

    def set_shape(self, name, min, opt, max):
        _get(self, "_shapes")[name] = [list(min), list(opt), list(max)]


class FakeTimingCache(Guarded):
    def __init__(self, rel, data):
        super().__init__(rel)
        object.__setattr__(self, "_data", bytes(data))

    def serialize(self):
        return memoryview(b"TIMING " + _get(self, "_rel").version.encode())


class FakeConfig(Guarded):
    def __init__(self, trt):
        super().__init__(_get(trt, "_rel"))
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_record", {"flags": [], "profiles": [], "pools": {}, "timing_cache_in": None})

    def set_flag(self, flag):
        _get(self, "_record")["flags"].append(_get(flag, "name"))

    def set_memory_pool_limit(self, pool, size):
        _get(self, "_record")["pools"][_get(pool, "name")] = size

    def add_optimization_profile(self, profile):
        profiles = _get(self, "_record")["profiles"]
        profiles.append(_get(profile, "_shapes"))
        return len(profiles) - 1

    def create_timing_cache(self, data):
        return FakeTimingCache(_get(self, "_rel"), data)

    def set_timing_cache(self, cache, ignore_mismatch):
        data = _get(cache, "_data")
        if data and data != b"TIMING " + _get(self, "_rel").version.encode():
            return False
        _get(self, "_record")["timing_cache_in"] = data.decode()
        object.__setattr__(self, "_cache", cache)
        return True

    def get_timing_cache(self):
        return _get(self, "_cache")


class FakeBuilder(Guarded):
    def __init__(self, trt, logger):
        super().__init__(_get(trt, "_rel"))
        object.__setattr__(self, "_trt", trt)

    @property
    def num_DLA_cores(self):
        return 2

    def create_network(self, flags):
        trt = _get(self, "_trt")
        names = [m for m in ENUMS["NetworkDefinitionCreationFlag"] if flags & (1 << int(trt._member("NetworkDefinitionCreationFlag", m)))]
        return FakeNetwork(trt, names)

    def create_builder_config(self):
        return FakeConfig(_get(self, "_trt"))

    def create_optimization_profile(self):
        return FakeProfile(_get(self, "_rel"))

    def build_serialized_network(self, network, config):
        trt, record = _get(self, "_trt"), dict(_get(config, "_record"))
        for attr in ("builder_optimization_level", "default_device_type", "DLA_core"):
            try:
                value = _get(config, attr)
            except AttributeError:
                continue
            record[attr] = _get(value, "name") if isinstance(value, Member) else value
        plan = {"magic": "FAKE-PLAN", "version": _get(trt, "_rel").version, "network_flags": _get(network, "_flags"),
                "io": _get(network, "_io"), **record}
        _get(trt, "_device").last_plan = plan
        return memoryview(json.dumps(plan).encode())


class FakeRuntime(Guarded):
    def __init__(self, trt, logger):
        super().__init__(_get(trt, "_rel"))
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_logger", logger)

    def deserialize_cuda_engine(self, data):
        trt = _get(self, "_trt")
        object.__setattr__(trt, "_deserialized", _get(trt, "_deserialized") + 1)
        try:
            plan = json.loads(bytes(data))
            assert plan["magic"] == "FAKE-PLAN" and plan["version"] == _get(self, "_rel").version
        except Exception:
            _get(self, "_logger").log(trt._member("Severity", "ERROR"), "Serialization assertion failed: magic tag")
            return None
        return FakeEngine(trt, plan)


class FakeEngine(Guarded):
    def __init__(self, trt, plan):
        super().__init__(_get(trt, "_rel"))
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_plan", plan)
        io = plan["io"]
        object.__setattr__(self, "_tensors", {t["name"]: (t, "INPUT") for t in io["inputs"]})
        _get(self, "_tensors").update({t["name"]: (t, "OUTPUT") for t in io["outputs"]})
        object.__setattr__(self, "_profile_users", {})
        object.__setattr__(self, "_session", None)

    @property
    def num_io_tensors(self):
        return len(_get(self, "_tensors"))

    @property
    def num_optimization_profiles(self):
        return max(1, len(_get(self, "_plan")["profiles"]))

    def get_tensor_name(self, index):
        return list(_get(self, "_tensors"))[index]

    def get_tensor_mode(self, name):
        return _get(self, "_trt")._member("TensorIOMode", _get(self, "_tensors")[name][1])

    def get_tensor_dtype(self, name):
        return _get(self, "_trt")._member("DataType", _get(self, "_tensors")[name][0]["dtype"])

    def get_tensor_shape(self, name):
        return [d if isinstance(d, int) else -1 for d in _get(self, "_tensors")[name][0]["dims"]]

    def get_tensor_profile_shape(self, name, profile_index):
        return [tuple(s) for s in _get(self, "_plan")["profiles"][profile_index][name]]

    def create_execution_context(self):
        users = _get(self, "_profile_users")
        return FakeContext(self, 0 if 0 not in users else None)

    def _run(self, name, x):
        if _get(self, "_session") is None:
            object.__setattr__(self, "_session", ort.InferenceSession(
                _get(self, "_plan")["io"]["onnx"], providers=["CPUExecutionProvider"]))
        return _get(self, "_session").run(None, {name: x})[0]


class FakeContext(Guarded):
    """Emulates TensorRT's rules: a live context needs a profile no other live context uses,
    an input shape inside it, and addresses for every tensor before executing."""

    def __init__(self, engine, profile):
        super().__init__(_get(engine, "_rel"))
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_profile", None)
        object.__setattr__(self, "_shapes", {})
        object.__setattr__(self, "_addresses", {})
        if profile is not None:
            self._take(profile)

    def _take(self, index):
        users = _get(_get(self, "_engine"), "_profile_users")
        if users.get(index, self) is not self:
            return False
        if _get(self, "_profile") is not None:
            users.pop(_get(self, "_profile"), None)
        users[index] = self
        object.__setattr__(self, "_profile", index)
        return True

    def set_optimization_profile_async(self, profile_index, stream_handle):
        assert isinstance(stream_handle, int)
        return self._take(profile_index)

    def set_input_shape(self, name, shape):
        engine = _get(self, "_engine")
        profiles = _get(engine, "_plan")["profiles"]
        if profiles:
            low, _, high = profiles[_get(self, "_profile")][name]
            if any(s < lo or s > hi for s, lo, hi in zip(shape, low, high)):
                return False
        _get(self, "_shapes")[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        engine = _get(self, "_engine")
        spec, mode = _get(engine, "_tensors")[name]
        if mode == "INPUT":
            return list(_get(self, "_shapes")[name])
        (inp,) = _get(engine, "_plan")["io"]["inputs"]
        sizes = dict(zip(inp["dims"], _get(self, "_shapes")[inp["name"]]))
        return [d if isinstance(d, int) else sizes[d] for d in spec["dims"]]

    def set_tensor_address(self, name, address):
        _get(self, "_addresses")[name] = int(address)

    def execute_async_v3(self, stream_handle):
        assert isinstance(stream_handle, int)
        engine = _get(self, "_engine")
        if _get(self, "_profile") is None:
            return False
        device = _get(_get(engine, "_trt"), "_device")
        (inp,), (out,) = _get(engine, "_plan")["io"]["inputs"], _get(engine, "_plan")["io"]["outputs"]
        shape = _get(self, "_shapes")[inp["name"]]
        x = device.read(_get(self, "_addresses")[inp["name"]], NUMPY_OF[inp["dtype"]], shape)
        y = np.ascontiguousarray(engine._run(inp["name"], x))
        assert list(y.shape) == self.get_tensor_shape(out["name"])
        device.write(_get(self, "_addresses")[out["name"]], y)
        return True


class FakeDevice(CudaMemory):
    """CUDA over host memory: device pointers index numpy buffers; copies run at once."""

    library = "host-memory stand-in"

    def __init__(self, name="Fake Orin", cc="8.7"):
        super().__init__(0)
        self.name, self.cc = name, cc
        self.memory = {}
        self.pinned = []
        self.next_ptr = itertools.count(1 << 20, 1 << 20)
        self.streams = itertools.count(7)
        self.allocations = 0
        self.last_plan = None

    def device_name(self):
        return self.name

    def compute_capability(self):
        return self.cc

    def create_stream(self):
        return Stream(next(self.streams))

    def synchronize(self, stream):
        pass

    def destroy_stream(self, stream):
        pass

    def alloc_device(self, nbytes):
        ptr = next(self.next_ptr)
        self.memory[ptr] = np.zeros(max(nbytes, 1), np.uint8)
        self.allocations += 1
        return DeviceBuffer(ptr, nbytes)

    def free_device(self, buf):
        del self.memory[buf.ptr]

    def alloc_host(self, nbytes):
        array = np.zeros(max(nbytes, 1), np.uint8)
        self.pinned.append(array)
        return HostBuffer(array, nbytes)

    def free_host(self, buf):
        self.pinned = [a for a in self.pinned if a is not buf.array]

    def _is_pinned(self, array):
        return any(np.shares_memory(array, p) for p in self.pinned)

    def copy_to_device_async(self, dst, src, stream):
        assert self._is_pinned(src), "host-to-device copy from pageable memory"
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        self.memory[dst.ptr][: raw.size] = raw

    def copy_to_host_async(self, dst, src, stream):
        assert self._is_pinned(dst), "device-to-host copy into pageable memory"
        dst.view(np.uint8).ravel()[:] = self.memory[src.ptr][: dst.nbytes]

    def read(self, ptr, dtype, shape):
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.memory[ptr][:count].view(dtype).reshape(shape).copy()

    def write(self, ptr, array):
        raw = array.view(np.uint8).ravel()
        assert raw.size <= self.memory[ptr].size, "output buffer too small for this shape"
        self.memory[ptr][: raw.size] = raw


def fake(version, device=None):
    rel = release(version)
    return FakeTensorRT(rel, device or FakeDevice()), rel


# -- the lists and the tables ---------------------------------------------------------------
def test_the_lists_show_what_each_release_removed_or_added():
    for version, names in MUST_BE_ABSENT.items():
        rel = release(version)
        for name in names:
            assert not rel.has(name), f"{name} should be absent from TensorRT {version}"
    assert release("10.3.0").has("STRONGLY_TYPED") and release("8.6.1").has("FP16")
    assert release("10.13.3.9").has("node_name") and release("11.4.0.106").has("execute_async_v3")


def test_known_unlisted_is_minimal():
    protected = set().union(*MUST_BE_ABSENT.values()) | set(REMOVED_APIS)
    assert not protected & set(KNOWN_UNLISTED)
    for name, majors in KNOWN_UNLISTED.items():
        unlisted = [v for v in VERSIONS if int(v.split(".")[0]) in majors and not release(v).listed(name)]
        assert unlisted, f"{name} is listed in every release it is allowed for: drop it from KNOWN_UNLISTED"


@pytest.mark.parametrize("version", VERSIONS)
def test_enum_table_matches_each_release(version):
    rel = release(version)
    for (enum, member), (since, until) in compat.ENUM_MEMBERS.items():
        if compat.member_in_range(enum, member, rel.version_tuple):
            assert rel.has(enum) and rel.has(member), f"{enum}.{member} used on {version}, which lacks it"
    for member in ("FP16", "EXPLICIT_BATCH"):  # why those ranges end at 9
        assert not rel.has(member) or rel.major < 11


def test_the_source_uses_no_removed_api():
    files = [REPO / "converters" / "tensorrt_build.py", REPO / "converters" / "tensorrt_shapes.py",
             REPO / "fcn_deploy" / "runtime" / "backends" / "tensorrt.py", REPO / "fcn_deploy" / "runtime" / "cuda_memory.py"]
    for path in files:
        code = path.read_text()
        for name in REMOVED_APIS:
            assert not re.search(rf"\.{name}\b", code), f"{path.name} uses the removed TensorRT API {name}"


# -- building through each release ---------------------------------------------------------
BUILDS = [
    # (ONNX precision, requested, options)
    ("fp32", None, {}),
    ("fp16", None, {}),
    ("int8", "int8", {}),
    ("fp16", "fp16", dict(workspace_gb=1, opt_level=4, dla_core=1, version_compatible=True, contexts=2)),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("onnx_precision, requested, extra", BUILDS)
def test_build_touches_only_names_the_release_has(tmp_path, version, onnx_precision, requested, extra):
    trt, rel = fake(version)
    device = _get(trt, "_device")
    onnx_path = exported_onnx(tmp_path / "m.onnx", precision=onnx_precision)
    options = tb.BuildOptions(precision=requested, timing_cache=str(tmp_path / "timing.cache"), **extra)
    result = tb.ensure_engine(onnx_path, options=options, trt=trt, cuda=device)
    plan = device.last_plan
    strongly_typed = rel.major >= 10
    assert plan["network_flags"] == (["STRONGLY_TYPED"] if strongly_typed else ["EXPLICIT_BATCH"])
    precision_flags = [] if strongly_typed else {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"]}[onnx_precision]
    assert plan["flags"] == precision_flags + (["GPU_FALLBACK", "VERSION_COMPATIBLE"] if extra else [])
    assert len(plan["profiles"]) == extra.get("contexts", 1)
    # The DLA has no dynamic shapes: --dla builds the opt shape alone (min = opt = max).
    dla = "dla_core" in extra
    assert plan["profiles"][0]["input"] == ([[1, 360, 640, 3]] * 3 if dla else [[1, 180, 240, 3], [1, 360, 640, 3], [1, 720, 1280, 3]])
    if extra:
        assert plan["pools"] == {"WORKSPACE": 1 << 30}
        assert (plan["builder_optimization_level"], plan["default_device_type"], plan["DLA_core"]) == (4, "DLA", 1)
    assert (tmp_path / "timing.cache").read_bytes() == b"TIMING " + version.encode()
    assert result.sidecar.strongly_typed == strongly_typed and result.sidecar.tensorrt_version == version
    if rel.major >= 11:
        assert not rel.touched & {"FP16", "EXPLICIT_BATCH", "INT8"}
    assert not rel.touched & set(REMOVED_APIS)


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_fp16_flag_on_fp32_onnx_is_refused_from_10(tmp_path, version):
    trt, _ = fake(version)
    with pytest.raises(tb.EngineBuildError, match="export an FP16 ONNX"):
        tb.ensure_engine(exported_onnx(tmp_path / "m.onnx"), options=tb.BuildOptions(precision="fp16"),
                         trt=trt, cuda=_get(trt, "_device"))


@pytest.mark.parametrize("version", VERSIONS)
def test_bf16_builds_on_10_and_is_refused_in_one_line_elsewhere(tmp_path, version):
    """``build --bf16`` of an FP32 ONNX: on TensorRT 10 a weakly typed network with the BF16
    builder flag (a name 10.3 and 10.13 have), its sidecar saying bf16 while the metadata keeps
    the graph's fp32; on 8.6 (no bf16) and 11.4 (no weakly typed flags) one line, before
    TensorRT is asked to build."""
    trt, rel = fake(version)
    device = _get(trt, "_device")
    onnx_path = exported_onnx(tmp_path / "m.onnx")
    options = tb.BuildOptions(precision="bf16")
    if rel.major != 10:
        match = "has no bf16" if rel.major < 10 else "strongly typed networks only"
        with pytest.raises(tb.EngineBuildError, match=match) as info:
            tb.ensure_engine(onnx_path, options=options, trt=trt, cuda=device)
        assert "\n" not in str(info.value) and "build_serialized_network" not in rel.touched
        return
    result = tb.ensure_engine(onnx_path, options=options, trt=trt, cuda=device)
    plan = device.last_plan
    assert plan["network_flags"] == [] and plan["flags"] == ["BF16"]
    assert "BF16" in rel.touched and "STRONGLY_TYPED" not in rel.touched
    assert result.sidecar.precision == "bf16" and not result.sidecar.strongly_typed
    assert result.sidecar.metadata["precision"] == "fp32"
    with pytest.raises(tb.EngineBuildError, match="builds an FP32 ONNX in bf16"):
        tb.ensure_engine(exported_onnx(tmp_path / "h.onnx", precision="fp16"), options=options, trt=trt, cuda=device)


def test_bf16_needs_a_gpu_of_compute_capability_8(tmp_path):
    device = FakeDevice("Fake Xavier", "7.2")
    trt, rel = fake("10.3.0", device)
    with pytest.raises(tb.EngineBuildError, match=r"Fake Xavier \(sm 7.2\) has no bf16: it needs compute capability 8.0"):
        tb.ensure_engine(exported_onnx(tmp_path / "m.onnx"), options=tb.BuildOptions(precision="bf16"), trt=trt,
                         cuda=device)
    assert "build_serialized_network" not in rel.touched


# An operator no TensorRT parser imports, hung off the real graph's output.
MYSTERY_NODE = onnx.helper.make_node("NotARealOp", ["labels"], ["odd"], domain="com.example", name="mystery_node")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_refused_graph_is_our_line_before_the_parser(tmp_path, version):
    """build checks the running release's parser rules first: a refused node is one line of
    ours, TensorRT is never asked, and no engine is written."""
    trt, rel = fake(version)
    onnx_path = exported_onnx(tmp_path / "m.onnx", extra_node=MYSTERY_NODE)
    with pytest.raises(TensorRTConformanceError, match=r"TensorRT would refuse .*mystery_node \(NotARealOp\)"):
        tb.ensure_engine(onnx_path, trt=trt, cuda=_get(trt, "_device"))
    assert not rel.touched & {"parse_from_file", "build_serialized_network"}
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_parser_errors_name_the_node(tmp_path, version):
    """Should the parser still refuse something, its error names the ONNX node, through the
    API each release has (ParserError.node_name from 10, the node index on 8.x)."""
    trt, rel = fake(version)
    onnx_path = exported_onnx(tmp_path / "m.onnx", extra_node=MYSTERY_NODE)
    facts = tb.read_onnx(onnx_path)
    plan = tb.plan_build(rel.version_tuple, "fp32", tb.BuildOptions(), {})
    with pytest.raises(tb.EngineBuildError, match=r"cannot parse .*node mystery_node.*NotARealOp"):
        tb.build_serialized(trt, onnx_path, plan, facts.node_labels)
    assert ("node_name" in rel.touched) == (rel.major >= 10)


def test_the_stand_in_has_teeth(monkeypatch, tmp_path):
    trt11, _ = fake("11.4.0.106")
    with pytest.raises(AttributeError):
        trt11.BuilderFlag.FP16
    with pytest.raises(AttributeError):
        trt11.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    trt8, _ = fake("8.6.1")
    with pytest.raises(AttributeError):
        trt8.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    with pytest.raises(AttributeError):
        FakeParserError(release("8.6.1"), 0, "n", "Op").node_name()
    # Code that took the 8.x path on 11 would fail here, even with the range table widened.
    monkeypatch.setattr(tb, "STRONGLY_TYPED_SINCE", (12, 0))
    monkeypatch.setitem(compat.ENUM_MEMBERS, ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"), ((8, 5), None))
    with pytest.raises(compat.TensorRTError, match="TensorRT 11.4.0.106 has no NetworkDefinitionCreationFlag.EXPLICIT_BATCH"):
        tb.ensure_engine(exported_onnx(tmp_path / "m.onnx", precision="fp16"), trt=trt11, cuda=_get(trt11, "_device"))


# -- the engine cache through a build --------------------------------------------------------
def test_engine_cache_reuses_and_rebuilds_with_reasons(tmp_path, caplog):
    device = FakeDevice()
    trt10, _ = fake("10.3.0", device)
    onnx_path = exported_onnx(tmp_path / "m.onnx", precision="fp16")
    first = tb.ensure_engine(onnx_path, trt=trt10, cuda=device)
    assert not first.reused and first.reason == "no engine yet"
    assert first.engine_path == str(tmp_path / "m.engine") and ec.read_sidecar(first.engine_path) == first.sidecar
    again = tb.ensure_engine(onnx_path, trt=trt10, cuda=device)
    assert again.reused
    wider = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=["1x360x480x3"]), trt=trt10, cuda=device)
    assert not wider.reused and "engine shapes are" in wider.reason
    trt11, _ = fake("11.4.0.106", device)
    newer = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=["1x360x480x3"]), trt=trt11, cuda=device)
    assert newer.reason == "built by TensorRT 10.3.0; this is TensorRT 11.4.0.106"
    other_gpu = FakeDevice("NVIDIA GeForce RTX 4090", "8.9")
    moved = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=["1x360x480x3"]), trt=fake("11.4.0.106", other_gpu)[0],
                             cuda=other_gpu)
    assert "this GPU is NVIDIA GeForce RTX 4090 (sm 8.9)" in moved.reason
    forced = tb.ensure_engine(onnx_path, options=tb.BuildOptions(shapes=["1x360x480x3"]), force=True,
                              trt=fake("11.4.0.106", other_gpu)[0], cuda=other_gpu)
    assert forced.reason == "--force"


def test_a_users_file_is_never_overwritten_silently(tmp_path):
    device = FakeDevice()
    trt, _ = fake("10.13.3.9", device)
    onnx_path = exported_onnx(tmp_path / "m.onnx", precision="fp16")
    theirs = tmp_path / "m.engine"
    theirs.write_bytes(b"built with trtexec")
    with pytest.raises(tb.EngineBuildError, match="not an fcn-deploy engine .* not overwriting it"):
        tb.ensure_engine(onnx_path, trt=trt, cuda=device)
    assert theirs.read_bytes() == b"built with trtexec"
    assert tb.ensure_engine(onnx_path, force=True, trt=trt, cuda=device).reason == "--force"
    cached = tb.ensure_engine(onnx_path, cache_dir=str(tmp_path / "cache"), trt=trt, cuda=device)
    assert os.path.basename(cached.engine_path).endswith(".fp16.trt10.13.3.9.fake-orin-sm87.engine")


def test_timing_cache_from_another_release_is_replaced(tmp_path):
    device = FakeDevice()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"TIMING 8.6.1")
    onnx_path = exported_onnx(tmp_path / "m.onnx", precision="fp16")
    tb.ensure_engine(onnx_path, options=tb.BuildOptions(timing_cache=str(cache)), trt=fake("10.3.0", device)[0], cuda=device)
    assert device.last_plan["timing_cache_in"] == ""
    assert cache.read_bytes() == b"TIMING 10.3.0"
    tb.ensure_engine(onnx_path, options=tb.BuildOptions(timing_cache=str(cache)), force=True,
                     trt=fake("10.3.0", device)[0], cuda=device)
    assert device.last_plan["timing_cache_in"] == "TIMING 10.3.0"  # read back on the next build


# -- the runtime backend through each release -------------------------------------------------
def build_and_open(tmp_path, version, *, contexts=1, logits=False, precision="fp16", device=None):
    device = device or FakeDevice()
    trt, rel = fake(version, device)
    onnx_path = exported_onnx(tmp_path / f"m_{precision}{'_logits' if logits else ''}.onnx", logits=logits, precision=precision)
    result = tb.ensure_engine(onnx_path, options=tb.BuildOptions(contexts=contexts), trt=trt, cuda=device)
    rel.touched = set()
    backend = trt_backend.TensorRTBackend(result.engine_path, "cuda", contexts=contexts, trt=trt, cuda=device)
    return backend, onnx_path, rel, device


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_touches_only_names_the_release_has_and_matches_onnxruntime(tmp_path, version):
    backend, onnx_path, rel, device = build_and_open(tmp_path, version)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    with backend:
        assert backend.input_spec.shape == (None, None, None, 3) and backend.output_spec.dtype == "uint8"
        assert backend.metadata.model_name == "fcn8s_efficientnet_lite0" and backend.output_kind == "labels"
        allocations = []
        for h, w in [(200, 250), (360, 480), (190, 240), (700, 900), (360, 480)]:
            frames = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
            labels = backend.infer(frames)
            assert labels.shape == (1, h, w)
            np.testing.assert_array_equal(labels, session.run(None, {"input": frames})[0])
            allocations.append(device.allocations)
        # buffers grow with the first frame, at 360x480 and at 700x900, and are reused otherwise
        assert allocations == [2, 4, 4, 6, 6]  # device buffers: one input, one output
        assert backend.slots[0].grow_count == 6
    assert rel.touched >= {"execute_async_v3", "set_input_shape", "set_tensor_address", "num_io_tensors",
                           "get_tensor_mode", "deserialize_cuda_engine"}
    assert not rel.touched & set(REMOVED_APIS)


def test_backend_logits_output_is_sized_per_call(tmp_path):
    backend, onnx_path, _, _ = build_and_open(tmp_path, "10.3.0", logits=True, precision="fp32")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(2).integers(0, 256, (1, 181, 243, 3), dtype=np.uint8)
    with backend:
        x = backend.prepare(frames)
        assert x.shape == (1, 3, 181, 243) and x.dtype == np.float32
        logits = backend.run_graph(x)
        np.testing.assert_allclose(logits, session.run(None, {"input": x})[0], rtol=0, atol=0)
        assert backend.infer_labels(frames).shape == (1, 181, 243)


def test_two_contexts_overlap_frames(tmp_path):
    backend, onnx_path, _, _ = build_and_open(tmp_path, "11.4.0.106", contexts=2)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (1, 200 + 10 * i, 260, 3), dtype=np.uint8) for i in range(5)]
    with backend:
        assert backend.contexts == 2
        assert [_get(slot.context, "_profile") for slot in backend.slots] == [0, 1]
        tickets = [backend.submit(f) for f in frames[:3]]  # the third waits for the first
        outputs = [backend.result(t) for t in tickets]
        tickets += [backend.submit(f) for f in frames[3:]]
        outputs += [backend.result(t) for t in tickets[3:]]
        for f, out in zip(frames, outputs):
            np.testing.assert_array_equal(out, session.run(None, {"input": f})[0])
        with pytest.raises(BackendError, match="no frame in flight"):
            backend.result(tickets[0])


def test_two_contexts_need_two_profiles(tmp_path):
    backend, *_ = build_and_open(tmp_path, "10.3.0")
    backend.close()
    trt, _ = fake("10.3.0")
    with pytest.raises(BackendError, match=r"rebuild with `fcn-deploy build --contexts 2`"):
        trt_backend.TensorRTBackend(backend.path, "cuda", contexts=2, trt=trt, cuda=FakeDevice())


def test_frames_outside_the_profile_are_one_clear_error(tmp_path):
    backend, *_ = build_and_open(tmp_path, "8.6.1")
    with backend, pytest.raises(BackendError, match=r"outside the engine's optimisation profile \(min 1x180x240x3, max 1x720x1280x3\)"):
        backend.infer(np.zeros((1, 100, 100, 3), np.uint8))


def test_stale_engines_are_refused_before_deserialising(tmp_path):
    backend, *_ = build_and_open(tmp_path, "10.3.0")
    backend.close()
    engine = backend.path
    trt11, rel11 = fake("11.4.0.106")
    with pytest.raises(ec.EngineMismatch, match=r"built by TensorRT 10.3.0; this is TensorRT 11.4.0.106: rebuild it here with `fcn-deploy build .*m_fp16.onnx`"):
        trt_backend.TensorRTBackend(engine, "cuda", trt=trt11, cuda=FakeDevice())
    assert _get(trt11, "_deserialized") == 0 and "Runtime" not in rel11.touched
    trt10, _ = fake("10.3.0")
    with pytest.raises(ec.EngineMismatch, match=r"built for Fake Orin \(sm 8.7\); this GPU is NVIDIA H100 \(sm 9.0\)"):
        trt_backend.TensorRTBackend(engine, "cuda", trt=trt10, cuda=FakeDevice("NVIDIA H100", "9.0"))
    assert _get(trt10, "_deserialized") == 0
    # Same architecture, another board: runs (with a warning).
    trt_backend.TensorRTBackend(engine, "cuda", trt=fake("10.3.0")[0], cuda=FakeDevice("Jetson AGX Orin", "8.7")).close()


def test_unusable_engine_files(tmp_path):
    backend, *_ = build_and_open(tmp_path, "10.3.0")
    backend.close()
    engine = Path(backend.path)
    with pytest.raises(BackendError, match="a TensorRT engine runs on an NVIDIA GPU"):
        trt_backend.TensorRTBackend(str(engine), "cpu", trt=fake("10.3.0")[0], cuda=FakeDevice())
    plan = engine.read_bytes()
    engine.write_bytes(plan[:-1] + b" ")
    with pytest.raises(ec.EngineMismatch, match="not the engine its sidecar describes"):
        trt_backend.TensorRTBackend(str(engine), "cuda", trt=fake("10.3.0")[0], cuda=FakeDevice())
    # A plan TensorRT cannot deserialise although the sidecar vouches for it.
    garbage = b"garbage plan"
    engine.write_bytes(garbage)
    sidecar = ec.read_sidecar(engine)
    sidecar.engine_sha256, sidecar.engine_bytes = ec.sha256_bytes(garbage), len(garbage)
    ec.write_sidecar(engine, sidecar)
    with pytest.raises(ec.EngineMismatch, match=r"TensorRT 10.3.0 cannot deserialise .*magic tag"):
        trt_backend.TensorRTBackend(str(engine), "cuda", trt=fake("10.3.0")[0], cuda=FakeDevice())
    os.remove(ec.sidecar_path(engine))
    with pytest.raises(BackendError, match="has no sidecar"):
        trt_backend.TensorRTBackend(str(engine), "cuda", trt=fake("10.3.0")[0], cuda=FakeDevice())


def test_open_backend_dispatches_engines_here(tmp_path):
    from fcn_deploy.runtime.backends import open_backend

    backend, *_ = build_and_open(tmp_path, "10.13.3.9")
    backend.close()
    with open_backend(backend.path, device="cuda:0", trt=fake("10.13.3.9")[0], cuda=FakeDevice()) as opened:
        assert isinstance(opened, trt_backend.TensorRTBackend)
        assert opened.providers[0] == "TensorRT 10.13.3.9"
    if not compat.tensorrt_available():
        with pytest.raises(compat.TensorRTError, match="TensorRT's Python package .* is not installed"):
            open_backend(backend.path, device="cuda")


def test_close_waits_for_the_frame_in_flight(tmp_path):
    """close() takes the lock a running frame holds, so buffers are never freed under
    execute_async_v3 on another thread."""
    import threading

    backend, *_ = build_and_open(tmp_path, "10.3.0")
    backend._lock.acquire()  # as the inference thread holds it while a frame runs
    closer = threading.Thread(target=backend.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and backend.slots  # still waiting, nothing freed
    backend._lock.release()
    closer.join(5)
    assert not closer.is_alive() and not backend.slots


def test_an_engine_built_for_two_contexts_keeps_two_frames_in_flight(tmp_path):
    device = FakeDevice()
    trt, _ = fake("10.3.0", device)
    onnx_path = exported_onnx(tmp_path / "m.onnx", precision="fp16")
    result = tb.ensure_engine(onnx_path, options=tb.BuildOptions(contexts=2), trt=trt, cuda=device)
    with trt_backend.TensorRTBackend(result.engine_path, "cuda", trt=trt, cuda=device) as backend:
        assert backend.contexts == 2 and backend.in_flight == 2


def test_build_names_its_gpu(tmp_path):
    trt, _ = fake("10.3.0")
    with pytest.raises(compat.TensorRTError, match="not on device 'cpu'"):
        tb.ensure_engine(exported_onnx(tmp_path / "m.onnx", precision="fp16"), device="cpu", trt=trt)
