"""CUDA device memory, page-locked host memory and streams, behind one small interface.

TensorRT's Python API takes raw device pointers and stream handles and leaves memory to the
caller. Two libraries provide it: ``cuda.bindings`` (cuda-python, what NVIDIA's TensorRT
samples use and the ``gpu`` extra installs) and ``pycuda`` (common on Jetson). The TensorRT
backend and the engine builder use only :class:`CudaMemory`, and :func:`open_cuda` picks
whichever library is installed, cuda-python first.

Both implementations work on the device's *primary* context, the one the CUDA runtime (and
so TensorRT) uses, so pointers from either library are valid inside TensorRT.
"""
from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Tuple

import numpy as np

from ..errors import FcnDeployError, first_line

log = logging.getLogger(__name__)

LIBRARIES = ("cuda-python", "pycuda")


class CudaError(FcnDeployError):
    """CUDA is missing, or a CUDA call failed."""


@dataclass
class DeviceBuffer:
    """``nbytes`` of device memory at ``ptr``."""

    ptr: int
    nbytes: int
    owner: Any = None  # the library's allocation object, where it has one


@dataclass
class HostBuffer:
    """``nbytes`` of page-locked host memory, as a flat uint8 numpy array.

    Page-locked memory is what lets a host-device copy run asynchronously on a stream
    (from pageable memory the driver copies synchronously through a staging buffer).
    """

    array: np.ndarray
    nbytes: int
    ptr: int = 0
    owner: Any = None

    def view(self, dtype: "np.dtype | str", shape: Sequence[int]) -> np.ndarray:
        """The first ``prod(shape)`` elements as an array of ``dtype`` and ``shape``."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        return self.array[: count * dtype.itemsize].view(dtype).reshape(tuple(shape))


@dataclass
class Stream:
    """A CUDA stream; ``handle`` is the ``cudaStream_t`` value TensorRT takes."""

    handle: int
    owner: Any = None


class CudaMemory(abc.ABC):
    """The operations the TensorRT backend needs, on one device."""

    library: str = ""

    def __init__(self, device_index: int = 0) -> None:
        self.device_index = int(device_index)

    @abc.abstractmethod
    def device_name(self) -> str: ...

    @abc.abstractmethod
    def compute_capability(self) -> str:
        """``"8.7"`` for Orin, ``"9.0"`` for H100."""

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make this device current in the calling thread for the duration of the block."""
        yield

    @abc.abstractmethod
    def create_stream(self) -> Stream: ...

    @abc.abstractmethod
    def synchronize(self, stream: Stream) -> None: ...

    @abc.abstractmethod
    def destroy_stream(self, stream: Stream) -> None: ...

    @abc.abstractmethod
    def alloc_device(self, nbytes: int) -> DeviceBuffer: ...

    @abc.abstractmethod
    def free_device(self, buf: DeviceBuffer) -> None: ...

    @abc.abstractmethod
    def alloc_host(self, nbytes: int) -> HostBuffer: ...

    @abc.abstractmethod
    def free_host(self, buf: HostBuffer) -> None: ...

    @abc.abstractmethod
    def copy_to_device_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        """Copy ``src`` (contiguous, ideally a :class:`HostBuffer` view) to ``dst``."""

    @abc.abstractmethod
    def copy_to_host_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        """Copy ``dst.nbytes`` from ``src`` into ``dst`` (a :class:`HostBuffer` view)."""


# -- cuda-python ----------------------------------------------------------------------------
def _import_cudart():
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), else the older ``cuda.cudart``."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


