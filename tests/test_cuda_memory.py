"""open_cuda's choice of library: the first installed one that starts on the GPU.

No GPU here, so the two libraries are stood in for by classes that start or fail as
cuda-python does on a JetPack 5 driver (it imports, then its first call fails). The real
libraries run in tests/test_tensorrt_gpu.py where a GPU exists.
"""
import pytest

from fcn_deploy.runtime import cuda_memory
from fcn_deploy.runtime.cuda_memory import CudaError, CudaMemory


class _Starts(CudaMemory):
    library = "pycuda"

    def device_name(self):
        return "Jetson AGX Xavier"

    def compute_capability(self):
        return "7.2"

    def activate(self):
        raise NotImplementedError

    create_stream = synchronize = destroy_stream = alloc_device = free_device = alloc_host = free_host = activate
    copy_to_device_async = copy_to_host_async = activate


class _DriverTooOld(_Starts):
    library = "cuda-python"

    def __init__(self, device_index=0):
        raise CudaError("CUDA cudaSetDevice failed: cudaErrorInsufficientDriver")


@pytest.fixture
def libraries(monkeypatch):
    monkeypatch.setattr(cuda_memory, "installed_libraries", lambda: ("cuda-python", "pycuda"))
    monkeypatch.setattr(cuda_memory, "_IMPLEMENTATIONS", {"cuda-python": _DriverTooOld, "pycuda": _Starts})


def test_falls_back_to_pycuda_when_cuda_python_cannot_start(libraries, caplog):
    caplog.set_level("INFO")
    memory = cuda_memory.open_cuda(1)
    assert memory.library == "pycuda" and memory.device_index == 1
    assert "cuda-python does not start here" in caplog.text


def test_an_explicit_library_does_not_fall_back(libraries):
    with pytest.raises(CudaError, match="cuda-python: CUDA cudaSetDevice failed"):
        cuda_memory.open_cuda(0, "cuda-python")


def test_none_starting_names_each_reason(monkeypatch):
    monkeypatch.setattr(cuda_memory, "installed_libraries", lambda: ("cuda-python",))
    monkeypatch.setattr(cuda_memory, "_IMPLEMENTATIONS", {"cuda-python": _DriverTooOld, "pycuda": _Starts})
    with pytest.raises(CudaError, match="no CUDA library could use GPU 0: cuda-python: .*InsufficientDriver.*pycuda"):
        cuda_memory.open_cuda(0)


def test_nothing_installed_says_what_to_install(monkeypatch):
    monkeypatch.setattr(cuda_memory, "installed_libraries", lambda: ())
    with pytest.raises(CudaError, match="pip install cuda-python"):
        cuda_memory.open_cuda(0)
