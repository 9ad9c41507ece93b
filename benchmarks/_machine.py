"""What a benchmark ran on, how busy it was, how much memory it took, and the hardware's limit.

A latency number means little without the machine beside it: the CPU model, the GPU, the
library versions, the thread counts and the load average (the CPU may be shared). The
measured matrix-multiply peak turns each latency into "this far from what the hardware
can do": achieved GFLOP/s over the GFLOP/s of a large fp32 GEMM on the same threads.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

log = logging.getLogger(__name__)

# Libraries whose version changes the numbers.
LIBRARIES = ("numpy", "torch", "onnxruntime", "openvino", "onnx", "tensorrt", "cv2", "fcn_deploy")


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction-set extensions that change which kernels the engines run (and so the numbers):
# AVX2 (8 floats), AVX-512 (16), VNNI (int8 dot products), BF16 and AMX (bfloat16/int8 tiles).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> Dict[str, bool]:
    """Which of :data:`ISA_FLAGS` the CPU reports (Linux /proc/cpuinfo; all False elsewhere)."""
    flags: set = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {name: name in flags for name in ISA_FLAGS}


def memory_gib() -> Optional[float]:
    """The machine's memory in GiB (/proc/meminfo's MemTotal), ``None`` where unknown."""
    kb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kb = float(line.split()[1])
                    break
    except OSError:
        pass
    return round(kb / (1024.0 * 1024.0), 1) if kb else None


def os_name() -> str:
    """The distribution's name (/etc/os-release) and the kernel, or what ``platform`` says."""
    pretty = None
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    pretty = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    kernel = f"{platform.system()} {platform.release()}"
    return f"{pretty}, {kernel}" if pretty else platform.platform()


def gpu_names() -> List[str]:
    """Names of the NVIDIA GPUs: from torch when it sees CUDA, else from nvidia-smi, else none."""
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def library_versions() -> Dict[str, Optional[str]]:
    """Version of each library in :data:`LIBRARIES`, ``None`` where it is not installed."""
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
        except Exception:  # ImportError, or a broken install that fails on import
            versions[name] = None
            continue
        versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions


def load_average() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def describe_machine(threads: int) -> Dict[str, Any]:
    """Everything about the machine that a reader needs to judge a number."""
    cores = available_cores()
    load = load_average()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_cores": cores,
        "cpu_flags": cpu_flags(),
        "memory_gib": memory_gib(),
        "os": os_name(),
        "gpus": gpu_names(),
        "versions": library_versions(),
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": load,
        "busy": bool(load and load[0] > cores),
        "python_executable": sys.executable,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------------------------
# The host allocator
# --------------------------------------------------------------------------------------------
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


SYSTEM_MALLOC_HELP = ("leave glibc's malloc as it is (by default freed memory is kept in the process, as "
                      "jemalloc/tcmalloc do, so PyTorch eager is not timed page-faulting its activations)")


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library, when it is glibc (it has ``mallopt``); ``None`` elsewhere."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def set_allocator(system_malloc: bool) -> str:
    """Unless ``system_malloc``, make glibc's malloc keep freed blocks in the process; say what was done.

    PyTorch eager allocates every activation afresh. With glibc's defaults a large block is
    mmap'ed, handed back to the kernel when freed, and page-faulted in again on the next
    call: on a 2-core VM that nearly doubled PyTorch's time on the bundled model, by an
    amount that depended on what the process had allocated before, while ONNX Runtime,
    which keeps its own arena, did not move (README, latency section). jemalloc and tcmalloc, which
    PyTorch's CPU performance guide recommends, keep freed memory the same way. Setting it
    for the whole benchmark compares the backends at their best rather than the allocator
    at its worst. Elsewhere than glibc, nothing is changed.
    """
    if system_malloc:
        return "system default (--system-malloc)"
    libc = _glibc()
    if libc is None:
        return "system default (not glibc: mallopt unavailable)"
    if libc.mallopt(_M_MMAP_MAX, 0) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) != 1:
        return "system default (glibc refused mallopt)"
    return "glibc malloc keeping freed blocks (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB)"