class CudaPythonMemory(CudaMemory):
    """cuda-python's runtime API: every call returns ``(error, value...)``."""

    library = "cuda-python"

    def __init__(self, device_index: int = 0) -> None:
        super().__init__(device_index)
        self.cudart = _import_cudart()
        try:
            self._call("cudaSetDevice", self.device_index)
            self._props = self._call("cudaGetDeviceProperties", self.device_index)
        except CudaError:
            raise
        except Exception as exc:  # the bindings' own loader: no or too old a driver
            raise CudaError(f"cuda-python cannot start: {first_line(exc)}") from None

    def _call(self, fn: str, *args: Any) -> Any:
        result = getattr(self.cudart, fn)(*args)
        err, rest = result[0], result[1:]
        if err != self.cudart.cudaError_t.cudaSuccess:
            name = self.cudart.cudaGetErrorName(err)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
            raise CudaError(f"CUDA {fn} failed: {name}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def device_name(self) -> str:
        name = self._props.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return str(name).strip()

    def compute_capability(self) -> str:
        return f"{self._props.major}.{self._props.minor}"

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self._call("cudaSetDevice", self.device_index)
        yield

    def create_stream(self) -> Stream:
        stream = self._call("cudaStreamCreate")
        return Stream(int(stream), stream)

    def synchronize(self, stream: Stream) -> None:
        self._call("cudaStreamSynchronize", stream.owner)

    def destroy_stream(self, stream: Stream) -> None:
        self._call("cudaStreamDestroy", stream.owner)

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(int(self._call("cudaMalloc", max(int(nbytes), 1))), int(nbytes))

    def free_device(self, buf: DeviceBuffer) -> None:
        self._call("cudaFree", buf.ptr)

    def alloc_host(self, nbytes: int) -> HostBuffer:
        nbytes = max(int(nbytes), 1)
        ptr = int(self._call("cudaMallocHost", nbytes))
        array = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
        return HostBuffer(array, nbytes, ptr)

    def free_host(self, buf: HostBuffer) -> None:
        self._call("cudaFreeHost", buf.ptr)

    def copy_to_device_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", dst.ptr, src.ctypes.data, src.nbytes, kind, stream.owner)

    def copy_to_host_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", dst.ctypes.data, src.ptr, dst.nbytes, kind, stream.owner)


# -- pycuda ---------------------------------------------------------------------------------
class PyCudaMemory(CudaMemory):
    """pycuda's driver API on the device's primary context (never ``pycuda.autoinit``, whose
    own context TensorRT would not see)."""

    library = "pycuda"

    def __init__(self, device_index: int = 0) -> None:
        super().__init__(device_index)
        self.drv = importlib.import_module("pycuda.driver")
        try:
            self.drv.init()
            self.device = self.drv.Device(self.device_index)
            self.context = self.device.retain_primary_context()
        except self.drv.Error as exc:
            raise CudaError(f"CUDA device {self.device_index} is not usable: {exc}") from None

    def device_name(self) -> str:
        return str(self.device.name()).strip()

    def compute_capability(self) -> str:
        major, minor = self.device.compute_capability()
        return f"{major}.{minor}"

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self.context.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def create_stream(self) -> Stream:
        with self.activate():
            stream = self.drv.Stream()
        return Stream(int(stream.handle), stream)

    def synchronize(self, stream: Stream) -> None:
        with self.activate():
            stream.owner.synchronize()

    def destroy_stream(self, stream: Stream) -> None:
        stream.owner = None  # pycuda destroys the stream with the object

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        with self.activate():
            alloc = self.drv.mem_alloc(max(int(nbytes), 1))
        return DeviceBuffer(int(alloc), int(nbytes), alloc)

    def free_device(self, buf: DeviceBuffer) -> None:
        with self.activate():
            buf.owner.free()

    def alloc_host(self, nbytes: int) -> HostBuffer:
        nbytes = max(int(nbytes), 1)
        with self.activate():
            array = self.drv.pagelocked_empty(nbytes, np.uint8)
        return HostBuffer(array, nbytes, int(array.ctypes.data), array.base)

    def free_host(self, buf: HostBuffer) -> None:
        with self.activate():
            if buf.owner is not None and hasattr(buf.owner, "free"):
                buf.owner.free()

    def copy_to_device_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        with self.activate():
            self.drv.memcpy_htod_async(dst.ptr, src, stream.owner)

    def copy_to_host_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        with self.activate():
            self.drv.memcpy_dtoh_async(dst, src.ptr, stream.owner)


_IMPLEMENTATIONS = {"cuda-python": CudaPythonMemory, "pycuda": PyCudaMemory}
_MODULES = {"cuda-python": ("cuda.bindings.runtime", "cuda.cudart"), "pycuda": ("pycuda.driver",)}


def installed_libraries() -> Tuple[str, ...]:
    """The CUDA Python libraries that import here, in order of preference."""
    found = []
    for library in LIBRARIES:
        for module in _MODULES[library]:
            try:
                importlib.import_module(module)
            except ImportError:
                continue
            found.append(library)
            break
    return tuple(found)


def open_cuda(device_index: int = 0, library: Optional[str] = None) -> CudaMemory:
    """A :class:`CudaMemory` on GPU ``device_index`` through ``library`` (``"cuda-python"`` or
    ``"pycuda"``), or through the first installed one that starts when ``library`` is ``None``.

    "Starts" matters on a Jetson: cuda-python built for CUDA 12 imports fine on JetPack 5,
    whose driver is CUDA 11.4, and fails only at its first call; pycuda, built there against
    the local toolkit, works. So a library that imports but cannot initialise the device is
    skipped (with a log line) for the next one. Raises :class:`CudaError` with what to install
    when none is installed, or with each library's reason when none starts.
    """
    if library is not None and library not in _IMPLEMENTATIONS:
        raise CudaError(f"unknown CUDA library {library!r}; expected one of {', '.join(LIBRARIES)}")
    available = installed_libraries()
    candidates = [library] if library else list(available)
    if not candidates or (library and library not in available):
        wanted = library or "cuda-python or pycuda"
        raise CudaError(
            f"the TensorRT backend needs {wanted} for GPU memory: pip install cuda-python "
            "(desktop and Jetson with JetPack 6), or pycuda (JetPack 5)"
        )
    failures = []
    for name in candidates:
        try:
            memory = _IMPLEMENTATIONS[name](device_index)
        except CudaError as exc:
            failures.append(f"{name}: {exc}")
            log.info("CUDA through %s does not start here (%s)%s", name, exc,
                     "; trying the next library" if name != candidates[-1] else "")
            continue
        log.debug("CUDA through %s on %s (sm %s)", memory.library, memory.device_name(), memory.compute_capability())
        return memory
    hint = "" if library else " (on JetPack 5 use pycuda: cuda-python for CUDA 12 needs a newer driver)"
    raise CudaError(f"no CUDA library could use GPU {device_index}: {'; '.join(failures)}{hint}")