def trim_heap() -> None:
    """Hand the heap's free pages back to the kernel (glibc ``malloc_trim``), between timings.

    With freed memory kept (:func:`set_allocator`) the resident size only grows; trimming
    before each configuration keeps its peak-memory figure its own.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


# --------------------------------------------------------------------------------------------
# Peak host memory, per configuration
# --------------------------------------------------------------------------------------------
def _status_kb(field: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, kB on Linux


class PeakMemory:
    """Peak resident memory of this process while one configuration runs.

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark
    (``VmHWM``), so each configuration gets its own peak. Elsewhere the peak is
    ``getrusage``'s, which only grows: ``scope`` then says ``process`` instead of ``config``.
    The peak includes everything already loaded (libraries, earlier models), so
    ``added_mb`` (peak minus the resident size when the configuration started) is given too.
    """

    def __init__(self) -> None:
        self.scope = "process"
        self.start_mb = 0.0

    def start(self) -> None:
        trim_heap()
        rss = _status_kb("VmRSS")
        self.start_mb = rss / 1024.0 if rss is not None else _ru_maxrss_mb()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.scope = "config"
        except OSError:
            self.scope = "process"

    def peak_mb(self) -> float:
        hwm = _status_kb("VmHWM") if self.scope == "config" else None
        return hwm / 1024.0 if hwm is not None else _ru_maxrss_mb()

    def stop(self) -> Dict[str, Any]:
        peak = self.peak_mb()
        return {
            "peak_rss_mb": round(peak, 1),
            "peak_rss_added_mb": round(max(0.0, peak - self.start_mb), 1),
            "peak_rss_scope": self.scope,
        }


# --------------------------------------------------------------------------------------------
# The hardware limit
# --------------------------------------------------------------------------------------------
def matmul_peak(threads: int, n: int = 2048, repeats: int = 8) -> Dict[str, Any]:
    """Measured fp32 GEMM speed on the CPU (``n x n x n``, best of ``repeats``), in GFLOP/s.

    Three libraries, the fastest kept: PyTorch's matmul and ONNX Runtime's MatMul (MLAS) on
    exactly ``threads`` threads, and numpy's BLAS, which runs on every core, so only when
    ``threads`` is all of them. Their speeds differ by up to 2x on the same CPU (one uses
    AVX-512 where another stops at AVX2), so the best of them is the reference.
    """
    results = []
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            a, b = torch.randn(n, n), torch.randn(n, n)
            best = _best_time(lambda: torch.mm(a, b), repeats)
        finally:
            torch.set_num_threads(previous)
        results.append((2.0 * n ** 3 / best / 1e9, f"torch.mm {n}x{n}x{n} fp32, {threads} threads, best of {repeats}"))
    ort_result = _onnxruntime_matmul(threads, n, repeats)
    if ort_result is not None:
        results.append(ort_result)
    if torch is None or threads >= available_cores():
        import numpy as np

        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        best = _best_time(lambda: a @ b, repeats)
        results.append((2.0 * n ** 3 / best / 1e9, f"numpy matmul {n}x{n}x{n} fp32 (BLAS on all cores), best of {repeats}"))
    gflops, method = max(results)
    return {"device": "cpu", "dtype": "fp32", "gflops_s": round(gflops, 1), "method": method}


def _onnxruntime_matmul(threads: int, n: int, repeats: int):
    """``(GFLOP/s, method)`` of an ``n x n x n`` fp32 MatMul in ONNX Runtime, or ``None`` without it."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # an odd build; the other libraries still give a reference
        log.debug("no ONNX Runtime GEMM reference: %s", exc)
        return None
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    best = _best_time(lambda: session.run(None, feeds), repeats)
    return (2.0 * n ** 3 / best / 1e9, f"onnxruntime MatMul {n}x{n}x{n} fp32, {threads} threads, best of {repeats}")


def cuda_matmul_peaks(n: int = 4096, repeats: int = 10) -> List[Dict[str, Any]]:
    """Measured GEMM speed on the first CUDA GPU in fp32 (TF32 off) and fp16, where there is one."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    peaks = []
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            a = torch.randn(n, n, device="cuda", dtype=dtype)
            b = torch.randn(n, n, device="cuda", dtype=dtype)

            def step():
                torch.mm(a, b)
                torch.cuda.synchronize()

            best = _best_time(step, repeats)
            peaks.append({
                "device": "cuda", "dtype": name, "gflops_s": round(2.0 * n ** 3 / best / 1e9, 1),
                "method": f"torch.mm {n}x{n}x{n} {name} on {torch.cuda.get_device_name(0)}, best of {repeats}",
            })
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return peaks


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def best_peaks(first: List[Dict[str, Any]], second: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per device and dtype, the higher of two measurements (both kept in ``measured``)."""
    best: Dict[Any, Dict[str, Any]] = {}
    for peak in first + second:
        key = (peak["device"], peak["dtype"])
        seen = best.get(key)
        measured = (seen["measured"] if seen else []) + [peak["gflops_s"]]
        if seen is None or peak["gflops_s"] > seen["gflops_s"]:
            seen = dict(peak)
        seen["measured"] = measured
        best[key] = seen
    return list(best.values())


def reference_peak(peaks: List[Dict[str, Any]], device: str, precision: str) -> Optional[Dict[str, Any]]:
    """The measured peak a configuration is compared with.

    CPU: the fp32 GEMM for every precision (so INT8 may pass 100%: VNNI does four times the
    fp32 operations per cycle). GPU: the fp16 GEMM for fp16 and int8, the fp32 GEMM for fp32.
    """
    want = "fp32" if device == "cpu" or precision == "fp32" else "fp16"
    for peak in peaks:
        if peak["device"] == device and peak["dtype"] == want:
            return peak
    return None
